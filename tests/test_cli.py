"""The CLI: flags become the right Spec, bad input is one line + exit 2 with nothing written,
and the demo command's report names every lr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrlab import cli

runner = CliRunner()


def _invoke(args, monkeypatch=None):
    return runner.invoke(cli.app, args)


def test_flags_reach_the_engine(monkeypatch, tmp_path):
    seen = {}

    def fake(spec, target, command, quiet, overwrite=False):
        seen["spec"], seen["target"] = spec, target

    monkeypatch.setattr(cli, "run_sweep", fake)
    res = _invoke(["sweep", "--data", "blobs", "--model", "2-10-10-4", "--activation", "tanh",
                   "--init", "normal:0.05", "--lr", "logspace:1e-4:1:5", "--seeds", "3",
                   "--first-seed", "4", "--epochs", "7", "--batch-size", "16",
                   "--preprocess", "none,standardize", "--optimizer", "sgd,adam",
                   "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    s = seen["spec"]
    assert s.model.hidden == (10, 10) and s.model.input_dim == 2 and s.model.output_dim == 4
    assert s.model.init == "normal:0.05" and s.model.activation == "tanh"
    assert dict(s.sweep)["lr"] == (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert dict(s.sweep)["preprocess"] == ("none", "standardize")
    assert dict(s.sweep)["optimizer"] == ("sgd", "adam")
    assert s.seeds == (4, 5, 6) and s.train.epochs == 7 and s.train.batch_size == 16


def test_flags_override_spec_file(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(cli, "run_sweep", lambda spec, *a: seen.setdefault("spec", spec))
    f = tmp_path / "s.toml"
    f.write_text('name = "file"\n[train]\nepochs = 50\nlr = 0.3\n[sweep]\nlr = [0.1, 0.2]\n')
    res = _invoke(["sweep", str(f), "--epochs", "5", "--lr", "0.7"])
    assert res.exit_code == 0, res.output
    s = seen["spec"]
    assert s.name == "file" and s.train.epochs == 5 and s.train.lr == 0.7
    assert "lr" not in dict(s.sweep)


BAD_FLAGS = [
    (["--lr", "-1"], "lr"),
    (["--lr", "abc"], "abc"),
    (["--lr", "logspace:0:1:5"], "logspace"),
    (["--model", "2-x-4"], "--model"),
    (["--model", "3-10-4"], "input_dim"),
    (["--model", "2-10-5"], "output_dim"),
    (["--optimizer", "lion"], "lion"),
    (["--data", "nope"], "nope"),
    (["--data", "csv:/does/not/exist.csv"], "exist"),
    (["--batch-size", "100000"], "batch_size"),
    (["--epochs", "0"], "epochs"),
    (["--preprocess", "whiten"], "whiten"),
    (["--init", "normal:-2"], "normal:-2"),
    (["--schedule", "zigzag"], "zigzag"),
]


@pytest.mark.parametrize("args,needle", BAD_FLAGS)
def test_bad_flags_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "exp"
    res = subprocess.run([sys.executable, "-m", "lrlab.cli", "sweep", "--data", "blobs",
                          "--model", "2-10-4", "--epochs", "1", "--quiet", "--out", str(out),
                          *args], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_sweep_export_report_explain_end_to_end(tmp_path):
    out = tmp_path / "blobs"
    lrs = ["0.5", "0.1", "0.01"]
    res = _invoke(["sweep", "--data", "blobs", "--model", "2-10-10-4", "--init", "normal:0.05",
                   "--lr", ",".join(lrs), "--seeds", "2", "--epochs", "5", "--batch-size", "64",
                   "--validation-split", "0.2", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    for lr in lrs:
        assert f"lr={lr}" in html
    res = _invoke(["export", str(out), "--format", "json"])
    assert res.exit_code == 0
    recs = [json.loads(line) for line in res.output.splitlines()]
    assert len(recs) == 6
    r = recs[0]
    assert set(r) >= {"member", "status", "diverged_epoch", "final", "verdict", "history"}
    assert set(r["member"]) >= {"lr", "seed"}
    assert set(r["final"]) == {"train_loss", "val_loss", "train_acc", "val_acc"}
    assert set(r["verdict"]) >= {"label", "labels", "evidence", "explanation"}
    assert len(r["history"]["train_loss"]) == 6
    res = _invoke(["export", str(out), "--format", "csv"])
    assert res.exit_code == 0 and res.output.startswith("member_id,lr,seed")
    res = _invoke(["explain", str(out), "--lr", "0.1"])
    assert res.exit_code == 0 and "lr=0.1" in res.output
    before = (out / "report.html").stat().st_size
    (out / "report.html").unlink()
    res = _invoke(["report", str(out)])
    assert res.exit_code == 0 and (out / "report.html").stat().st_size == before


def test_export_of_missing_experiment_is_exit_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lrlab.cli", "export", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "no lrlab experiment" in res.stderr


def test_python_api(tmp_path):
    import lrlab

    result = lrlab.sweep({"data": {"source": "iris", "split": "stratified"},
                          "model": {"hidden": [8]}, "train": {"epochs": 3},
                          "sweep": {"lr": [0.1, 0.01]}}, tmp_path / "iris", report=False)
    df = result.to_pandas()
    assert set(df["lr"]) == {0.1, 0.01} and len(df) == 2 * 4
    assert Path(tmp_path / "iris" / "spec.toml").is_file()
