"""Cohorts as Ray tasks: the same cohorts as a local run, on a Ray cluster.

`session(address)` connects (a local Ray instance when `address` is None, else the cluster at
`address`) and yields a `runner.Backend`. The driver puts each distinct dataset in Ray's object
store once, submits one task per cohort, and yields each result as it arrives; the runner
commits it to the store before asking for the next, so a finished cohort is never lost. Workers
never read the user's files: the driver loaded and checked the data.

- Retries: a task whose worker dies (killed, out of memory, a node lost) is retried up to
  MAX_RETRIES times. A retried cohort starts again from its seeds, so its numbers are those of
  an undisturbed run. A Python exception in a task is not retried (it would fail again): the
  other cohorts still finish and are stored, then the sweep fails, and `lrlab resume` reruns
  only the failed ones.
- The numbers are a local run's: a task runs `runner.run_cohort`, the cohort composition comes
  from the spec, and a worker uses one torch thread per CPU Ray gives it (as a local run does
  for small cohorts). Bit-identity needs the same CPU kind and torch build on every node.
- Quiet: Ray prints worker deaths and retries on the driver's stdout even with
  `log_to_driver=False`; while Ray runs, this module sends stdout (Python's and file
  descriptor 1) to stderr, so `lrlab ... > file` gets only lrlab's output.
- A local instance (no address) is always a new one (`ray.init(address="local")`: a bare
  `ray.init()` would join whatever cluster `/tmp/ray/ray_current_cluster` or RAY_ADDRESS names,
  even a dead one) and stays on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set before Ray
  is imported): nothing listens on other interfaces.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from lrlab.errors import LrlabError

INSTALL_HINT = "pip install 'lrlab[ray]'"
MAX_RETRIES = 3
CONNECT_TIMEOUT = 5.0
"""Seconds to wait for the cluster's address to accept a connection before saying it does not
(`ray.init` itself retries an unreachable address for minutes)."""

_QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report (and no message about it)
}
_ADDRESS_RE = re.compile(r"^(ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def available() -> bool:
    """True when Ray can be imported."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def check_address(address: str | None) -> tuple[str, int] | None:
    """(host, port) of `HOST:PORT` or `ray://HOST:PORT`; None for a local instance or `auto`.

    Raises LrlabError for anything else, naming the flag and what is allowed.
    """
    if address is None or address == "auto":
        return None
    m = _ADDRESS_RE.match(address.strip())
    if not m or not 1 <= int(m.group(3)) <= 65535:
        raise LrlabError(f"`--address` must be HOST:PORT of a Ray cluster's head (e.g. "
                         f"10.0.0.5:6379, as `ray start --head` prints it), ray://HOST:PORT or "
                         f"auto; got {address!r}")
    return m.group(2).strip("[]"), int(m.group(3))


def require_ray(local: bool) -> Any:
    """Import Ray (LrlabError with the install line when it is missing)."""
    if local and "ray" not in sys.modules:  # read by Ray at import: one node on 127.0.0.1
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    for k, v in _QUIET_ENV.items():
        os.environ.setdefault(k, v)
    try:
        import ray
    except ImportError:
        raise LrlabError(f"`--backend ray` needs Ray, which is not installed; install it with: "
                         f"{INSTALL_HINT}") from None
    return ray


