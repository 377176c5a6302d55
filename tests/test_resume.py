"""Never lose a result: a sweep killed with SIGKILL leaves a clean store that `lrlab resume`
completes to exactly an uninterrupted run's export; a sweep started again runs only its
unfinished cohorts; concurrent writers and readers neither fail nor corrupt anything; cohorts
are sized by a memory estimate.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrlab import cli, runner
from lrlab import spec as spec_mod
from lrlab.export import records, to_jsonl
from lrlab.store import DB_NAME, Store

# 12 members in 6 cohorts of 2: a crash lands between commits, with several cohorts to go.
EPOCHS = 15
FLAGS = ["--data", "blobs", "--n", "400", "--model", "2-16-16-4", "--init", "normal:0.05",
         "--lr", "0.6,0.3,0.1,0.03,0.01,0.003", "--seeds", "2", "--epochs", str(EPOCHS),
         "--batch-size", "16", "--max-members-per-cohort", "2", "--no-probes", "--quiet",
         "--name", "resume12"]
SPEC = {"name": "resume12", "data": {"source": "blobs", "n": 400},
        "model": {"input_dim": 2, "hidden": [16, 16], "output_dim": 4, "init": "normal:0.05"},
        "train": {"epochs": EPOCHS, "batch_size": 16},
        "sweep": {"lr": [0.6, 0.3, 0.1, 0.03, 0.01, 0.003], "seeds": 2},
        "run": {"max_members_per_cohort": 2, "probes": False}}
N, N_COHORTS = 12, 6


def _export(d: Path) -> list[dict]:
    """The export without what may differ between two runs of the same spec (wall time and
    memory, where a cohort ran)."""
    out = []
    for line in to_jsonl(d).splitlines():
        r = json.loads(line)
        r.pop("seconds", None)
        r.pop("peak_rss_mb", None)
        r.pop("worker", None)
        out.append(r)
    return out


def _weights(d: Path) -> dict[int, list[bytes]]:
    store = Store.open(d)
    try:
        return {m["id"]: [w.tobytes() for w in store.weights(m["id"]) or []]
                for m in store.members()}
    finally:
        store.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run, in this process."""
    d = tmp_path_factory.mktemp("ref") / "exp"
    runner.sweep(SPEC, d, report=False)
    return {"export": _export(d), "weights": _weights(d)}


def _finished(d: Path) -> int:
    """Finished members, read as any other process would (read-only, no schema changes)."""
    if not (d / DB_NAME).is_file():
        return 0
    try:
        conn = sqlite3.connect(f"file:{d / DB_NAME}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute("SELECT count(*) FROM members WHERE status IS NOT NULL"
                                ).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the schema is being created
        return 0


