"""Bad input refused up front, class by class: sizes, devices, paths, data, the Python API and
the range test on a user's module. Each CLI case asserts exit code 2, exactly one line on
stderr naming what is wrong, no traceback, and that nothing was written anywhere under the
test's folder (a listing of every file and folder, before and after).
"""

from __future__ import annotations

import os
import random
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import lrlab
from lrlab import cli, runner
from lrlab import data as data_mod
from lrlab import spec as spec_mod
from lrlab.errors import LrlabError

BASE = ["--epochs", "1", "--quiet", "--no-probes"]


def _listing(root: Path) -> dict[str, int]:
    """Every file and folder under root, with file sizes (folders: -1)."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1)
            for p in sorted(root.rglob("*"))}


def _run(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["lrlab", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def _refused(args: list[str], needle: str, root: Path, monkeypatch, capsys,
             cwd: Path | None = None) -> str:
    """Run `lrlab ARGS` in `cwd` (default root); assert the refusal and that nothing under
    root changed."""
    monkeypatch.chdir(cwd or root)
    before = _listing(root)
    code, out, err = _run(args, monkeypatch, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("lrlab: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert _listing(root) == before  # no folder, no file, nothing half-written
    return lines[0]


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fails the test if any data is loaded (the check must come before)."""
    def load(*a, **k):
        raise AssertionError("data was loaded before the input was refused")

    monkeypatch.setattr(data_mod, "load", load)
    monkeypatch.setattr(runner.data_mod, "load", load)


# ----------------------------------------------------------------------------- sizes

SIZE_CASES = [
    ("seeds-flag", ["sweep", "--seeds", "100000000"],
     "the sweep has 100000000 members (seeds: 100000000), more than `[run].max_members` = 100000"),
    ("seeds-toml", ["sweep", "{d}/seeds.toml"], "the sweep has 100000000 members"),
    ("seed-list-toml", ["sweep", "{d}/seedlist.toml", "--max-members", "50"],
     "the sweep has 60 members (seeds: 60), more than `[run].max_members` = 50"),
    ("product", ["sweep", "--lr", "logspace:1e-4:1:5000", "--seeds", "100"],
     "the sweep has 500000 members (lr: 5000 x seeds: 100)"),
    ("product-own-limit", ["sweep", "--lr", "0.1,0.2,0.3", "--optimizer", "sgd,adam",
                           "--seeds", "4", "--max-members", "20"],
     "the sweep has 24 members (optimizer: 2 x lr: 3 x seeds: 4), more than "
     "`[run].max_members` = 20"),
    ("logspace-huge", ["sweep", "--lr", "logspace:1e-4:1:100000000"],
     "`--lr` must be logspace:LO:HI:N with N <= 1000000"),
    ("model-huge", ["sweep", "--model", "2-100000-100000-4"],
     "the largest cohort, 1 member(s) with hidden layers [100000, 100000]"),
    ("model-own-limit", ["sweep", "--model", "2-64-64-4", "--max-memory-gb", "0.001"],
     "more than `[run].max_memory_gb` = 0.001"),
    ("memory-toml", ["sweep", "{d}/memory.toml"], "more than `[run].max_memory_gb` = 0.0001"),
    ("synthetic-huge", ["sweep", "{d}/bigdata.toml"],
     "generating blobs with 10000000 samples x 100000 features"),
    ("recipe-seeds", ["recipes", "run", "iris-keras", "--seeds", "1000000", "--quiet"],
     "the sweep has 4000000 members (lr: 4 x seeds: 1000000)"),
    ("recipe-product", ["recipes", "run", "iris-keras", "--seeds", "30000", "--quiet"],
     "the sweep has 120000 members"),
    ("recipe-memory", ["recipes", "run", "iris-keras", "--max-memory-gb", "0.0001", "--quiet"],
     "more than `[run].max_memory_gb` = 0.0001"),
    ("find-seeds", ["find", "--seeds", "100000000"], "the sweep has 100000000 members"),
]
SIZE_TOML = {
    "seeds.toml": "[sweep]\nseeds = 100000000\n",
    "seedlist.toml": "[sweep]\nseeds = [" + ", ".join(map(str, range(60))) + "]\n",
    "memory.toml": "[model]\nhidden = [32]\n[run]\nmax_memory_gb = 0.0001\n",
    "bigdata.toml": "[data]\nn = 10000000\nfeatures = 100000\n",
}


