"""A damaged or foreign folder is refused, never overwritten.

Each refusal is exit code 2, one line on stderr naming the file and what is wrong, no traceback,
and nothing written or changed: every file's bytes in the folder (and beside it) are the same
afterwards, and no file appeared.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lrlab import cli, folder, runner
from lrlab.errors import LrlabError
from lrlab.export import records
from lrlab.store import DB_NAME, Store

SPEC = {"name": "safety", "data": {"source": "blobs", "n": 200},
        "model": {"input_dim": 2, "hidden": [8], "output_dim": 4, "init": "normal:0.05"},
        "train": {"epochs": 2, "batch_size": 50},
        "sweep": {"lr": [0.3, 0.03], "seeds": 1},
        "run": {"max_members_per_cohort": 1, "probes": False}}
FLAGS = ["--data", "blobs", "--n", "200", "--model", "2-8-4", "--init", "normal:0.05",
         "--epochs", "2", "--batch-size", "50", "--lr", "0.3,0.03", "--seeds", "1",
         "--max-members-per-cohort", "1", "--no-probes", "--quiet", "--name", "safety"]


def _tree(root: Path) -> dict[str, str]:
    """Every file under root with its content hash (what must not change)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def main(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run `lrlab ARGS` through the console entry point; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["lrlab", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def refused(args: list[str], root: Path, monkeypatch, capsys, *needles: str) -> str:
    """Assert `lrlab ARGS` is refused (exit 2, one line with every needle) and that nothing
    under `root` changed; return the line."""
    before = _tree(root)
    code, _, err = main(args, monkeypatch, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("lrlab: error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    assert _tree(root) == before
    return lines[0]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    """A finished two-member experiment (two cohorts) with its report."""
    d = tmp_path_factory.mktemp("healthy") / "exp"
    runner.sweep(SPEC, d)
    return d


@pytest.fixture
def exp(healthy, tmp_path) -> Path:
    """A fresh copy of the healthy experiment, to damage."""
    d = tmp_path / "exp"
    shutil.copytree(healthy, d)
    return d


# ----------------------------------------------------------------------------- damaged stores


def _sql(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path)
    for s in statements:
        con.execute(s)
    con.commit()
    con.close()


def _damage(d: Path, how: str) -> None:
    db = d / DB_NAME
    rng = np.random.default_rng(0)
    if how == "empty":
        db.write_bytes(b"")
    elif how == "garbled":
        db.write_bytes(rng.integers(0, 256, 8192, dtype=np.uint8).tobytes())
    elif how == "text":
        db.write_text("this is not a database, just text\n" * 40)
    elif how == "garbled-pages":  # a valid SQLite header, then noise
        head = db.read_bytes()[:100]
        db.write_bytes(head + rng.integers(0, 256, 16384, dtype=np.uint8).tobytes())
    elif how == "foreign":
        db.unlink()
        _sql(db, "CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)",
             "INSERT INTO moz_places VALUES (1, 'https://example.org')")
    elif how == "foreign-meta":  # another program's `meta` table
        db.unlink()
        _sql(db, "CREATE TABLE meta (k TEXT, v TEXT, extra INTEGER)")
    elif how == "version-99":
        _sql(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    elif how == "no-version":
        _sql(db, "DELETE FROM meta WHERE key = 'schema_version'")
    elif how == "missing-table":
        _sql(db, "DROP TABLE verdicts")
    elif how == "unfinished":  # stopped between creating the tables and writing the meta
        _sql(db, "DELETE FROM meta", "DELETE FROM members")
    elif how == "missing":
        db.unlink()
    elif how == "directory":
        db.unlink()
        db.mkdir()
    assert not list(d.glob(DB_NAME + "-*"))  # no journal beside it: the damage is all there is


DAMAGE = {  # how -> words the one line must hold
    "empty": "is empty (0 bytes)",
    "garbled": "not an SQLite database",
    "text": "not an SQLite database",
    "garbled-pages": "damaged",
    "foreign": "another program",
    "foreign-meta": "another program",
    "version-99": "schema version '99'",
    "no-version": "no store schema version",
    "missing-table": "table(s) verdicts missing",
    "unfinished": "holds no experiment",
    "missing": "no lrlab.sqlite",
    "directory": "is not a file",
}
READERS = [
    ["export", "{d}"], ["export", "{d}", "--format", "csv"], ["explain", "{d}"],
    ["report", "{d}"], ["resume", "{d}", "--quiet"], ["compare", "{d}", "{h}"],
    ["sweep", *FLAGS, "--out", "{d}"],
]


@pytest.mark.parametrize("how", list(DAMAGE))
def test_every_reader_refuses_a_damaged_store_and_writes_nothing(how, exp, healthy,
                                                                 monkeypatch, capsys):
    _damage(exp, how)
    monkeypatch.chdir(exp.parent)  # a default output (compare-A-B, runs/) would land here
    name = str(exp) if how == "missing" else str(exp / DB_NAME)
    for args in READERS:
        if args[0] == "sweep" and how in ("unfinished", "missing"):
            continue  # a sweep completes a store stopped while created; see the next test
        args = [a.format(d=exp, h=healthy) for a in args]
        refused(args, exp.parent, monkeypatch, capsys, repr(name), DAMAGE[how])
    # the Python entry points say the same
    for load in (runner.Result.load, records):
        with pytest.raises(LrlabError, match=re.escape(DAMAGE[how])):
            load(exp)
    if how not in ("unfinished", "missing"):
        with pytest.raises(LrlabError, match=re.escape(DAMAGE[how])):
            runner.sweep(SPEC, exp)
    assert not list(exp.parent.glob("compare-*")) and not (exp.parent / "runs").exists()


def test_a_sweep_into_a_folder_with_results_but_no_store_is_refused(exp, monkeypatch,
                                                                    capsys):
    _damage(exp, "missing")
    refused(["sweep", *FLAGS, "--out", exp], exp.parent, monkeypatch, capsys,
            repr(str(exp)), "is not an lrlab experiment folder")


def test_a_store_stopped_while_created_is_started_again(exp, monkeypatch, capsys):
    _damage(exp, "unfinished")
    code, _, err = main(["sweep", *FLAGS, "--out", exp], monkeypatch, capsys)
    assert code == 0, err
    assert len(records(exp)) == 2


def test_a_missing_folder_is_named(tmp_path, monkeypatch, capsys):
    gone = tmp_path / "nowhere"
    for args in (["export", gone], ["explain", gone], ["report", gone], ["resume", gone]):
        refused(args, tmp_path, monkeypatch, capsys, f"{str(gone)!r}", "does not exist")
    assert not gone.exists()


# ----------------------------------------------------------------------------- read-only


def test_readers_write_nothing_to_a_healthy_store(exp, monkeypatch, capsys):
    """export and explain change no byte and create no file (no -wal/-shm either); report
    rewrites only its own files, never the store."""
    before = _tree(exp.parent)
    for args in (["export", exp], ["export", exp, "--format", "csv"], ["explain", exp]):
        code, out, err = main(args, monkeypatch, capsys)
        assert code == 0 and out, err
        assert _tree(exp.parent) == before
    assert runner.Result.load(exp).spec.name == "safety" and len(records(exp)) == 2
    assert _tree(exp.parent) == before
    code, _, err = main(["report", exp], monkeypatch, capsys)
    assert code == 0, err
    after = _tree(exp.parent)
    assert set(after) == set(before) and after["exp/" + DB_NAME] == before["exp/" + DB_NAME]


def test_a_store_left_in_wal_mode_is_read_without_creating_files(exp, monkeypatch, capsys):
    """A store an earlier lrlab left in WAL mode (no -wal file beside it) is read as it is."""
    con = sqlite3.connect(exp / DB_NAME)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    con.close()
    assert (exp / DB_NAME).read_bytes()[18] == 2 and not (exp / f"{DB_NAME}-wal").exists()
    before = _tree(exp.parent)
    code, out, err = main(["export", exp], monkeypatch, capsys)
    assert code == 0 and len(out.splitlines()) == 2, err
    assert _tree(exp.parent) == before


def test_a_writer_reopens_an_old_store_and_leaves_no_journal(exp):
    """A writer may open a store of the current schema; closing leaves only the file."""
    s = Store.open(exp, write=True)
    s.set_meta(note="x")
    s.close()
    s = Store.open(exp)
    assert s.meta()["note"] == "x"
    s.close()
    assert sorted(p.name for p in exp.glob(DB_NAME + "*")) == [DB_NAME]


# ----------------------------------------------------------------------------- the report


def test_report_is_never_replaced_by_one_from_fewer_members(exp, monkeypatch, capsys):
    assert folder.report_tag(exp / "report.html") == {"kind": "experiment", "members": 2}
    _sql(exp / DB_NAME, "UPDATE members SET status = NULL WHERE id = 1",
         "DELETE FROM metrics WHERE member = 1")
    line = refused(["report", exp], exp.parent, monkeypatch, capsys,
                   repr(str(exp / "report.html")), "built from 2 finished members",
                   "now holds 1")
    assert "not replacing" in line


def test_report_from_as_many_members_replaces_it(exp, monkeypatch, capsys):
    (exp / "report.html").write_text("<html><head><meta name='lrlab-kind' content='experiment'>"
                                     "<meta name='lrlab-members' content='2'></head></html>")
    code, _, err = main(["report", exp], monkeypatch, capsys)
    assert code == 0, err
    assert folder.report_tag(exp / "report.html") == {"kind": "experiment", "members": 2}
    assert "lr_outcome.png" in (exp / "report.html").read_text()


# ----------------------------------------------------------------------------- compare --out


def test_compare_never_writes_over_another_kind_of_result(exp, healthy, tmp_path, monkeypatch,
                                                          capsys):
    # a sweep's folder (store and report)
    refused(["compare", healthy, exp, "--out", exp], tmp_path, monkeypatch, capsys,
            "an experiment folder, one of those compared")
    other = tmp_path / "other"
    shutil.copytree(healthy, other)
    refused(["compare", healthy, exp, "--out", other], tmp_path, monkeypatch, capsys,
            f"--out {str(other)!r} holds a sweep's results", "--overwrite")
    # a sweep's report.html alone (its store moved away), and a range test's folder
    (other / DB_NAME).unlink()
    refused(["compare", healthy, exp, "--out", other], tmp_path, monkeypatch, capsys,
            "holds a sweep's results")
    found = tmp_path / "found"
    found.mkdir()
    (found / "find.json").write_text("{}")
    (found / "report.html").write_text("<html></html>")
    refused(["compare", healthy, exp, "--out", found], tmp_path, monkeypatch, capsys,
            "holds a range test's results")
    # a plain file
    f = tmp_path / "file.txt"
    f.write_text("x")
    refused(["compare", healthy, exp, "--out", f], tmp_path, monkeypatch, capsys,
            "is not a folder")


def test_compare_again_replaces_its_own_report(exp, healthy, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    for _ in range(2):
        code, _, err = main(["compare", healthy, exp, "--out", out], monkeypatch, capsys)
        assert code == 0, err
    assert folder.kind(out) == "compare"
    assert folder.report_tag(out / "report.html") == {"kind": "compare", "members": 4}


def test_compare_overwrite_removes_only_what_lrlab_wrote(exp, healthy, tmp_path, monkeypatch,
                                                         capsys):
    target = tmp_path / "target"
    shutil.copytree(healthy, target)
    (target / "notes.txt").write_text("my notes")
    (target / "sub").mkdir()
    (target / "sub" / "report.html").write_text("mine")
    (target / "plot.png").write_bytes(b"my own figure")
    code, _, err = main(["compare", healthy, exp, "--out", target, "--overwrite"], monkeypatch,
                        capsys)
    assert code == 0, err
    assert (target / "notes.txt").read_text() == "my notes"
    assert (target / "sub" / "report.html").read_text() == "mine"
    assert (target / "plot.png").read_bytes() == b"my own figure"
    assert not (target / DB_NAME).exists() and not (target / "spec.toml").exists()
    assert not (target / "decision_regions.png").exists()  # the sweep's figure, not compare's
    assert folder.kind(target) == "compare"


# ----------------------------------------------------------------------------- --overwrite


def test_own_files_are_the_ones_lrlab_names(healthy):
    own = {p.name for p in folder.own_files(healthy)}
    assert own == {p.name for p in healthy.iterdir()}  # a sweep folder holds only lrlab's files
    assert {"lrlab.sqlite", "spec.toml", "report.html", "lr_outcome.png",
            "lr_outcome.csv", "curves.png", "verdicts.csv"} <= own


def test_sweep_overwrite_keeps_the_users_files(exp, monkeypatch, capsys):
    (exp / "notes.txt").write_text("my notes")
    (exp / "data").mkdir()
    (exp / "data" / "x.csv").write_text("a,b\n1,2\n")
    (exp / "lr_outcome_old.png").write_bytes(b"mine")
    old_db = (exp / DB_NAME).read_bytes()
    flags = [*FLAGS, "--lr", "0.1", "--out", exp, "--overwrite"]  # another experiment
    code, _, err = main(["sweep", *flags], monkeypatch, capsys)
    assert code == 0, err
    assert (exp / "notes.txt").read_text() == "my notes"
    assert (exp / "data" / "x.csv").read_text() == "a,b\n1,2\n"
    assert (exp / "lr_outcome_old.png").read_bytes() == b"mine"
    assert (exp / DB_NAME).read_bytes() != old_db
    assert runner.Result.load(exp).spec.train.lr == 0.1 and len(records(exp)) == 1
    # without --overwrite the same folder is refused for a different experiment
    refused(["sweep", *FLAGS, "--out", exp], exp.parent, monkeypatch, capsys,
            "already holds a different experiment")


def test_overwrite_replaces_a_damaged_store_but_not_a_folder_of_other_files(
        exp, tmp_path, monkeypatch, capsys):
    _damage(exp, "empty")
    code, _, err = main(["sweep", *FLAGS, "--out", exp, "--overwrite"], monkeypatch, capsys)
    assert code == 0, err
    assert len(records(exp)) == 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    refused(["sweep", *FLAGS, "--out", mine, "--overwrite"], tmp_path, monkeypatch, capsys,
            "holds no lrlab result")


def test_overwrite_checks_the_input_before_removing_anything(exp, monkeypatch, capsys):
    refused(["sweep", *FLAGS, "--data", "csv:/does/not/exist.csv", "--out", exp,
             "--overwrite"], exp.parent, monkeypatch, capsys, "does not exist")


def test_overwrite_refuses_a_folder_another_process_writes(exp, healthy, tmp_path,
                                                           monkeypatch, capsys):
    target = tmp_path / "busy"
    shutil.copytree(healthy, target)
    with open(target / folder.LOCK_FILE, "ab") as f:  # as a running sweep holds it
        fcntl.flock(f, fcntl.LOCK_EX)
        refused(["compare", healthy, exp, "--out", target, "--overwrite"], tmp_path,
                monkeypatch, capsys, "is being written by another lrlab process")
        refused(["sweep", *FLAGS, "--lr", "0.1", "--out", target, "--overwrite"], tmp_path,
                monkeypatch, capsys, "is being written by another lrlab process")


def test_recipes_run_overwrite_keeps_the_users_files(exp, monkeypatch, capsys):
    seen = {}

    def fake_sweep(spec, out, **kw):
        seen.update(kw, out=out)
        raise LrlabError("stop here")

    monkeypatch.setattr(runner, "sweep", fake_sweep)
    (exp / "notes.txt").write_text("my notes")
    before = _tree(exp)
    code, _, err = main(["recipes", "run", "blobs-10", "--smoke", "--out", exp, "--overwrite",
                         "--quiet"], monkeypatch, capsys)
    assert code == 2 and "stop here" in err
    assert seen["overwrite"] is True and Path(seen["out"]) == exp
    assert _tree(exp) == before  # the removal is the runner's, after its checks


# ----------------------------------------------------------------------------- the data


def _write_csv(path: Path, n: int = 120, bump: float = 0.0) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, 2))
    y = (X[:, 0] > 0).astype(int)
    X[0, 0] += bump
    path.write_text("x1,x2,label\n" + "".join(f"{a:.6f},{b:.6f},{c}\n"
                                               for (a, b), c in zip(X, y)))


def _csv_flags(source: str, out: Path) -> list[str]:
    return ["--data", source, "--model", "2-4-2", "--epochs", "1", "--batch-size", "40",
            "--lr", "0.1,0.01", "--seeds", "1", "--max-members-per-cohort", "1",
            "--no-probes", "--quiet", "--name", "csvexp", "--out", str(out)]


def test_resume_refuses_changed_data_and_works_from_anywhere(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    _write_csv(work / "d.csv")
    monkeypatch.chdir(work)
    out = tmp_path / "exp"
    first: list[int] = []

    def stop_after_one(cohorts, datasets, spec, progress):
        for res in runner.local_backend(cohorts, datasets, spec, progress):
            first.append(res.index)
            yield res
            raise KeyboardInterrupt

    spec = cli.merge({}, cli.overrides(data="csv:d.csv", model="2-4-2", epochs=1,
                                       batch_size="40", lr="0.1,0.01", seeds=1,
                                       max_members_per_cohort=1, no_probes=True,
                                       name="csvexp"))
    with pytest.raises(runner.Interrupted) as info:
        runner.sweep(spec, out, backend=stop_after_one, report=False)
    assert str(info.value).startswith(f"interrupted: 1 of 2 cohorts (1 of 2 members) are saved "
                                      f"in {out}")
    stored = runner.Result.load(out).spec
    assert stored.data.source == f"csv:{work / 'd.csv'}"  # absolute
    store = Store.open(out)
    meta = store.meta()
    store.close()
    prints = json.loads(meta["data_fingerprint"])
    assert [p["X_train"].split()[:2] for p in prints] == [["96x2", "float32"]]

    # the data changed in between: one value, then one row more
    _write_csv(work / "d.csv", bump=1.0)
    line = refused(["resume", out, "--quiet"], tmp_path, monkeypatch, capsys, "changed",
                   "has the same shape", "but other values")
    assert str(work / "d.csv") in line
    refused(["sweep", *_csv_flags("csv:d.csv", out)], tmp_path, monkeypatch, capsys,
            "changed")
    _write_csv(work / "d.csv", n=121)
    refused(["resume", out, "--quiet"], tmp_path, monkeypatch, capsys, "changed", " was ",
            ", now ")

    # restored: resumed from another working directory, the rest runs
    _write_csv(work / "d.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = main(["resume", out, "--quiet"], monkeypatch, capsys)
    assert code == 0, err
    assert len(records(out)) == 2 and not list(elsewhere.iterdir())


def test_data_fingerprint_names_each_change():
    a = [{"data": "csv:/x.csv", "X_train": "96x2 float32 aa", "y_train": "96 int64 bb",
          "X_val": "24x2 float32 cc", "y_val": "24 int64 dd"}]
    assert folder.data_changes(a, a) is None
    b = [{**a[0], "X_train": "97x2 float32 ee", "y_val": "24 int64 ff"}]
    assert folder.data_changes(a, b) == ("csv:/x.csv: X_train was 96x2 float32, now 97x2 "
                                         "float32; csv:/x.csv: y_val has the same shape "
                                         "(24 int64) but other values")
    assert folder.data_changes(a, a + a) == "the sweep had 1 dataset(s), now 2"


# ----------------------------------------------------------------------------- Ctrl-C


def _finished(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT count(*) FROM members WHERE status IS NOT NULL"
                               ).fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError:  # being created
        return 0


def test_sigint_mid_sweep_says_what_was_kept(tmp_path):
    out = tmp_path / "exp"
    flags = ["--data", "blobs", "--n", "400", "--model", "2-16-16-4", "--epochs", "8",
             "--batch-size", "16", "--lr", "0.6,0.3,0.1,0.03,0.01,0.003", "--seeds", "1",
             "--max-members-per-cohort", "1", "--no-probes", "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", "from lrlab.cli import main; main()",
                             "sweep", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + 120
    while _finished(out / DB_NAME) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGINT)  # the sweep process this test started
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    m = re.fullmatch(r"lrlab: interrupted: (\d) of 6 cohorts \((\d) of 6 members\) are saved "
                     r"in (.+); `lrlab resume (.+)` finishes the run", lines[0])
    assert m, lines[0]
    done = _finished(out / DB_NAME)
    assert 0 < done < 6 and int(m[1]) == int(m[2]) == done
    assert m[3] == str(out) and m[4] == str(out)
    store = Store.open(out)
    assert store.check() == "ok"
    store.close()