def _sweep_process(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lrlab.cli", "sweep", *FLAGS, "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_sigkill_mid_run_then_resume_equals_uninterrupted(reference, tmp_path):
    out = tmp_path / "exp"
    proc = _sweep_process(out)
    deadline = time.monotonic() + 240
    while _finished(out) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # the sweep process this test started
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = _finished(out)
    assert 0 < done < N and done % 2 == 0  # whole cohorts only, and some still to run

    store = Store.open(out)  # opens cleanly; nothing half-written
    try:
        assert store.check() == "ok"
        rows = store.members()
        assert len(rows) == N and sum(r["status"] is not None for r in rows) == done
        for h in store.histories().values():  # only finished members have metrics
            assert len(h["epoch"]) == EPOCHS + 1
    finally:
        store.close()

    res = CliRunner().invoke(cli.app, ["resume", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert _export(out) == reference["export"]
    assert _weights(out) == reference["weights"]
    assert (out / "spec.toml").is_file() and (out / "report.html").is_file()


def _interrupt_after(n: int, ran: list[int]):
    """A backend that runs cohorts locally and is interrupted after `n` of them were stored."""
    def backend(cohorts, datasets, spec, progress):
        for res in runner.local_backend(cohorts, datasets, spec, progress):
            ran.append(res.index)
            yield res
            if len(ran) == n:
                raise KeyboardInterrupt

    return backend


def test_sweep_again_runs_only_unfinished_cohorts_as_they_were(reference, tmp_path):
    """Started again (even with another cohort cap), a sweep reruns only the unfinished
    cohorts, with the members they were given when the folder was created."""
    out = tmp_path / "exp"
    first: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        runner.sweep(SPEC, out, backend=_interrupt_after(2, first), report=False)
    assert first == [0, 1]

    again: list[int] = []
    other_cap = {**SPEC, "run": {**SPEC["run"], "max_members_per_cohort": 5}}
    runner.sweep(other_cap, out, backend=_interrupt_after(99, again), report=False)
    assert again == [2, 3, 4, 5]
    assert _export(out) == reference["export"]
    assert _weights(out) == reference["weights"]

    rerun: list[int] = []  # a finished experiment: nothing to run
    runner.sweep(SPEC, out, backend=_interrupt_after(99, rerun), report=False)
    assert rerun == []


def test_failure_in_a_cohort_keeps_the_finished_ones(tmp_path):
    """A backend that fails after one cohort: exit is an exception, the stored cohort stays
    and resume needs to run only the rest."""
    out = tmp_path / "exp"

    def broken(cohorts, datasets, spec, progress):
        it = runner.local_backend(cohorts, datasets, spec, progress)
        yield next(it)
        raise RuntimeError("node lost")

    with pytest.raises(RuntimeError, match="node lost"):
        runner.sweep(SPEC, out, backend=broken, report=False)
    assert _finished(out) == 2 and (out / "spec.toml").is_file()


def test_two_sweeps_at_once_and_readers_while_writing(reference, tmp_path):
    """Two processes write two experiments at once while this one reads the first (records
    and `lrlab report`): no error, a reader never sees a half-written member, and both
    experiments end equal to the uninterrupted run."""
    from lrlab import report as report_mod

    a, b = tmp_path / "a", tmp_path / "b"
    procs = [_sweep_process(a), _sweep_process(b)]
    reads = reports = 0
    partial = False
    deadline = time.monotonic() + 240
    while procs[0].poll() is None and time.monotonic() < deadline:
        if _finished(a) == 0:
            time.sleep(0.005)
            continue
        recs = records(a)
        reads += 1
        assert all(len(r["history"]["train_loss"]) == EPOCHS + 1 for r in recs)
        partial |= 0 < len(recs) < N
        if partial and reports == 0:
            report_mod.build(a)  # `lrlab report` on an experiment still being written
            reports += 1
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
    assert reads > 0 and partial and reports == 1
    for d in (a, b):
        store = Store.open(d)
        try:
            assert store.check() == "ok"
        finally:
            store.close()
        assert _export(d) == reference["export"]


# ----------------------------------------------------------------------------- chunking


def test_memory_estimate_splits_big_cohorts_and_keeps_small_ones_whole():
    # 1,000 blobs members (2 preprocess groups of 500): small nets, each group one cohort
    blobs = spec_mod.resolve({"data": {"source": "blobs"}, "model": {"hidden": [10, 10, 10, 10]},
                              "train": {"epochs": 200, "batch_size": 64},
                              "sweep": {"lr": [0.5, 0.4, 0.1, 0.01, 0.001],
                                        "preprocess": ["none", "standardize"], "seeds": 100}})
    ds = runner.load_data(blobs)
    size = runner.auto_chunk(blobs, ds)
    assert size >= 500 and len(spec_mod.cohorts(blobs, size)) == 2  # one per preprocess
    m = spec_mod.members(blobs)[0]
    assert runner.cohort_bytes(m, ds[m.data], 500) < runner.MEMORY_BUDGET

    # a tighter budget splits the same sweep: each cohort fits, one more member would not
    budget = 64 * 2**20
    size = runner.auto_chunk(blobs, ds, budget)
    assert 1 < size < 1000
    assert runner.cohort_bytes(m, ds[m.data], size) <= budget < runner.cohort_bytes(
        m, ds[m.data], size + 1)
    assert all(len(c.members) <= size for c in spec_mod.cohorts(blobs, size))
    # the per-step record is counted: batch 1 (800 steps an epoch) needs far more per member
    one = spec_mod.resolve({**_doc(blobs), "train": {"epochs": 200, "batch_size": 1}})
    m1 = spec_mod.members(one)[0]
    assert runner.cohort_bytes(m1, ds[m1.data], 1) > 200 * 800 * 32
    assert runner.auto_chunk(one, ds, budget) < size


def _doc(s: spec_mod.Spec) -> dict:
    d = spec_mod.to_dict(s)
    d["sweep"] = {k: v for k, v in d["sweep"].items()}
    return d


def test_cohort_cap_flag_overrides_the_estimate(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "run_sweep", lambda spec, *a: seen.setdefault("spec", spec))
    res = CliRunner().invoke(cli.app, ["sweep", *FLAGS])
    assert res.exit_code == 0, res.output
    s = seen["spec"]
    assert s.run.max_members_per_cohort == 2
    assert [len(c.members) for c in spec_mod.cohorts(s, s.run.max_members_per_cohort)] == [2] * 6


def test_peak_memory_per_cohort_is_measured():
    import numpy as np

    before = runner._rss_mb()
    with runner.PeakRss() as rss:
        a = np.ones(40 * 2**20 // 8)  # 40 MB touched inside the block, held for 100 ms
        time.sleep(0.1)
        del a
    assert before is not None and rss.mb is not None
    assert rss.mb >= before + 35