def _args(args: list[str], d: Path) -> list[str]:
    args = [a.replace("{d}", str(d)) for a in args]
    if args[0] == "sweep":
        args = ["sweep", *BASE, *args[1:]]
    return args


@pytest.mark.parametrize("case", SIZE_CASES, ids=[c[0] for c in SIZE_CASES])
def test_sizes_are_refused_before_anything_is_built(case, tmp_path, monkeypatch, capsys):
    _, args, needle = case
    d = tmp_path / "in"
    d.mkdir()
    for name, text in SIZE_TOML.items():
        (d / name).write_text(text)
    line = _refused(_args(args, d), needle, tmp_path, monkeypatch, capsys)
    assert "--max-members" in line or "--max-memory-gb" in line or "logspace" in line


def test_the_limit_flags_raise_the_limits(tmp_path, monkeypatch, capsys, no_cuda):
    """The refusal's own advice works: --max-members lets the same sweep run. And --overwrite
    deletes nothing when the new input is bad."""
    monkeypatch.chdir(tmp_path)
    args = ["sweep", *BASE, "--n", "60", "--model", "2-4-4", "--lr", "0.1,0.2", "--seeds", "2"]
    _refused([*args, "--max-members", "3", "--out", "a"], "the sweep has 4 members", tmp_path,
             monkeypatch, capsys)
    code, _, err = _run([*args, "--max-members", "4", "--max-memory-gb", "50", "--out", "a"],
                        monkeypatch, capsys)
    assert code == 0, err
    assert (tmp_path / "a" / "lrlab.sqlite").is_file()
    for bad, needle in ((["--device", "cuda"], "no CUDA device found"),
                        (["--max-members", "3"], "the sweep has 4 members"),
                        (["--max-memory-gb", "0.00001"], "more than `[run].max_memory_gb`")):
        _refused([*args, "--out", "a", "--overwrite", *bad], needle, tmp_path, monkeypatch,
                 capsys)


