"""The driver: spec -> data -> cohorts -> engine -> store -> verdicts -> report.

- Bad input is found before anything is written (`preflight`): the spec and its member count,
  the folder's path, the device, the data files, the model's shapes against the data, the batch
  sizes, the schedules' lengths and the sweep's memory estimate are all checked, and the Ray
  cluster (for `backend = "ray"`) is reached, before the experiment folder is created.
- The cohort is the unit of work and of commit. Cohorts are fixed when the folder is created
  (by the spec and a memory estimate that depends on the spec and data shapes only, never on
  the machine) and stored; a resume reruns the unfinished cohorts with exactly their stored
  members, on any backend, so the numbers are those of an undisturbed run.
- Each finished cohort is committed in one transaction as its result arrives; an existing folder
  with the same experiment resumes where it stopped, a different one is refused, and so is one
  whose data changed since it started (the store keeps a fingerprint of the data). File paths in
  the spec are stored absolute, so a resume works from any working directory.
- Ctrl-C stops a sweep with `Interrupted`, which says what was kept and how to finish it.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import math
import os
import platform
import resource
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from lrlab import data as data_mod
from lrlab import engine, nets
from lrlab import folder as folders
from lrlab import spec as spec_mod
from lrlab.errors import LrlabError, bad_value
from lrlab.spec import Cohort, Spec
from lrlab.store import DB_NAME, Store

SPEC_FILE = "spec.toml"


def version() -> str:
    from lrlab import __version__

    return __version__


# ----------------------------------------------------------------------------- inputs


def as_spec(spec: Spec | str | Path | Mapping[str, Any]) -> Spec:
    """A Spec from a Spec, a TOML path or a TOML-shaped dict."""
    if isinstance(spec, Spec):
        spec_mod.validate(spec)
        return spec
    if isinstance(spec, (str, Path)):
        return spec_mod.resolve(spec_mod.load_toml(spec))
    if not isinstance(spec, Mapping):
        raise bad_value("spec", type(spec).__name__, "a Spec, a path to a TOML file or a dict "
                        "of tables (data, model, train, run, sweep, phases)")
    return spec_mod.resolve(dict(spec))


def absolute_paths(spec: Spec) -> Spec:
    """The spec with every data file path (csv:PATH, npz:PATH, ...) made absolute, so a stored
    experiment names its files wherever it is resumed from."""
    d = spec_mod.to_dict(spec)
    changed = False
    for table in (d["data"], d["sweep"]):
        src = table.get("source")
        if isinstance(src, str):
            table["source"] = _absolute_source(src)
        elif isinstance(src, list):
            table["source"] = [_absolute_source(x) if isinstance(x, str) else x for x in src]
        changed |= table.get("source") != src
    return spec_mod.resolve(d) if changed else spec


def _absolute_source(source: str) -> str:
    prefix, sep, rest = source.partition(":")
    if not sep or not rest or prefix not in spec_mod.FILE_PREFIXES:
        return source
    return f"{prefix}:{os.path.abspath(os.path.expanduser(rest))}"


def preflight(s: Spec, out: str | Path | None = None
              ) -> tuple[Path, dict[spec_mod.DataSpec, data_mod.Dataset]]:
    """Every check that needs no folder, cheapest first: the folder's path, the device, the
    size of the synthetic data, then the data (loaded and checked against the model) and the
    sweep's memory estimate. Returns the folder's path and the data; writes nothing."""
    directory = check_out(out if out is not None else default_out(s))
    check_device(s.run.device)
    check_data_size(s)
    datasets = load_data(s)
    check_memory(s, datasets)
    return directory, datasets


def default_out(s: Spec) -> Path:
    """The folder of an experiment given no --out: runs/NAME (NAME checked to stay inside)."""
    spec_mod.check_folder_name(s.name)
    return Path("runs") / s.name


def check_device(device: str) -> None:
    """`cuda` needs a CUDA device this process can use (checked before anything is loaded)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise bad_value("[run].device", "cuda", "cpu on this machine (no CUDA device found)")


