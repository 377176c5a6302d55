"""Bad input everywhere a user types or points: one line on stderr naming what is wrong, exit
code 2, and nothing left behind (no experiment folder, no partial file, no data file changed).

Each case runs the real entry point (`lrlab.cli.main`) in this process, so the whole table
costs about as much as one sweep.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrlab import cli, runner
from lrlab.store import DB_NAME

SRC = Path(__file__).resolve().parents[1] / "src" / "lrlab"
BASE = ["--epochs", "2", "--quiet", "--no-probes"]


class _Evil:
    """Unpickling this would create the marker file (what a crafted pickle could do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_data(d: Path) -> None:
    """Small data files, good and bad (features x0, x1; the label column last)."""
    d.mkdir()
    rows = [f"{i % 7 * 0.1:.1f},{i % 5 * 0.2:.1f},{'ab'[i % 2]}" for i in range(40)]
    (d / "good.csv").write_text("x0,x1,label\n" + "\n".join(rows) + "\n")
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text("x0,x1,label\n")
    (d / "text.csv").write_text("x0,x1,label\n0.1,abc,a\n0.2,0.3,b\n")
    (d / "nan.csv").write_text("x0,x1,label\n0.1,nan,a\n0.2,0.3,b\n")
    (d / "inf.csv").write_text("x0,x1,label\n0.1,inf,a\n0.2,0.3,b\n")
    (d / "gap.csv").write_text("x0,x1,label\n0.1,,a\n0.2,0.3,b\n")
    (d / "oneclass.csv").write_text("x0,x1,label\n0.1,0.2,a\n0.2,0.3,a\n0.4,0.1,a\n")
    (d / "ragged.csv").write_text("x0,x1,label\n0.1,0.2,a,9,9\n0.2,0.3,b\n")
    (d / "labelonly.csv").write_text("label\na\nb\n")
    np.savez(d / "wrong.npz", a=np.zeros((4, 2)), b=np.zeros(4))
    np.savez(d / "nan.npz", X=np.array([[0.0, np.nan], [1.0, 2.0]]), y=np.array([0, 1]))
    np.savez(d / "short.npz", X=np.zeros((4, 2)), y=np.array([0, 1]))
    (d / "fake.npz").write_text("not a zip file")
    with gzip.open(d / "evil.pkl.gz", "wb") as f:
        pickle.dump(_Evil(str(d.parent / "PWNED")), f)
    (d / "spec_bad.toml").write_text("name = [unclosed\n")
    (d / "other").mkdir()
    (d / "other" / "notes.txt").write_text("not an experiment")


# (id, arguments, a needle the one line must contain). {d} is the data folder.
CASES = [
    # -- spec keys and values (TOML)
    ("spec-missing", ["sweep", "{d}/nope.toml"], "does not exist"),
    ("spec-not-toml", ["sweep", "{d}/spec_bad.toml"], "not valid TOML"),
    ("spec-unknown-top", ["sweep", "{d}/t_top.toml"], "`learning_rate` is not a known top-level"),
    ("spec-unknown-train", ["sweep", "{d}/t_key.toml"], "`[train].learnin_rate` is not a known"),
    ("spec-lr-negative", ["sweep", "{d}/t_lrneg.toml"], "`[train].lr` must be a number in (0.0"),
    ("spec-lr-nan", ["sweep", "{d}/t_lrnan.toml"], "`[train].lr` must be a number"),
    ("spec-sweep-empty", ["sweep", "{d}/t_axis0.toml"], "`[sweep].lr` must be a non-empty list"),
    ("spec-sweep-text", ["sweep", "{d}/t_axisx.toml"], "`[sweep].lr` must be a number"),
    ("spec-not-sweepable", ["sweep", "{d}/t_nosweep.toml"], "`[sweep].name` cannot be swept"),
    ("spec-hidden-zero", ["sweep", "{d}/t_hidden.toml"], "`[model].hidden` must be a list of"),
    ("spec-val-split-1", ["sweep", "{d}/t_split.toml"], "`[data].validation_split` must be"),
    ("spec-backend", ["sweep", "{d}/t_backend.toml"], "`[run].backend` must be one of local"),
    # -- CLI flags
    ("flag-lr-negative", ["sweep", "--lr", "-1"], "`[train].lr` must be a number in (0.0"),
    ("flag-lr-zero", ["sweep", "--lr", "0,0.1"], "`[sweep].lr` must be a number in (0.0"),
    ("flag-lr-nan", ["sweep", "--lr", "nan"], "`[train].lr` must be a number in (0.0"),
    ("flag-lr-text", ["sweep", "--lr", "fast"], "`--lr` must be a number"),
    ("flag-logspace", ["sweep", "--lr", "logspace:0:1:5"], "`--lr` must be logspace:LO:HI:N"),
    ("flag-epochs-0", ["sweep", "--epochs", "0"], "`[train].epochs` must be an integer in [1"),
    ("flag-epochs-text", ["sweep", "--epochs", "many"], "Invalid value for '--epochs'"),
    ("flag-unknown", ["sweep", "--learning-rate", "0.1"], "No such option: --learning-rate"),
    ("flag-command", ["swep"], "No such command 'swep'"),
    ("flag-seeds-0", ["sweep", "--seeds", "0"], "`seeds` must be a count >= 1"),
    ("flag-optimizer", ["sweep", "--optimizer", "lion"], "`[train].optimizer` must be one of"),
    ("flag-activation", ["sweep", "--activation", "swish"], "`[model].activation` must be one"),
    ("flag-init", ["sweep", "--init", "normal:-2"], "`[model].init` must be one of"),
    ("flag-schedule", ["sweep", "--schedule", "zigzag"], "`[train].schedule` must be one of"),
    ("flag-schedule-arg", ["sweep", "--schedule-arg", "gamma"], "`--schedule-arg` must be KEY="),
    ("flag-warmup-too-long", ["sweep", "--schedule", "cosine", "--warmup", "5"],
     "`[train].schedule_args.warmup` must be fewer epochs than the run's 2"),
    ("flag-preprocess", ["sweep", "--preprocess", "whiten"], "`[data].preprocess` must be one"),
    ("flag-model-text", ["sweep", "--model", "2-x-4"], "`--model` must be layer sizes"),
    ("flag-address-local", ["sweep", "--address", "10.1.2.3:6379"],
     "`[run].address` needs `[run].backend = \"ray\"`"),
    ("flag-address-bad", ["sweep", "--backend", "ray", "--address", "head-node"],
     "`--address` must be HOST:PORT"),
    ("flag-address-port", ["sweep", "--backend", "ray", "--address", "h:99999"],
     "`--address` must be HOST:PORT"),
    ("flag-address-down", ["sweep", "--backend", "ray", "--address", "127.0.0.1:9"],
     "no Ray cluster answers there"),
    ("flag-format", ["export", "{d}", "--format", "xml"], "`--format` must be json or csv"),
    # -- model shapes against the data, batch size against the data
    ("shape-input", ["sweep", "--model", "3-10-4"], "`[model].input_dim` is 3 but the data"),
    ("shape-output", ["sweep", "--model", "2-10-3"],
     "`[model].output_dim` is 3 but the data 'blobs' has 4 classes"),
    ("shape-csv-classes", ["sweep", "--data", "csv:{d}/good.csv", "--model", "2-8-1"],
     "has 2 classes, which needs 2 output unit(s)"),
    ("shape-init-layers", ["sweep", "{d}/t_inits.toml"],
     "`[model].init` lists 3 initializers but the network has 2 layers"),
    ("batch-too-big", ["sweep", "--batch-size", "100000"],
     "`[train].batch_size` is 100000 but the training set of 'blobs' has only 800"),
    # -- data files
    ("data-unknown", ["sweep", "--data", "nope"], "`[data].source` must be a built-in set"),
    ("data-missing", ["sweep", "--data", "csv:{d}/missing.csv"], "does not exist"),
    ("data-empty", ["sweep", "--data", "csv:{d}/empty.csv"], "is empty"),
    ("data-header-only", ["sweep", "--data", "csv:{d}/header.csv"], "has no data rows"),
    ("data-non-numeric", ["sweep", "--data", "csv:{d}/text.csv"],
     "feature column 'x1' is not numeric (data row 1 holds 'abc')"),
    ("data-nan", ["sweep", "--data", "csv:{d}/nan.csv"], "hold NaN, Inf or empty feature values"),
    ("data-inf", ["sweep", "--data", "csv:{d}/inf.csv"], "hold NaN, Inf or empty feature values"),
    ("data-gap", ["sweep", "--data", "csv:{d}/gap.csv"], "hold NaN, Inf or empty feature values"),
    ("data-ragged", ["sweep", "--data", "csv:{d}/ragged.csv"],
     "data row 1 (line 2) has 5 field(s) but the header has 3"),
    ("data-label-column", ["sweep", "--data", "csv:{d}/good.csv", "--label-column", "y"],
     "`[data].label_column` must be a column of"),
    ("data-label-only", ["sweep", "--data", "csv:{d}/labelonly.csv"],
     "has only the label column 'label'"),
    ("data-one-class", ["sweep", "--data", "csv:{d}/oneclass.csv"],
     "the labels hold only one class ('a')"),
    ("data-npz-arrays", ["sweep", "--data", "npz:{d}/wrong.npz"], "has arrays a, b"),
    ("data-npz-nan", ["sweep", "--data", "npz:{d}/nan.npz"], "hold NaN, Inf or empty"),
    ("data-npz-labels", ["sweep", "--data", "npz:{d}/short.npz"], "array y has shape (2,)"),
    ("data-not-npz", ["sweep", "--data", "npz:{d}/fake.npz"], "is not an .npz (zip) file"),
    ("data-evil-pickle", ["sweep", "--data", "mnist:{d}/evil.pkl.gz"],
     "cannot be read as mnist.pkl.gz"),
    ("data-folder-not-idx", ["sweep", "--data", "mnist:{d}/other"],
     "has no train-images-idx3-ubyte"),
    # -- experiment folders
    ("out-not-experiment", ["sweep", "--out", "{d}/other"],
     "exists and is not an lrlab experiment folder"),
    ("resume-nothing", ["resume", "{d}/other"], "holds no lrlab experiment"),
    ("resume-not-sqlite", ["resume", "{d}/fakeexp"], "is not a readable lrlab database"),
    ("report-nothing", ["report", "{d}/other"], "holds no lrlab experiment"),
]

TOML = {
    "t_top.toml": "learning_rate = 0.1\n",
    "t_key.toml": "[train]\nlearnin_rate = 0.1\n",
    "t_lrneg.toml": "[train]\nlr = -0.1\n",
    "t_lrnan.toml": "[train]\nlr = nan\n",
    "t_axis0.toml": "[sweep]\nlr = []\n",
    "t_axisx.toml": "[sweep]\nlr = [0.1, \"x\"]\n",
    "t_nosweep.toml": "[sweep]\nname = [\"a\", \"b\"]\n",
    "t_hidden.toml": "[model]\nhidden = [10, 0]\n",
    "t_split.toml": "[data]\nvalidation_split = 1.0\n",
    "t_backend.toml": "[run]\nbackend = \"spark\"\n",
    "t_inits.toml": "[model]\nhidden = [8]\ninit = [\"keras\", \"keras\", \"keras\"]\n",
}


def _tree(root: Path) -> dict[str, str]:
    """Every file under root with its content hash (what must not change)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def datadir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    d = root / "data"
    _write_data(d)
    for name, text in TOML.items():
        (d / name).write_text(text)
    (d / "fakeexp").mkdir()
    (d / "fakeexp" / DB_NAME).write_text("this is not a database, just text " * 40)
    return d


def main(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run `lrlab ARGS` through the console entry point; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["lrlab", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def test_at_least_30_bad_inputs_are_tried():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_left(case, datadir, tmp_path, monkeypatch,
                                                       capsys):
    _, args, needle = case
    monkeypatch.chdir(tmp_path)  # a default --out (runs/NAME) would land here
    out = tmp_path / "exp"
    args = [a.replace("{d}", str(datadir)) for a in args]
    if args[0] == "sweep" and "--out" not in args:
        args += ["--out", str(out)]
    if args[0] == "sweep":  # the case's own flags come last, so they win
        args = ["sweep", *BASE, *args[1:]]
    before = _tree(datadir.parent)
    code, stdout, stderr = main(args, monkeypatch, capsys)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, (code, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("lrlab: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no folder, no partial file
    assert _tree(datadir.parent) == before  # no data file (or other folder) touched
    assert not (datadir.parent / "PWNED").exists()  # the crafted pickle ran nothing


def test_different_spec_in_existing_folder_is_refused(datadir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    code, _, err = main(["sweep", "--lr", "0.1", "--out", str(out), *BASE], monkeypatch, capsys)
    assert code == 0, err
    before = _tree(out)
    code, _, err = main(["sweep", "--lr", "0.2", "--out", str(out), *BASE], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "already holds a different experiment" in lines[0]
    assert "train.lr: 0.1 there, 0.2 now" in lines[0]  # names what differs
    assert _tree(out) == before


def test_data_file_is_read_never_written(datadir, tmp_path, monkeypatch, capsys):
    """A sweep on a CSV: the file's bytes and mtime are unchanged afterwards."""
    f = datadir / "good.csv"
    stat, digest = f.stat(), hashlib.sha256(f.read_bytes()).hexdigest()
    out = tmp_path / "csv"
    code, _, err = main(["sweep", "--data", f"csv:{f}", "--model", "2-4-2", "--out", str(out),
                         *BASE], monkeypatch, capsys)
    assert code == 0, err
    assert hashlib.sha256(f.read_bytes()).hexdigest() == digest
    assert f.stat().st_mtime_ns == stat.st_mtime_ns


def test_ray_backend_without_ray_says_how_to_install(tmp_path):
    """`--backend ray` where Ray cannot be imported: the install line, exit 2, no folder."""
    out = tmp_path / "exp"
    code = ("import sys; sys.modules['ray'] = None; from lrlab.cli import main; "
            "sys.argv = ['lrlab', 'sweep', '--backend', 'ray', '--epochs', '1', '--quiet', "
            f"'--out', {str(out)!r}]; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "pip install 'lrlab[ray]'" in lines[0]
    assert not out.exists()


def test_folder_written_by_another_process_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    args = ["sweep", "--lr", "0.1", "--out", str(out), *BASE]
    assert main(args, monkeypatch, capsys)[0] == 0
    with runner._folder_lock(out):  # as a running sweep holds it
        code, _, err = main(args, monkeypatch, capsys)
    assert code == 2 and "is being written by another lrlab process" in err


# Unpickling (and torch.load) runs code from the file: lrlab does it only on its own data, or
# through an unpickler that accepts nothing but arrays.
_LOADS = re.compile(r"\b(pickle\.loads?|torch\.load|cloudpickle\.loads?|dill\.loads?|"
                    r"joblib\.load|np\.load|numpy\.load)\s*\(")


def _closing(text: str, open_at: int) -> int:
    """The index of the parenthesis closing the one at `open_at`."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return len(text)


def test_no_unsafe_deserialisation_in_the_package():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in _LOADS.finditer(text):
            call = text[m.start(): _closing(text, m.end() - 1) + 1]
            line = text.count("\n", 0, m.start()) + 1
            if m.group(1) == "torch.load" and "weights_only=True" not in call:
                problems.append(f"{path.name}:{line}: {call}")
            elif m.group(1) in ("np.load", "numpy.load") and "allow_pickle=False" not in call:
                problems.append(f"{path.name}:{line}: {call}")
            elif m.group(1) not in ("torch.load", "np.load", "numpy.load"):
                problems.append(f"{path.name}:{line}: {call}")
        if "allow_pickle=True" in text or "weights_only=False" in text:
            problems.append(f"{path.name}: allow_pickle=True / weights_only=False")
        if "pickle.Unpickler" in text and "find_class" not in text:
            problems.append(f"{path.name}: an Unpickler without a find_class allow-list")
    assert not problems, problems


def test_main_exit_codes_from_a_real_process(tmp_path):
    """The console script's process: exit 2 and one line, with nothing written."""
    out = tmp_path / "exp"
    res = subprocess.run([sys.executable, "-m", "lrlab.cli", "sweep", "--lr", "-0.5", "--out",
                          str(out)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "40"})  # a narrow terminal: still 1 line
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "`[train].lr` must be" in res.stderr
    assert not out.exists()