@pytest.mark.parametrize("doc", [
    {"sweep": {"seeds": 100_000_000}},
    {"sweep": {"seeds": 1_000_000_000_000}},
    {"sweep": {"lr": [0.1 * 0.9 ** i for i in range(5000)], "seeds": 1000}},
    {"sweep": {"lr": [0.1, 0.2], "seeds": 60_000}},
    {"sweep": {"seeds": 20}, "run": {"max_members": 19}},
    {"sweep": {"seeds": 10**11}, "run": {"max_members": 10**12, "max_memory_gb": 1}},
], ids=["1e8-seeds", "1e12-seeds", "lr-x-seeds", "just-over", "own-limit", "raised-limit"])
def test_too_many_members_cost_nothing_to_refuse(doc):
    """Refused from the axes' lengths: no seed tuple, no member list (memory and time), also
    when the member limit is raised but their bookkeeping alone cannot fit."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(LrlabError, match="members .*more than `\\[run\\].max_mem"):
            spec_mod.resolve(doc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # a few MB (the lr list itself), not gigabytes
    assert time.perf_counter() - t0 < 5


def test_member_count_is_arithmetic_and_matches_the_members():
    s = spec_mod.resolve({"sweep": {"lr": [0.1, 0.2, 0.3], "optimizer": ["sgd", "adam"],
                                    "preprocess": ["none", "minmax"], "seeds": 5}})
    assert spec_mod.member_count(s) == len(spec_mod.members(s)) == 60
    big = spec_mod.Spec(sweep=(("lr", tuple(0.1 / (i + 1) for i in range(1000))),),
                        seeds=tuple(range(1000)))
    with pytest.raises(LrlabError, match="has 1000000 members"):
        spec_mod.validate(big)  # refused without building a million members


def test_memory_estimate_grows_with_the_model_and_the_members():
    """The estimate is arithmetic over shapes: 4x the hidden width squared ~ 16x the weights."""
    def estimate(hidden: list[int], seeds: int) -> int:
        s = spec_mod.resolve({"data": {"n": 200}, "model": {"hidden": hidden},
                              "train": {"epochs": 1}, "sweep": {"seeds": seeds},
                              "run": {"max_members_per_cohort": seeds}})
        return runner.memory_estimate(s, runner.load_data(s))[0]

    small, wide, many = estimate([256, 256], 1), estimate([1024, 1024], 1), estimate([256, 256], 8)
    params = lambda h: (2 + 1) * h + (h + 1) * h + (h + 1) * 4  # noqa: E731
    assert wide - small >= 8 * 4 * (params(1024) - params(256))  # 8 param-shaped copies, float32
    assert many > 7 * (small - estimate([1], 1))


# ----------------------------------------------------------------------------- devices

DEVICE_CASES = [
    ("sweep-flag", ["sweep", *BASE, "--device", "cuda"]),
    ("sweep-toml", ["sweep", *BASE, "{d}/cuda.toml"]),
    ("sweep-csv", ["sweep", *BASE, "--device", "cuda", "--data", "csv:{d}/x.csv"]),
    ("recipe", ["recipes", "run", "iris-keras", "--device", "cuda", "--quiet"]),
    ("recipe-smoke", ["recipes", "run", "blobs-deep-relu", "--smoke", "--device", "cuda",
                      "--quiet"]),
]


@pytest.mark.parametrize("case", DEVICE_CASES, ids=[c[0] for c in DEVICE_CASES])
def test_cuda_without_cuda_is_refused_before_loading_data(case, tmp_path, monkeypatch, capsys,
                                                          no_cuda, no_data_loading):
    _, args = case
    d = tmp_path / "in"
    d.mkdir()
    (d / "cuda.toml").write_text("[run]\ndevice = \"cuda\"\n")
    (d / "x.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    args = [a.replace("{d}", str(d)) for a in args]
    _refused(args, "`[run].device` must be cpu on this machine (no CUDA device found); got "
             "'cuda'", tmp_path, monkeypatch, capsys)


def test_cuda_without_cuda_in_the_python_api(tmp_path, monkeypatch, no_cuda):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LrlabError, match=r"`\[run\].device` must be cpu on this machine"):
        lrlab.sweep({"run": {"device": "cuda"}}, out=tmp_path / "x")
    model = torch.nn.Linear(2, 2)
    batches = [(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))]
    for dev in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(LrlabError, match="`device` must be cpu on this machine"):
            lrlab.find_lr(model, batches, torch.nn.CrossEntropyLoss(), device=dev)
    with pytest.raises(LrlabError, match="`device` must be a torch device"):
        lrlab.find_lr(model, batches, torch.nn.CrossEntropyLoss(), device="gpu")
    assert _listing(tmp_path) == {}


# ----------------------------------------------------------------------------- paths

def _path_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    (tmp_path / "afile").write_text("mine")
    return [
        (["sweep", *BASE, "--out", "afile"], "`--out` must be a folder (it is an existing file)"),
        (["sweep", *BASE, "--out", "afile/sub"], "is a file)"),
        (["sweep", *BASE, "--out", "afile/x/y"], "is a file)"),
        (["sweep", *BASE, "--out", "x" * 300], "every name has at most 255 bytes (one has 300)"),
        (["sweep", *BASE, "--out", "ok/" + "y" * 256 + "/z"], "at most 255 bytes"),
        (["sweep", *BASE, "--out", "/".join(["d" * 200] * 25)], "shorter than 4096 bytes"),
        (["recipes", "run", "iris-keras", "--quiet", "--out", "afile"], "existing file"),
        (["sweep", *BASE, "--name", "../../../tmp/x"], "`name` must be a folder name"),
        (["sweep", *BASE, "--name", "a/b"], "without /"),
        (["sweep", *BASE, "--name", ".."], "not . or .."),
        (["sweep", *BASE, "--name", "a\\b"], "`name` must be a folder name"),
        (["sweep", *BASE, "--name", "n" * 101], "of 1 to 100 characters"),
        (["sweep", *BASE, "--name", "tab\there"], "control characters"),
        (["sweep", *BASE, "spec_escape.toml"], "got '../../escaped'"),
    ]


def test_paths_that_cannot_be_written_or_escape_runs(tmp_path, monkeypatch, capsys):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    (work / "spec_escape.toml").write_text("name = \"../../escaped\"\n")
    for args, needle in _path_cases(work):
        _refused(args, needle, tmp_path, monkeypatch, capsys, cwd=work)  # nothing anywhere
    assert (work / "afile").read_text() == "mine"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for out in ("ro/exp", "ro/deeper/exp"):
            _refused(["sweep", *BASE, "--out", out], "is not writable", tmp_path, monkeypatch,
                     capsys)
    finally:
        ro.chmod(0o755)


def test_out_check_writes_nothing_and_accepts_good_paths(tmp_path):
    assert runner.check_out(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert runner.check_out(tmp_path) == tmp_path  # an existing folder (resume, or empty)
    assert _listing(tmp_path) == {}
    for bad in (None, 3, ""):
        with pytest.raises(LrlabError, match="`--out` must be a folder path"):
            runner.check_out(bad)


# ----------------------------------------------------------------------------- data

def _write_csvs(d: Path) -> None:
    rng = random.Random(0)
    reg = ["x0,x1,price"] + [f"{rng.random():.3f},{rng.random():.3f},{rng.random() * 100:.4f}"
                             for _ in range(3000)]
    (d / "regression.csv").write_text("\n".join(reg) + "\n")
    ids = ["x0,x1,id"] + [f"{rng.random():.3f},{rng.random():.3f},{i}" for i in range(3000)]
    (d / "ids.csv").write_text("\n".join(ids) + "\n")
    names = ["x0,name"] + [f"{i * 0.1:.1f},row{i}" for i in range(100)]
    (d / "names.csv").write_text("\n".join(names) + "\n")
    many = ["x0,y"] + [f"{i * 0.1:.1f},{i % 1500}" for i in range(6000)]
    (d / "classes.csv").write_text("\n".join(many) + "\n")
    (d / "half.csv").write_text("x0,x1,y\n" + "".join(f"{i},{i},{i * 0.5}\n" for i in range(8)))
    (d / "short.csv").write_text("x0,x1,label\n0.1,0.2,a\n0.3,0.4,b\n0.5,b\n0.1,0.2,a\n")
    (d / "short_end.csv").write_text("x0,x1,label\n0.1,0.2,a\n0.3,0.4,b\n\n0.5,0.1,b\n0.1,0.2\n")
    (d / "long.csv").write_text("x0,x1,label\n0.1,0.2,a\n0.3,0.4,b,7\n0.5,0.1,b\n")
    g = np.random.default_rng(0)
    np.savez(d / "regression.npz", X=g.normal(size=(500, 3)), y=g.normal(size=500))
    np.savez(d / "ids.npz", X=g.normal(size=(500, 3)), y=np.arange(500))
    (d / "noheader.csv").write_text("0.1,0.2,1\n0.3,0.4,0\n0.5,0.1,1\n0.2,0.2,0\n")
    (d / "noheader_ints.csv").write_text("1,2,0\n3,4,1\n5,6,0\n")
    (d / "noheader_neg.csv").write_text("-1.5, 2e3 ,0\n3,4,1\n5,6,0\n")
    toml = {
        "lr_tiny.toml": "[train]\nlr = 1e-300\n",
        "lr_axis.toml": "[sweep]\nlr = [0.1, 1e-45]\n",
        "lr_phase.toml": "[[phases]]\nlr = 1e-39\n",
        "eps_tiny.toml": "[train]\noptimizer = \"adam\"\neps = 1e-300\n",
        "lr_f64.toml": "[run]\ndtype = \"float64\"\n[train]\nlr = 1e-320\n",
        "deep_array.toml": "[sweep]\nlr = " + "[" * 5000 + "0.1" + "]" * 5000 + "\n",
        "deep_inline.toml": "[train]\nschedule_args = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",
        "deep_parsed.toml": "[sweep]\nlr = " + "[" * 60 + "0.1" + "]" * 60 + "\n",
        "deep_tables.toml": "[train.schedule_args." + ".".join(["t"] * 40) + "]\nx = 1\n",
    }
    for name, text in toml.items():
        (d / name).write_text(text)


DATA_CASES = [
    ("continuous-label", "csv:{d}/regression.csv",
     "label column 'price' holds fractional numbers (data row 1 holds"),
    ("half-label", "csv:{d}/half.csv", "label column 'y' holds fractional numbers (data row 2"),
    ("id-label", "csv:{d}/ids.csv", "label column 'id' has 3000 distinct values in 3000 rows"),
    ("name-label", "csv:{d}/names.csv", "label column 'name' has 100 distinct values in 100"),
    ("too-many-classes", "csv:{d}/classes.csv", "label column 'y' has 1500 distinct values"),
    ("npz-continuous", "npz:{d}/regression.npz", "array y holds fractional numbers"),
    ("npz-ids", "npz:{d}/ids.npz", "array y has 500 distinct values in 500 rows"),
    ("short-row", "csv:{d}/short.csv", "data row 3 (line 4) has 2 field(s) but the header has 3"),
    ("short-last-row", "csv:{d}/short_end.csv", "data row 4 (line 6) has 2 field(s)"),
    ("long-row", "csv:{d}/long.csv", "data row 2 (line 3) has 4 field(s) but the header has 3"),
    ("no-header", "csv:{d}/noheader.csv", "has no header row (its first row '0.1,0.2,1'"),
    ("no-header-ints", "csv:{d}/noheader_ints.csv", "has no header row"),
    ("no-header-neg", "csv:{d}/noheader_neg.csv", "has no header row"),
]
SPEC_DATA_CASES = [
    ("lr-flag", ["--lr", "1e-300"], "`[train].lr` must be at least 1.18e-38 in float32"),
    ("lr-flag-axis", ["--lr", "0.1,1e-40"], "`[sweep].lr` must be at least 1.18e-38"),
    ("lr-toml", ["{d}/lr_tiny.toml"], "`[train].lr` must be at least 1.18e-38 in float32"),
    ("lr-axis", ["{d}/lr_axis.toml"], "`[sweep].lr` must be at least 1.18e-38"),
    ("lr-phase", ["{d}/lr_phase.toml"], "`phases[0].lr` must be at least 1.18e-38"),
    ("eps", ["{d}/eps_tiny.toml"], "`[train].eps` must be at least 1.18e-38 in float32"),
    ("lr-float64", ["{d}/lr_f64.toml"], "`[train].lr` must be at least 2.23e-308 in float64"),
    ("deep-array", ["{d}/deep_array.toml"], "nests arrays or tables too deeply"),
    ("deep-inline", ["{d}/deep_inline.toml"], "nests arrays or tables too deeply"),
    ("deep-parsed", ["{d}/deep_parsed.toml"], "`[sweep].lr` nests lists or tables more than 32"),
    ("deep-tables", ["{d}/deep_tables.toml"], "nests lists or tables more than 32 levels"),
]


@pytest.fixture
def csvdir(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    _write_csvs(d)
    return d


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_tables_are_refused_naming_file_and_column(case, csvdir, tmp_path, monkeypatch,
                                                       capsys):
    _, source, needle = case
    source = source.replace("{d}", str(csvdir))
    line = _refused(["sweep", *BASE, "--data", source, "--out", "exp"], needle, tmp_path,
                    monkeypatch, capsys)
    assert Path(source.split(":", 1)[1]).name in line


@pytest.mark.parametrize("case", SPEC_DATA_CASES, ids=[c[0] for c in SPEC_DATA_CASES])
def test_bad_numbers_and_nesting_are_refused(case, csvdir, tmp_path, monkeypatch, capsys):
    _, args, needle = case
    args = [a.replace("{d}", str(csvdir)) for a in args]
    _refused(["sweep", *BASE, *args, "--out", "exp"], needle, tmp_path, monkeypatch, capsys)


def test_good_tables_still_load(tmp_path):
    """The label checks leave real class columns alone (integer ids as floats, few rows)."""
    p = tmp_path / "ok.csv"
    p.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{float(i % 3)}\n" for i in range(30)))
    ds = data_mod.load(spec_mod.DataSpec(source=f"csv:{p}", validation_split=0.0))
    assert ds.n_classes == 3 and ds.X_train.shape == (30, 2)
    p2 = tmp_path / "tiny.csv"
    p2.write_text("x,species\n1,a\n2,b\n3,c\n")  # 3 classes in 3 rows: small, so allowed
    assert data_mod.load(spec_mod.DataSpec(source=f"csv:{p2}", validation_split=0.0)
                         ).n_classes == 3


# ----------------------------------------------------------------------------- the Python API

SAME_MISTAKES = [  # (CLI flags, the dict the Python API gets)
    (["--lr", "-0.1"], {"train": {"lr": -0.1}}),
    (["--seeds", "0"], {"sweep": {"seeds": 0}}),
    (["--seeds", "100000000"], {"sweep": {"seeds": 100000000}}),
    (["--lr", "1e-300"], {"train": {"lr": 1e-300}}),
    (["--optimizer", "lion"], {"train": {"optimizer": "lion"}}),
    (["--model", "2-100000-100000-4"], {"model": {"input_dim": 2, "hidden": [100000, 100000],
                                                  "output_dim": 4}}),
]


@pytest.mark.parametrize("case", SAME_MISTAKES, ids=[" ".join(c[0]) for c in SAME_MISTAKES])
def test_python_api_says_the_same_sentence_as_the_cli(case, tmp_path, monkeypatch, capsys):
    flags, doc = case
    line = _refused(["sweep", *BASE, *flags, "--out", "exp"], "", tmp_path, monkeypatch, capsys)
    doc = {**doc, "train": {"epochs": 1, **doc.get("train", {})},
           "run": {"probes": False}}
    with pytest.raises(LrlabError) as e:
        lrlab.sweep(doc, out=tmp_path / "exp")
    assert line == f"lrlab: error: {e.value}"
    assert _listing(tmp_path) == {}


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "a/b", "..", "x" * 101])
def test_python_api_keeps_a_named_folder_inside_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LrlabError, match="`name` must be a folder name"):
        lrlab.sweep({"name": name, "train": {"epochs": 1}})
    assert _listing(tmp_path) == {}
    # with an explicit folder the name is only a label (the report escapes it)
    assert runner.as_spec({"name": name}).name == name


@pytest.mark.parametrize("bad", [None, 3, 0.5, ["data"], b"spec", object()],
                         ids=["None", "int", "float", "list", "bytes", "object"])
def test_python_api_refuses_what_is_not_a_spec(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LrlabError, match="`spec` must be a Spec, a path to a TOML file or a "
                                         "dict"):
        lrlab.sweep(bad)
    with pytest.raises(LrlabError):
        lrlab.find_lr(bad)
    assert _listing(tmp_path) == {}


def test_python_api_accepts_numpy_where_numbers_and_lists_go():
    as_lists = {"data": {"n": 300, "validation_split": 0.25},
                "model": {"hidden": [8, 4], "init_scale": 0.5},
                "train": {"epochs": 3, "batch_size": 16, "lr": 0.1},
                "sweep": {"lr": [0.1, 0.01], "seeds": 3, "batch_size": [8, 16]}}
    as_numpy = {"data": {"n": np.int64(300), "validation_split": np.float64(0.25)},
                "model": {"hidden": np.array([8, 4]), "init_scale": np.float32(0.5)},
                "train": {"epochs": np.int32(3), "batch_size": np.int64(16),
                          "lr": np.float32(0.1)},
                "sweep": {"lr": np.array([0.1, 0.01]), "seeds": np.int64(3),
                          "batch_size": np.array([8, 16], dtype=np.int16)}}
    a, b = runner.as_spec(as_lists), runner.as_spec(as_numpy)
    assert a == b
    assert spec_mod.to_toml(a) == spec_mod.to_toml(b)  # plain Python numbers, valid TOML
    seeds = spec_mod.resolve({"sweep": {"seeds": np.array([4, 7, 9])}}).seeds
    assert seeds == (4, 7, 9) and all(type(s) is int for s in seeds)
    assert spec_mod.parse_seeds(np.int64(2), np.int64(5)) == (5, 6)


# ----------------------------------------------------------------------------- find_lr

def _module_and_batches(x: torch.Tensor, y: torch.Tensor):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 3))
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, len(x), 16)]
    return model, batches


def _xy(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("poison", ["nan-input", "inf-input", "nan-target-mse", "all-nan"])
def test_find_lr_says_when_the_loss_is_nan_from_the_start(poison):
    x, y = _xy()
    loss_fn: torch.nn.Module = torch.nn.CrossEntropyLoss()
    if poison == "nan-input":
        x[:, 1] = float("nan")
    elif poison == "inf-input":
        x[::2, 0] = float("inf")
    elif poison == "all-nan":
        x[:] = float("nan")
    model, batches = _module_and_batches(x, y)
    if poison == "nan-target-mse":
        loss_fn = torch.nn.MSELoss()
        batches = [(bx, torch.full((len(bx), 3), float("nan"))) for bx, _ in batches]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LrlabError, match="before any training step, for every seed: no "
                                         "learning rate can fix that"):
        lrlab.find_lr(model, batches, loss_fn, num_iter=20, seeds=2)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # restored


def test_find_lr_says_when_the_first_step_makes_nan():
    """Finite at the start, NaN from the second batch on (NaN in all but the first batch)."""
    x, y = _xy()
    x[16:, 2] = float("nan")
    model, batches = _module_and_batches(x, y)
    with pytest.raises(LrlabError, match="after the first step .* for every seed, from a "
                                         "finite start"):
        lrlab.find_lr(model, batches, torch.nn.CrossEntropyLoss(), num_iter=20, seeds=2)


def test_find_lr_names_a_loader_that_runs_out_for_good():
    x, y = _xy()
    model, batches = _module_and_batches(x, y)
    loss_fn = torch.nn.CrossEntropyLoss()
    with pytest.raises(LrlabError, match="`train_loader` is a generator, an iterator that ran "
                                         "out after 4 batches and cannot be iterated again"):
        lrlab.find_lr(model, (b for b in batches), loss_fn, num_iter=20, seeds=2)
    with pytest.raises(LrlabError, match="`train_loader` is a list_iterator"):
        lrlab.find_lr(model, iter(batches), loss_fn, num_iter=20, seeds=2)
    with pytest.raises(LrlabError, match="`val_loader` is a generator"):
        lrlab.find_lr(model, batches, loss_fn, num_iter=20, seeds=2,
                      val_loader=(b for b in batches))
    # a one-shot iterator long enough for the whole ramp is fine
    res = lrlab.find_lr(model, iter(batches * 10), loss_fn, num_iter=20, seeds=2)
    assert len(res.curve.lr) > 0