def check_out(out: Any) -> Path:
    """`--out` as a Path a folder can be created at: refused when a component is too long, a
    file stands in the way, or the nearest existing folder is not writable. Writes nothing."""
    if not isinstance(out, (str, Path)) or not str(out) or "\0" in str(out):
        raise bad_value("--out", out if isinstance(out, str) else type(out).__name__,
                        "a folder path")
    path = Path(out)
    long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        raise bad_value("--out", str(out), f"a path whose every name has at most {NAME_MAX} "
                        f"bytes (one has {len(os.fsencode(long[0]))})")
    if len(os.fsencode(str(path.absolute()))) >= PATH_MAX:
        raise bad_value("--out", str(out), f"a path shorter than {PATH_MAX} bytes")
    try:
        parent = path.absolute()
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if path.exists():
            if not path.is_dir():
                raise bad_value("--out", str(out), "a folder (it is an existing file)")
            parent = path
        elif not parent.is_dir():
            raise bad_value("--out", str(out), f"a path under a folder ({str(parent)!r} is a "
                            "file)")
        if not os.access(parent, os.W_OK | os.X_OK) or _read_only_mount(parent):
            raise OSError(errno.EACCES, "not writable")
        os.rmdir(tempfile.mkdtemp(prefix=".lrlab-probe-", dir=parent))  # what mkdir will do
    except OSError as exc:
        raise bad_value("--out", str(out), f"a path lrlab can create a folder at ({str(parent)!r}"
                        f" is not writable: {exc.strerror or exc})") from None
    return path


NAME_MAX, PATH_MAX = 255, 4096
"""The longest file name and path (bytes) Linux and macOS file systems take."""


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def load_data(spec: Spec) -> dict[spec_mod.DataSpec, data_mod.Dataset]:
    """Every distinct dataset of the sweep, loaded and checked against the model."""
    out: dict[spec_mod.DataSpec, data_mod.Dataset] = {}
    for m in spec_mod.members(spec):
        if m.data not in out:
            out[m.data] = data_mod.load(m.data)
        check_shapes(m, out[m.data])
    return out


def check_shapes(m: spec_mod.Member, ds: data_mod.Dataset) -> None:
    """The model's declared sizes, the output kind and the batch size must fit the data."""
    d_in = ds.X_train.shape[1]
    if m.model.input_dim is not None and m.model.input_dim != d_in:
        raise LrlabError(f"`[model].input_dim` is {m.model.input_dim} but the data "
                         f"{ds.name!r} has {d_in} input features")
    want = nets.output_dim(m.model.output, ds.n_classes)
    if m.model.output_dim is not None and m.model.output_dim != want:
        raise LrlabError(
            f"`[model].output_dim` is {m.model.output_dim} but the data {ds.name!r} has "
            f"{ds.n_classes} classes, which needs {want} output unit(s) with output "
            f"{m.model.output!r}")
    n = ds.X_train.shape[0]
    for t in (m.train, *m.phases):
        if t.batch_size > n:
            raise LrlabError(f"`[train].batch_size` is {t.batch_size} but the training set of "
                             f"{ds.name!r} has only {n} samples; use at most {n} (0 = full batch)")
        _check_schedule_length(t, n)
    nets.layer_inits(m.model, len(m.model.hidden) + 1)


def steps_per_epoch(batch_size: int, n: int) -> int:
    """Minibatches per epoch (the last may be partial; 0 or >= n is one full batch)."""
    return 1 if batch_size <= 0 or batch_size >= n else math.ceil(n / batch_size)


def _check_schedule_length(t: spec_mod.TrainSpec, n: int) -> None:
    """What a schedule needs of the run's length (warmup shorter than the run, ...)."""
    from lrlab import schedules

    schedules.check_args(t.schedule, dict(t.schedule_args), epochs=t.epochs,
                         steps_per_epoch=steps_per_epoch(t.batch_size, n))


# ----------------------------------------------------------------------------- results


