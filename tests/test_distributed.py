"""Cohorts as Ray tasks: the same numbers as a local run, on one node or two, through a worker
killed mid-task; the Ray instance and cluster stay on loopback and are stopped by pid.

One Ray instance for the whole module (about 5 s to start); the two-node cluster is its own.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# Read by Ray at import: a local instance and test clusters stay on 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from lrlab import cli, runner  # noqa: E402
from lrlab.export import records  # noqa: E402
from lrlab.store import Store  # noqa: E402

# 24 members (3 lrs x 8 seeds) in 4 cohorts of 6: enough tasks for two nodes and a retry.
FLAGS = ["--data", "blobs", "--n", "300", "--model", "2-8-8-4", "--init", "normal:0.05",
         "--lr", "0.5,0.1,0.01", "--seeds", "8", "--epochs", "12", "--batch-size", "32",
         "--max-members-per-cohort", "6", "--no-probes", "--quiet"]
SPEC = {"name": "ray24", "data": {"source": "blobs", "n": 300},
        "model": {"input_dim": 2, "hidden": [8, 8], "output_dim": 4, "init": "normal:0.05"},
        "train": {"epochs": 12, "batch_size": 32},
        "sweep": {"lr": [0.5, 0.1, 0.01], "seeds": 8},
        "run": {"max_members_per_cohort": 6, "probes": False}}
N_MEMBERS = 24


SOCKET_MAX = 107  # AF_UNIX path bytes on Linux, as Ray checks them
SOCKET_TAIL = len("/session_2026-12-04_17-58-14_113118_1234567/sockets/plasma_store")


@pytest.fixture(scope="module")
def ray_tmp() -> Path:
    """Ray's folder of this test session: $RAY_TMPDIR/ray, inside pytest's temp folder
    (tests/conftest.py). Ray writes its sessions, logs, sockets and the address file of a
    test cluster (`ray_current_cluster`) there and nowhere else."""
    d = Path(os.environ["RAY_TMPDIR"]) / "ray"
    if len(str(d)) + SOCKET_TAIL > SOCKET_MAX:
        pytest.fail(f"Ray's socket paths under {d} would exceed {SOCKET_MAX} bytes (AF_UNIX); "
                    "run the tests with a shorter TMPDIR (e.g. TMPDIR=$(mktemp -d /tmp/lrXXXXXX))")
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="module")
def ray_local(ray_tmp):
    """One local Ray instance on loopback for this module (stopped at its end)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False, object_store_memory=200 * 2**20, _temp_dir=str(ray_tmp))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The same sweep run locally in this process: records and final weights."""
    d = tmp_path_factory.mktemp("local") / "exp"
    runner.sweep(SPEC, d, report=False)
    return _snapshot(d)


def _snapshot(d: Path) -> dict:
    """Per member: swept values, status, full history and final weights (bit-exact)."""
    recs = {r["id"]: (r["member"], r["status"], r["diverged_epoch"], r["history"], r["final"],
                      r["verdict"]) for r in records(d)}
    store = Store.open(d)
    try:
        weights = {i: [w.tobytes() for w in store.weights(i)] for i in recs}
    finally:
        store.close()
    return {"records": recs, "weights": weights}


def _workers(d: Path) -> dict[int, str]:
    store = Store.open(d)
    try:
        return {m["id"]: m["worker"] for m in store.members()}
    finally:
        store.close()


def _pids(node) -> list[int]:
    return [p.process.pid for procs in node.all_processes.values() for p in procs]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_two_nodes_on_loopback_through_address(local_reference, ray_tmp, tmp_path):
    """A head and a second node (both on 127.0.0.1), a `lrlab sweep --address` in another
    process: both nodes run cohorts, the store equals the local run, both nodes are stopped by
    pid (never `ray stop`)."""
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    address_file = Path(get_ray_address_file(None))  # the cluster records its address here
    assert address_file.parent == ray_tmp  # this session's folder, never /tmp/ray
    node_args = {"num_cpus": 1, "object_store_memory": 100 * 2**20, "temp_dir": str(ray_tmp)}
    cluster = Cluster(initialize_head=True, connect=False, shutdown_at_exit=False,
                      head_node_args={**node_args, "include_dashboard": False})
    nodes = [cluster.head_node]
    try:
        nodes.append(cluster.add_node(**node_args))
        cluster.wait_for_nodes()
        out = tmp_path / "two"
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "RAY_AUTH_MODE": "disabled"}
        res = subprocess.run([sys.executable, "-m", "lrlab.cli", "sweep", *FLAGS, "--name",
                              "ray24", "--backend", "ray", "--address", cluster.address,
                              "--out", str(out)], capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "A worker died" not in res.stdout and "(raylet)" not in res.stdout
        assert _snapshot(out) == local_reference
        ran_on = {w.split(":")[1] for w in _workers(out).values()}
        assert ran_on == {n.node_id for n in nodes}  # both nodes ran cohorts
        worker_pids = {int(w.split(":")[2]) for w in _workers(out).values()}
    finally:
        pids = [p for n in nodes for p in _pids(n)]
        for node in reversed(nodes):  # kills each node's processes by pid
            cluster.remove_node(node, allow_graceful=True)
        address_file.unlink(missing_ok=True)  # names a cluster that is gone
    assert pids
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in [*pids, *worker_pids]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in [*pids, *worker_pids] if _alive(p)]


def test_ray_sweep_equals_local_member_for_member(ray_local, local_reference, tmp_path):
    out = tmp_path / "ray"
    res = CliRunner().invoke(cli.app, ["sweep", *FLAGS, "--name", "ray24", "--backend", "ray",
                                       "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = _snapshot(out)
    assert len(got["records"]) == N_MEMBERS
    assert got == local_reference  # histories, verdicts and weights bit-identical
    workers = _workers(out)
    assert all(w.startswith("ray:") for w in workers.values())  # it really ran as Ray tasks
    store = Store.open(out)
    try:  # each cohort's peak RSS is stored with its members (a process with torch: > 50 MB)
        assert all(m["peak_rss_mb"] and m["peak_rss_mb"] > 50 for m in store.members())
        assert store.meta()["backend"] == "ray"
    finally:
        store.close()
    assert "report:" in res.stdout  # the summary came after Ray, on stdout


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_worker_killed_mid_task_is_retried_and_nothing_is_lost(ray_local, tmp_path, capfd):
    """SIGKILL a worker while it runs a cohort: Ray retries the task and the sweep completes
    with every member present and equal to an undisturbed run."""
    long = {**SPEC, "train": {**SPEC["train"], "epochs": 150}}  # tasks long enough to catch
    runner.sweep(long, tmp_path / "undisturbed", report=False)
    out = tmp_path / "fault"
    spec = {**long, "run": {**SPEC["run"], "backend": "ray"}}
    outcome: dict = {}

    def drive() -> None:
        try:
            runner.sweep(spec, out, report=False)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    t = threading.Thread(target=drive)
    t.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and t.is_alive() and time.monotonic() < deadline:
        for pid in _descendants(os.getpid()):  # only processes this test's Ray started
            if _cmdline(pid).startswith(b"ray::run_cohort_task"):
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.01)
    t.join(timeout=300)
    assert not t.is_alive()
    assert killed is not None, "no task was caught running"
    assert "error" not in outcome, outcome.get("error")
    assert "worker died" not in capfd.readouterr().out  # Ray's news of it went to stderr
    got = _snapshot(out)
    assert len(got["records"]) == N_MEMBERS
    assert got == _snapshot(tmp_path / "undisturbed")


def test_local_sweep_interrupted_then_resumed_on_ray(ray_local, local_reference, tmp_path):
    """A sweep stopped after two of its four cohorts locally, finished by `lrlab resume
    --backend ray`: the same cohorts, the same numbers, each cohort run where it was run."""
    out = tmp_path / "mixed"
    ran: list[int] = []

    def two_then_stop(cohorts, datasets, spec, progress):
        for res in runner.local_backend(cohorts, datasets, spec, progress):
            ran.append(res.index)
            yield res
            if len(ran) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.sweep(SPEC, out, backend=two_then_stop, report=False)
    res = CliRunner().invoke(cli.app, ["resume", str(out), "--backend", "ray", "--quiet"])
    assert res.exit_code == 0, res.output
    assert _snapshot(out) == local_reference
    store = Store.open(out)
    try:
        where = {m["cohort"]: m["worker"].startswith("ray:") for m in store.members()}
    finally:
        store.close()
    assert where == {0: False, 1: False, 2: True, 3: True}


def test_a_node_that_would_compute_differently_fails_its_cohort_only(ray_local,
                                                                     local_reference, tmp_path,
                                                                     monkeypatch):
    """A cohort sent to a worker whose numerics differ from the driver's (here: the driver
    claims another torch for cohort 1) fails, loudly and without retries; the other cohorts are
    stored, and a resume reruns only that one."""
    from lrlab import distributed

    real = distributed.numerics

    def claims(cohort, dataset, spec):
        out = real(cohort, dataset, spec)
        return {**out, "torch": "0.0-other"} if cohort.index == 1 else out

    monkeypatch.setattr(distributed, "numerics", claims)
    out = tmp_path / "mismatch"
    spec = {**SPEC, "run": {**SPEC["run"], "backend": "ray"}}
    with pytest.raises(RuntimeError, match=r"1 of 4 cohorts failed on Ray \(cohort 1: .*torch"):
        runner.sweep(spec, out, report=False)
    store = Store.open(out)
    try:
        assert {m["cohort"] for m in store.members() if m["status"]} == {0, 2, 3}
    finally:
        store.close()
    monkeypatch.setattr(distributed, "numerics", real)
    res = CliRunner().invoke(cli.app, ["resume", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert _snapshot(out) == local_reference


def test_numerics_name_the_kernel_compiler_and_flags():
    """The same-numbers check carries the compiler's version line and the flags of the kernel
    in use, and a node whose kernel was built by another compiler or with other flags refuses
    its cohort, naming the difference (checked without Ray: the task's own function)."""
    import subprocess as sp

    from lrlab import data, distributed, nets, spec
    from lrlab.spec import Cohort

    s = spec.resolve(SPEC)
    ms = spec.members(s)
    cohort, ds = Cohort(0, tuple(ms[:2])), data.load(ms[0].data)
    if nets.kernel_lib() is None:
        pytest.skip(f"no kernel: {nets.kernel_error}")
    here = distributed.numerics(cohort, ds, s)
    cc = os.environ.get("CC") or "cc"
    version = sp.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    assert here["compiler"].split()[-1] == version.split()[-1]  # e.g. 12.2.0
    assert here["compiler"] in ("gcc " + version.split(" ", 1)[1], version)
    extra = os.environ.get("LRLAB_KERNEL_CFLAGS", "").split()
    assert here["flags"] == " ".join([*nets.KERNEL_FLAGS[0], *extra])
    assert here["path"] == "compiled kernel " + nets.kernel_build["source"]
    for key, other in (("compiler", "clang version 99.0.0"), ("flags", "-O3 -ffast-math")):
        with pytest.raises(RuntimeError, match=re.escape(f"{key} {here[key]!r} here but "
                                                         f"{other!r} on the driver")):
            distributed.run_cohort_task(cohort, ds, s, {**here, key: other})