def _reachable(host: str, port: int, address: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise LrlabError(
            f"`--address` {address!r}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one with `ray start --head --port=PORT` on the head node, or leave out "
            "--address for a local Ray instance") from None


@contextmanager
def session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to Ray and yield the backend; disconnect (stopping what we started) at the end.

    Reuses a Ray connection that is already open in this process (a notebook's `ray.init()`,
    a test's fixture) and leaves it open. All connection errors are LrlabError, raised before
    the sweep writes anything.
    """
    hostport = check_address(address)
    ray = require_ray(local=address is None)
    started = False
    if not ray.is_initialized():
        if hostport is not None and not address.startswith("ray://"):
            _reachable(*hostport, address)
        kwargs: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False)
        if address is None:  # "local": a new instance, never a cluster found on the machine
            kwargs.update(address="local", num_cpus=num_cpus, include_dashboard=False)
        else:
            kwargs["address"] = address
        with stdout_to_stderr():
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                where = f"`--address` {address!r}" if address else "a local Ray instance"
                raise LrlabError(f"{where}: Ray could not start or connect ({first}); check "
                                 "RAY_AUTH_MODE is the same as the cluster's") from None
        started = True
    try:
        yield RayBackend(ray)
    finally:
        if started:
            with stdout_to_stderr():
                ray.shutdown()


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send stdout to stderr, at the file-descriptor level and in Python, for the block."""
    sys.stdout.flush()
    saved_fd = None
    try:
        saved_fd = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no file descriptor 1 (an embedded interpreter): Python level only
        saved_fd = None
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved
        if saved_fd is not None:
            sys.stderr.flush()
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


class RayBackend:
    """A `runner.Backend` that runs each cohort as a Ray task (see the module docstring)."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray

    def __call__(self, cohorts: Sequence[Any], datasets: Mapping[Any, Any], spec: Any,
                 progress: Any = None) -> Iterator[Any]:
        ray = self.ray
        if not cohorts:
            return
        task = _remote(ray)
        with stdout_to_stderr():
            refs = {key: ray.put(datasets[key]) for key in {c.first.data for c in cohorts}}
            pending = {task.remote(c, refs[c.first.data], spec,
                                   numerics(c, datasets[c.first.data], spec)): c
                       for c in cohorts}
            failed: list[tuple[Any, BaseException]] = []
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    cohort = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        failed.append((cohort, exc))
                        continue
                    if progress:
                        progress(sum(_member_epochs(m) for m in cohort.members))
                    yield result
        if failed:
            cohort, exc = failed[0]
            cause = getattr(exc, "cause", None) or exc
            raise RuntimeError(
                f"{len(failed)} of {len(cohorts)} cohorts failed on Ray (cohort {cohort.index}: "
                f"{type(cause).__name__}: {_first_line(cause)}); the others are stored, and "
                "`lrlab resume DIR` reruns the failed ones") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _member_epochs(m: Any) -> int:
    return m.train.epochs + sum(p.epochs for p in m.phases)


def numerics(cohort: Any, dataset: Any, spec: Any) -> dict[str, str]:
    """What decides a cohort's rounding besides its members: lrlab and torch versions, and
    whether the engine takes the torch path or the compiled kernel; for the kernel, which
    source, which compiler (its version line) and which flags built it."""
    import torch

    import lrlab
    from lrlab import nets

    out = {"lrlab": lrlab.__version__, "torch": torch.__version__, "path": "torch"}
    m = cohort.first
    arch = nets.arch_for(m.model, dataset.X_train.shape[1], dataset.n_classes)
    dtype = torch.float64 if spec.run.dtype == "float64" else torch.float32
    if nets.kernel_for(arch, spec.run.device, dtype) is not None:
        build = nets.kernel_build or {}
        out["path"] = f"compiled kernel {build.get('source', '?')}"
        out["compiler"] = build.get("compiler", "?")
        out["flags"] = build.get("flags", "?")
    return out


def run_cohort_task(cohort: Any, dataset: Any, spec: Any, driver: dict[str, str]) -> Any:
    """The Ray task: train one cohort on this worker (lives in the package: Ray pickles it by
    reference, so every node needs the same lrlab installed).

    Refuses (not retried) to run where the numbers would differ from the driver's local run:
    another lrlab or torch version, the other compute path (no C compiler on this node), or a
    kernel built by another compiler or with other flags.
    """
    from lrlab import runner

    here = numerics(cohort, dataset, spec)
    if here != driver:
        diff = ", ".join(f"{k} {here.get(k)!r} here but {driver.get(k)!r} on the driver"
                         for k in sorted({*driver, *here}) if here.get(k) != driver.get(k))
        raise RuntimeError(f"this node would not reproduce the driver's numbers ({diff}); "
                           "install the same lrlab and torch (and the same C compiler, or "
                           "set LRLAB_KERNEL=0 everywhere) on every node")
    result = runner.run_cohort(cohort, dataset, spec)
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - outside a Ray worker
        node = socket.gethostname()
    result.worker = f"ray:{node}:{os.getpid()}"
    return result


_REMOTE: dict[int, Any] = {}


def _remote(ray: Any) -> Any:
    """`run_cohort_task` as a Ray remote function (made once per Ray module)."""
    key = id(ray)
    if key not in _REMOTE:
        _REMOTE[key] = ray.remote(num_cpus=1, max_retries=MAX_RETRIES,
                                  scheduling_strategy="SPREAD")(run_cohort_task)
    return _REMOTE[key]