@dataclass
class Result:
    """A finished (or partly finished) experiment, read from its folder."""

    directory: Path
    spec: Spec

    @classmethod
    def load(cls, directory: str | Path) -> Result:
        """Read a finished or interrupted experiment (LrlabError for anything that is not a
        complete lrlab store); reads only, writes nothing."""
        d = Path(directory)
        store = Store.open(d)
        try:
            text = store.meta()["spec_json"]
        finally:
            store.close()
        try:
            spec = spec_mod.resolve(json.loads(text))
        except ValueError as exc:  # json's errors, and LrlabError, are ValueErrors
            raise LrlabError(f"{str(store.path)!r}: the stored spec cannot be read ({exc})"
                             ) from None
        return cls(d, spec)

    def records(self) -> list[dict[str, Any]]:
        """One export record per member (see `lrlab export`)."""
        from lrlab.export import records

        return records(self.directory)

    def to_pandas(self) -> Any:
        """One row per member per epoch: swept values, status, verdict and metrics."""
        import pandas as pd

        rows = []
        for r in self.records():
            hist = r["history"]
            for i, ep in enumerate(hist["epoch"]):
                row = {"member_id": r["id"], **r["member"], "status": r["status"],
                       "verdict": r["verdict"]["label"] if r["verdict"] else None, "epoch": ep}
                # the lr actually applied (per epoch) must not shadow the swept lr
                row.update({("lr_applied" if k == "lr" else k): v[i]
                            for k, v in hist.items() if k != "epoch"})
                rows.append(row)
        return pd.DataFrame(rows)

    @property
    def report_path(self) -> Path:
        return self.directory / "report.html"


# ----------------------------------------------------------------------------- running


@dataclass
class CohortResult:
    """One finished cohort as a backend returns it: its members' runs and where it ran."""

    index: int
    runs: list[engine.MemberRun]
    peak_rss_mb: float | None = None  # peak resident memory of the process while it ran
    worker: str = ""  # host:pid, or ray:NODE_ID:pid


Progress = Callable[[int], None]
Backend = Callable[[Sequence[Cohort], Mapping[Any, data_mod.Dataset], Spec, Progress | None],
                   Iterator[CohortResult]]
"""Runs cohorts and yields each one's result as it finishes (any order). The driver commits
each result to the store before asking for the next, so whatever was yielded is never lost."""


def run_cohort(cohort: Cohort, dataset: data_mod.Dataset, spec: Spec,
               progress: Progress | None = None,
               hooks: Sequence[engine.EpochHook] | None = None) -> CohortResult:
    """Train one cohort in this process (what every backend runs, wherever it runs)."""
    hooks = default_hooks(spec) if hooks is None else hooks
    with threads_for(cohort, dataset, spec.run.threads), PeakRss() as rss:
        runs = engine.run_cohort(cohort, dataset, spec.run, hooks, progress)
    return CohortResult(cohort.index, runs, rss.mb, f"{socket.gethostname()}:{os.getpid()}")


def local_backend(cohorts: Sequence[Cohort], datasets: Mapping[Any, data_mod.Dataset],
                  spec: Spec, progress: Progress | None) -> Iterator[CohortResult]:
    """Run cohorts one after another in this process."""
    hooks = default_hooks(spec)
    for c in cohorts:
        yield run_cohort(c, datasets[c.first.data], spec, progress, hooks)


class PeakRss:
    """The peak resident memory (MB) of this process while the block ran.

    `resource.getrusage().ru_maxrss` is the process's lifetime peak: when it rose during the
    block, that new peak is this block's. Otherwise (an earlier cohort in the same process went
    higher) a sampler thread's maximum of the current RSS (every 10 ms) stands in for it.
    """

    INTERVAL = 0.01

    def __enter__(self) -> PeakRss:
        self.mb: float | None = None
        self._start = _maxrss_mb()
        self._sampled = _rss_mb() or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="lrlab-rss", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sampled = max(self._sampled, _rss_mb() or 0.0)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        end = _maxrss_mb()
        self._sampled = max(self._sampled, _rss_mb() or 0.0)
        self.mb = round(end if end > self._start else self._sampled, 1)


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


SMALL_STEP_MACS = 2_000_000
"""Below this many multiply-adds per cohort step, one thread is as fast as two and immune to a
busy neighbour (measured: a 2-thread small-op loop slowed 10-40x under contention)."""


@contextmanager
def threads_for(c: Cohort, ds: data_mod.Dataset, threads: int) -> Iterator[None]:
    """Use `threads` torch threads (0 = one for small cohorts, torch's default otherwise)."""
    m = c.first
    arch = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes)
    batch = m.train.batch_size or ds.X_train.shape[0]
    macs = len(c.members) * min(batch, ds.X_train.shape[0]) * arch.n_params()
    want = threads or (1 if macs < SMALL_STEP_MACS else torch.get_num_threads())
    before = torch.get_num_threads()
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_hooks(spec: Spec) -> list[engine.EpochHook]:
    """The probe hooks a sweep records when `[run].probes` is on."""
    if not spec.run.probes:
        return []
    try:
        from lrlab import probes
    except ImportError:
        return []
    return probes.hooks(spec)


