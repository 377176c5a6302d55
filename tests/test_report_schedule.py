"""The report plots the lr applied at every step (schedules, decay), and only when it varies."""

from __future__ import annotations

import csv

import pytest

import lrlab


def _sweep(tmp_path, name, train):
    doc = {"name": name, "data": {"source": "iris", "split": "stratified"},
           "model": {"hidden": [6]}, "train": {"batch_size": 30, "epochs": 3, **train},
           "sweep": {"lr": [0.2, 0.05]}, "run": {"probes": False}}
    return lrlab.sweep(doc, tmp_path / name).directory


def test_time_decay_schedule_is_plotted_with_the_keras_values(tmp_path):
    d = _sweep(tmp_path, "decay", {"schedule": "time_decay",
                                   "schedule_args": {"decay": 0.1}})
    assert (d / "lr_schedule.png").is_file()
    with (d / "lr_schedule.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_cfg: dict[str, list[float]] = {}
    for r in rows:
        by_cfg.setdefault(r["configuration"], []).append(float(r["lr"]))
    assert set(by_cfg) == {"lr=0.2", "lr=0.05"}
    steps = 4 * 3  # 120 training samples / batch 30, 3 epochs
    for lr0, got in ((0.2, by_cfg["lr=0.2"]), (0.05, by_cfg["lr=0.05"])):
        want = [lr0 / (1 + 0.1 * it) for it in range(steps)]  # Keras: per iteration
        assert got == pytest.approx(want, rel=1e-6)
    assert "applied learning rate" in (d / "report.html").read_text()


def test_constant_lr_draws_no_schedule(tmp_path):
    d = _sweep(tmp_path, "const", {})
    assert not (d / "lr_schedule.png").exists()