def _meta(spec: Spec, command: str | None, cohort_size: int,
          data_print: list[dict[str, Any]] | None = None) -> dict[str, str]:
    return {
        "spec_json": json.dumps(spec_mod.to_dict(spec)),
        "spec_fingerprint": folders.spec_fingerprint(identity(spec)),
        "data_fingerprint": json.dumps(data_print or []),
        "spec_toml": spec_mod.to_toml(spec),
        "name": spec.name,
        "command": command or "",
        "lrlab_version": version(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": spec.run.device,
        "backend": spec.run.backend,
        "cohort_size": str(cohort_size),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# ----------------------------------------------------------------------------- the folder

LOCK_FILE = folders.LOCK_FILE
RUN_ONLY_KEYS = ("backend", "address", "threads", "max_members_per_cohort", "max_members",
                 "max_memory_gb")
"""`[run]` keys that say where and how a sweep runs but not what it computes: an existing
folder resumes under other values of these (its cohorts are stored, so a different cap on the
cohort size does not regroup them)."""


def identity(spec: Spec) -> dict[str, Any]:
    """What makes two specs the same experiment: everything but RUN_ONLY_KEYS."""
    d = spec_mod.to_dict(spec)
    d["run"] = {k: v for k, v in d["run"].items() if k not in RUN_ONLY_KEYS}
    return d


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping) and k != "schedule_args":
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


def _differences(stored: Mapping[str, Any], new: Mapping[str, Any], limit: int = 3) -> str:
    a, b = _flat(stored), _flat(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    shown = [f"{k}: {json.dumps(a.get(k))} there, {json.dumps(b.get(k))} now" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return "; ".join(shown) + more


def _stored_spec(out: Path) -> dict[str, Any] | None:
    """The spec stored in `out`'s database; None when the folder's creation never completed.
    LrlabError when the database is damaged or not an lrlab store."""
    store = Store.open(out, complete=False)
    try:
        text = store.meta().get("spec_json")
    finally:
        store.close()
    return None if text is None else json.loads(text)


def check_folder(out: Path, spec: Spec, overwrite: bool = False) -> bool:
    """True when `out` already holds this experiment (resume); False when it is new or empty.

    Raises LrlabError for a folder that holds a different experiment, a damaged store or
    something else. With `overwrite`, any lrlab result may be replaced (False), but a folder
    with none is still refused. Reads only.
    """
    if overwrite:
        if out.exists() and (not out.is_dir() or (folders.kind(out) is None and any(
                p.name != LOCK_FILE for p in out.iterdir()))):
            raise LrlabError(f"--out {str(out)!r} exists and holds no lrlab result for "
                             "--overwrite to replace; choose another path")
        return False
    if (out / DB_NAME).exists():
        stored = _stored_spec(out)
        if stored is None:  # killed while creating: meta and members are written together
            return False
        try:  # (stored by an older lrlab with relative paths: relative to here)
            same = identity(absolute_paths(spec_mod.resolve(stored))) == identity(spec)
        except LrlabError:  # written by an lrlab whose spec keys differ
            same = False
        if not same:
            raise LrlabError(
                f"--out {str(out)!r} already holds a different experiment ("
                f"{_differences(_without_run_only(stored), identity(spec))}); choose another "
                f"--out, add --overwrite to replace it, or `lrlab resume {out}` to finish it "
                "as it was")
        return True
    if out.exists() and (not out.is_dir() or any(p.name != LOCK_FILE for p in out.iterdir())):
        raise LrlabError(f"--out {str(out)!r} exists and is not an lrlab experiment folder; "
                         "choose another path")
    return False


def check_data(out: Path, data_print: list[dict[str, Any]]) -> None:
    """Refuse (LrlabError) to continue an experiment whose data differ from the data it started
    with (a fingerprint stored when it was created; stores without one are not checked)."""
    store = Store.open(out)
    try:
        text = store.meta().get("data_fingerprint")
    finally:
        store.close()
    try:
        stored = json.loads(text) if text else None
    except ValueError:
        stored = None
    if not stored:
        return
    changes = folders.data_changes(stored, data_print)
    if changes:
        raise LrlabError(
            f"the data of {str(out)!r} changed since its sweep started ({changes}); a resume "
            "must use the data it started with: restore the data, or choose another --out "
            "(or --overwrite) to start afresh")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: what was kept, in one line (str), and how to finish it."""

    def __init__(self, directory: Path, cohorts: tuple[int, int] | None = None,
                 members: tuple[int, int] | None = None) -> None:
        super().__init__(directory)
        self.directory, self.cohorts, self.members = directory, cohorts, members

    def __str__(self) -> str:
        if self.cohorts is None or self.members is None:
            return "interrupted before any result was stored; nothing was kept"
        (c, ct), (m, mt) = self.cohorts, self.members
        return (f"interrupted: {c} of {ct} cohorts ({m} of {mt} members) are saved in "
                f"{self.directory}; `lrlab resume {shlex.quote(str(self.directory))}` finishes "
                "the run")


def _stopped(directory: Path, created: bool) -> Interrupted:
    """The Interrupted to raise on Ctrl-C (a folder this call created and stored nothing in is
    removed)."""
    counts = saved_counts(directory)
    if counts is None:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        return Interrupted(directory)
    return Interrupted(directory, *counts)


def saved_counts(directory: Path) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((finished cohorts, cohorts), (finished members, members)) stored in `directory`;
    None when it holds no complete store."""
    try:
        store = Store.open(directory)
    except LrlabError:
        return None
    try:
        rows = store.members()
    finally:
        store.close()
    cohorts: dict[int, bool] = {}
    for r in rows:
        cohorts[r["cohort"]] = cohorts.get(r["cohort"], True) and r["status"] is not None
    done = sum(r["status"] is not None for r in rows)
    return (sum(cohorts.values()), len(cohorts)), (done, len(rows))


def _without_run_only(d: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(d)
    out["run"] = {k: v for k, v in d.get("run", {}).items() if k not in RUN_ONLY_KEYS}
    return out


@contextmanager
def _folder_lock(directory: Path) -> Iterator[None]:
    """One writer per experiment folder (an flock, released by the OS if the process dies)."""
    f: BinaryIO = open(directory / LOCK_FILE, "ab")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LrlabError(f"{str(directory)!r} is being written by another lrlab process; "
                             "wait for it to finish (or stop it, then `lrlab resume`)") from None
        yield
    finally:
        f.close()


# ----------------------------------------------------------------------------- the sweep


def sweep(
    spec: Spec | str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    backend: Backend | None = None,
    command: str | None = None,
    report: bool = True,
    overwrite: bool = False,
    select: str | None = None,
) -> Result:
    """Run a sweep and write its folder (store, spec, verdicts, report). Returns the Result.

    An existing folder holding the same experiment on the same data is resumed: only its
    unfinished cohorts run. `overwrite` replaces whatever lrlab result the folder holds (only
    lrlab's own files are removed, after the input was checked). `select` (`val_loss` |
    `val_acc`) overrides the spec's `[run].select`: what the recommended lr is chosen by.
    `progress(done, total)` is called as member-epochs finish. Bad input raises LrlabError
    before anything is written; a failure while running leaves every finished cohort stored;
    Ctrl-C raises `Interrupted`.
    """
    s = absolute_paths(as_spec(spec))
    if select is not None:
        if select not in spec_mod.SELECT:
            raise LrlabError(f"`select` must be one of {', '.join(spec_mod.SELECT)}; "
                             f"got {select!r}")
        s = dataclasses.replace(s, run=dataclasses.replace(s.run, select=select))
    directory, datasets = preflight(s, out)
    if backend is None and s.run.backend == "ray":  # fail fast: Ray missing, a bad address
        from lrlab import distributed

        distributed.check_address(s.run.address)
        distributed.require_ray(local=s.run.address is None)
    data_print = folders.data_fingerprint(datasets)
    resuming = check_folder(directory, s, overwrite)
    if resuming:
        check_data(directory, data_print)
    with _backend_session(s, backend) as run:  # reaches a Ray cluster before writing anything
        created = not directory.exists()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # (check_out probed it; a race or an odd file system)
            raise bad_value("--out", str(directory), "a folder lrlab can create "
                            f"({exc.strerror or exc})") from None
        try:
            with _folder_lock(directory):  # (another writer: LrlabError, and its folder stays)
                if overwrite:
                    folders.remove_own(directory, keep=(LOCK_FILE,))
                try:
                    _run(s, datasets, directory, resuming, run, progress, command, data_print)
                except LrlabError:
                    if created:  # bad input found late: leave nothing behind
                        shutil.rmtree(directory, ignore_errors=True)
                    raise
        except KeyboardInterrupt as exc:
            raise _stopped(directory, created) from exc
    if report:
        from lrlab import report as report_mod

        try:
            report_mod.build(directory)
        except KeyboardInterrupt as exc:
            raise _stopped(directory, False) from exc
    return Result(directory, s)


def _run(s: Spec, datasets: Mapping[Any, data_mod.Dataset], directory: Path, resuming: bool,
         backend: Backend, progress: Callable[[int, int], None] | None,
         command: str | None, data_print: list[dict[str, Any]] | None = None) -> None:
    if resuming:
        store = Store.open(directory, write=True)
        cohorts = stored_cohorts(s, store.cohort_of())
    else:
        size = s.run.max_members_per_cohort or auto_chunk(s, datasets)
        cohorts = spec_mod.cohorts(s, size)
        store = Store.create(directory, _meta(s, command, size, data_print),
                             [(m.index, c.index, m.swept) for c in cohorts for m in c.members])
    try:
        store.set_meta(**{data_mod.CLASS_COUNTS_KEY: data_mod.class_counts_meta(datasets)})
        _write_spec_file(directory, store)
        done_ids = store.finished_ids()
        todo = [c for c in cohorts if not all(m.index in done_ids for m in c.members)]
        total = sum(_member_epochs(m) for c in todo for m in c.members)
        count = [0]

        def tick(k: int) -> None:
            count[0] += k
            if progress:
                progress(count[0], total)

        t0 = time.perf_counter()
        for res in backend(todo, datasets, s, tick):
            store.commit_runs(res.runs, peak_rss_mb=res.peak_rss_mb, worker=res.worker)
        seconds = time.perf_counter() - t0 + float(store.meta().get("train_seconds", 0) or 0)
        store.set_meta(finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                       train_seconds=f"{seconds:.3f}")
        finish(store, s, datasets)
    finally:
        store.close()


def _write_spec_file(directory: Path, store: Store) -> None:
    """spec.toml beside the store, as stored (written once, atomically)."""
    path = directory / SPEC_FILE
    if path.is_file():
        return
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(store.meta()["spec_toml"], encoding="utf-8")
    os.replace(tmp, path)


def stored_cohorts(s: Spec, cohort_of: Mapping[int, int]) -> list[Cohort]:
    """The cohorts as they were fixed when the folder was created (member order kept)."""
    groups: dict[int, list[spec_mod.Member]] = {}
    for m in spec_mod.members(s):
        if m.index not in cohort_of:
            raise LrlabError(f"the stored experiment has no member {m.index}; its database does "
                             "not match its spec")
        groups.setdefault(cohort_of[m.index], []).append(m)
    return [Cohort(i, tuple(groups[i])) for i in sorted(groups)]


@contextmanager
def _backend_session(s: Spec, backend: Backend | None) -> Iterator[Backend]:
    if backend is not None:
        yield backend
    elif s.run.backend == "ray":
        from lrlab import distributed

        with distributed.session(s.run.address) as ray_backend:
            yield ray_backend
    else:
        yield local_backend


def _member_epochs(m: spec_mod.Member) -> int:
    return m.train.epochs + sum(p.epochs for p in m.phases)


# ----------------------------------------------------------------------------- chunking

MEMORY_BUDGET = 1 * 2**30
"""Bytes one cohort may use (an estimate, see `cohort_bytes`). A constant on purpose: the split
must depend on the spec and the data's shapes only, never on the machine it runs on, so that a
cohort keeps its members (and its numbers) wherever and whenever it runs."""
RECORD_BYTES_PER_METRIC = 120
"""One member's value of one metric at one epoch, Python-side: a float in a list, and its row
when the cohort is committed (measured: ~5 KB per member-epoch with the ~33 probe metrics)."""
RECORD_BYTES_PER_STEP = 40
"""The per-step lr record of one member: a float in a list, then its JSON text."""
METRICS = (10, 40)
"""Metrics recorded per epoch without and with probes (an upper bound of what is recorded)."""


def cohort_bytes(m: spec_mod.Member, ds: data_mod.Dataset, k: int, itemsize: int = 4,
                 probes: bool = True) -> int:
    """An estimate of the peak memory of a cohort of `k` members like `m` on this data.

    Per member: parameter-shaped tensors (weights, gradients, updates, two optimizer states,
    the previous weights for probes, the final numpy copy), a training batch's activations
    forward and backward, the epoch's order, one evaluation's losses, and the Python-side
    records (per epoch and metric, per step). Shared: the gathered epoch samples (the engine
    gathers a whole epoch only up to `engine.GATHER_BYTES`) and the evaluation's chunk of
    activations (the engine caps a chunk near 2**22 values per layer).
    """
    arch = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes)
    n, d = ds.X_train.shape
    n_all = n + ds.X_val.shape[0]
    params = 8 * arch.n_params() * itemsize
    batch = n if m.train.batch_size <= 0 else min(m.train.batch_size, n)
    acts = 6 * batch * sum(arch.sizes) * itemsize
    order = 8 * n
    evaluation = 2 * n_all * itemsize
    epochs = 1 + _member_epochs(m)
    steps = sum(t.epochs * steps_per_epoch(t.batch_size, n) for t in (m.train, *m.phases))
    records = (epochs * METRICS[probes] * RECORD_BYTES_PER_METRIC
               + steps * RECORD_BYTES_PER_STEP)
    per_member = params + acts + order + evaluation + records
    whole_epoch = k * n * d * itemsize
    gathered = whole_epoch + k * n * 8 if whole_epoch <= engine.GATHER_BYTES else 0
    rows = min(n_all, max(1, (1 << 22) // (k * max(arch.sizes))))
    eval_chunk = 3 * k * rows * sum(arch.sizes[1:]) * itemsize
    return k * per_member + gathered + eval_chunk


def auto_chunk(s: Spec, datasets: Mapping[Any, data_mod.Dataset],
               budget: int = MEMORY_BUDGET) -> int:
    """The largest cohort size whose estimate fits `budget` for every cohort (at least 1)."""
    itemsize = 8 if s.run.dtype == "float64" else 4
    groups: dict[tuple[Any, ...], list[spec_mod.Member]] = {}
    for m in spec_mod.members(s):
        groups.setdefault(spec_mod.cohort_key(m), []).append(m)
    size = max(len(g) for g in groups.values())
    for g in groups.values():
        m, ds = g[0], datasets[g[0].data]
        lo, hi = 1, min(size, len(g))  # largest k in [1, hi] that fits (the estimate grows with k)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if cohort_bytes(m, ds, mid, itemsize, s.run.probes) <= budget:
                lo = mid
            else:
                hi = mid - 1
        if lo < len(g):
            size = min(size, lo)
    return size


_auto_chunk = auto_chunk  # the old private name


def check_data_size(s: Spec) -> None:
    """Synthetic sets are generated in float64: refuse one too large before generating it."""
    for d in {m.data for m in spec_mod.members(s)}:
        if d.source in spec_mod.SYNTHETIC:
            d_in = d.features if d.source == "blobs" else 2
            spec_mod.check_memory(3 * d.n * d_in * 8, f"generating {d.source} with {d.n} "
                                  f"samples x {d_in} features", s.run)


def memory_estimate(s: Spec, datasets: Mapping[Any, data_mod.Dataset]) -> tuple[int, str]:
    """The peak memory of the sweep (bytes) and what dominates it, from shapes alone.

    Cohorts run one at a time, so the peak is the largest cohort (`cohort_bytes`, at the size
    it will be split to) on top of the data, every member's bookkeeping and the per-epoch
    records of every member (the verdicts read them all at the end).
    """
    itemsize = 8 if s.run.dtype == "float64" else 4
    size = s.run.max_members_per_cohort or auto_chunk(s, datasets)
    groups: dict[tuple[Any, ...], list[spec_mod.Member]] = {}
    for m in spec_mod.members(s):
        groups.setdefault(spec_mod.cohort_key(m), []).append(m)
    data = sum(a.nbytes for ds in datasets.values()
               for a in (ds.X_train, ds.y_train, ds.X_val, ds.y_val))
    records = 0
    peak, peak_m, peak_k = 0, None, 0
    for g in groups.values():
        m, ds = g[0], datasets[g[0].data]
        k = min(size, len(g))
        b = cohort_bytes(m, ds, k, itemsize, s.run.probes)
        if b > peak:
            peak, peak_m, peak_k = b, m, k
        n = ds.X_train.shape[0]
        steps = sum(t.epochs * steps_per_epoch(t.batch_size, n) for t in (m.train, *m.phases))
        records += len(g) * ((1 + _member_epochs(m)) * METRICS[s.run.probes]
                             * RECORD_BYTES_PER_METRIC + steps * RECORD_BYTES_PER_STEP)
    count = spec_mod.member_count(s)
    total = data + count * spec_mod.MEMBER_BYTES + records + peak
    what = "data"
    if peak_m is not None:
        what = (f"the largest cohort, {peak_k} member(s) with hidden layers "
                f"{list(peak_m.model.hidden)}: {peak / 2**30:.3g} GB; per-epoch records: "
                f"{records / 2**30:.3g} GB; data: {data / 2**30:.3g} GB")
    return total, what


def check_memory(s: Spec, datasets: Mapping[Any, data_mod.Dataset]) -> None:
    """Refuse a sweep whose memory estimate exceeds `[run].max_memory_gb` (or the machine's)."""
    total, what = memory_estimate(s, datasets)
    spec_mod.check_memory(total, what, s.run)


def finish(store: Store, s: Spec, datasets: Mapping[Any, data_mod.Dataset]) -> None:
    """Judge every finished member and store the verdicts and the recommendation."""
    from lrlab import verdicts as v_mod

    views = run_views(store, s, datasets)
    verdicts = v_mod.judge_all(views)
    store.write_verdicts(verdicts)
    recs = recommendations(views, verdicts, s.run.select)
    store.set_meta(recommendation=json.dumps(recs))


def run_views(store: Store, s: Spec, datasets: Mapping[Any, data_mod.Dataset] | None = None
              ) -> list[Any]:
    from lrlab.verdicts import RunView

    hists = store.histories()
    members = {m.index: m for m in spec_mod.members(s)}
    views = []
    for row in store.members():
        if row["status"] is None:
            continue
        m = members[row["id"]]
        ds = (datasets or {}).get(m.data)
        views.append(RunView(row["id"], row["swept"], row["status"], row["diverged_epoch"],
                             hists.get(row["id"], {}), ds.n_classes if ds else 0,
                             member_setup(m)))
    return views


def member_setup(m: spec_mod.Member) -> dict[str, Any]:
    """The resolved settings a verdict may cite (verdicts.RunView.setup)."""
    init = m.model.init if isinstance(m.model.init, str) else ",".join(m.model.init)
    return {"activation": m.model.activation, "output": m.model.output, "init": init,
            "init_scale": m.model.init_scale, "hidden": list(m.model.hidden),
            "optimizer": m.train.optimizer, "momentum": m.train.momentum,
            "nesterov": m.train.nesterov, "beta1": m.train.beta1,
            "batch_size": m.train.batch_size,
            "epochs": m.train.epochs,
            "phases": [{"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size}
                       for t in (m.train, *m.phases)]}


def group_key(swept: Mapping[str, Any], drop: Sequence[str] = ("lr", "seed")) -> str:
    """A label for the members that differ only in the dropped axes (e.g. 'preprocess=none')."""
    parts = [f"{k}={_fmt(v)}" for k, v in swept.items() if k not in drop]
    return ", ".join(parts) or "all"


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "-".join(map(str, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def recommendations(views: Sequence[Any], verdicts: Mapping[int, Any],
                    select: str = "val_loss") -> list[dict[str, Any]]:
    """One recommendation per group of runs that differ only in lr and seed, chosen by
    `select` (`val_loss` or `val_acc`). `lr_range` is the widest of `lr_ranges` (the runs of
    consecutive lrs where every seed converged); `best_by` holds the best lr by loss and by
    accuracy, `disagree` whether they differ."""
    from lrlab.verdicts import recommend

    groups: dict[str, list[Any]] = {}
    for v in views:
        groups.setdefault(group_key(v.swept), []).append(v)
    out = []
    for key, vs in groups.items():
        r = recommend(vs, dict(verdicts), select)
        out.append({"group": key, "best_lr": r.best_lr, "lr_range": r.lr_range,
                    "lr_ranges": [list(x) for x in r.lr_ranges], "select": select,
                    "best_by": r.best_by, "disagree": r.disagree,
                    "metric": r.metric, "at_edge": r.at_edge, "text": r.text,
                    "converged_share": {f"{lr:g}": x for lr, x in r.converged_share.items()},
                    "learned_share": {f"{lr:g}": x for lr, x in r.learned_share.items()}})
    return out


def python_info() -> str:
    return f"Python {sys.version.split()[0]}, torch {torch.__version__}"
