"""Engine invariants (DESIGN): cohort == alone; K=1 == a plain torch.optim loop; divergence
is frozen and isolated. Equivalence runs in float64 (high-lr float32 training is chaotic)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lrlab import data, engine, nets, spec
from lrlab.spec import Cohort, RunSpec

F64 = RunSpec(dtype="float64", probes=False)


def _spec(**sweep):
    doc = {"data": {"source": "blobs", "n": 120, "classes": 3, "validation_split": 0.25},
           "model": {"hidden": [8, 6], "activation": "tanh", "init": "glorot_uniform"},
           "train": {"optimizer": "sgd", "batch_size": 16, "epochs": 6},
           "sweep": sweep, "run": {"dtype": "float64", "probes": False}}
    return spec.resolve(doc)


def _run(s, members=None):
    ms = members or spec.members(s)
    ds = data.load(ms[0].data)
    return engine.run_cohort(Cohort(0, tuple(ms)), ds, s.run), ds


def test_member_in_cohort_equals_member_alone():
    s = _spec(lr=[0.5, 0.05, 0.005], seeds=3, momentum=[0.0, 0.9])
    cohort, _ = _run(s)
    assert len(cohort) == 18
    for m, r in zip(spec.members(s), cohort):
        alone, _ = _run(s, [m])
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            np.testing.assert_allclose(r.history[key], alone[0].history[key], rtol=1e-9,
                                       atol=1e-12)


def _torch_reference(m, ds, arch, momentum=0.0, nesterov=False):
    """A plain nn.Sequential + torch.optim.SGD loop fed the same init and data order."""
    init = nets.init_member(arch, m.model, m.seed)
    layers = []
    for i in range(arch.n_layers):
        lin = nn.Linear(arch.sizes[i], arch.sizes[i + 1]).double()
        with torch.no_grad():
            lin.weight.copy_(init[2 * i].T)
            lin.bias.copy_(init[2 * i + 1][0])
        layers.append(lin)
        if i < arch.n_layers - 1:
            layers.append(nn.Tanh())
    net = nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=m.train.lr, momentum=momentum, nesterov=nesterov)
    x = torch.tensor(np.asarray(ds.X_train)).double()
    y = torch.tensor(np.asarray(ds.y_train))
    xv = torch.tensor(np.asarray(ds.X_val)).double()
    yv = torch.tensor(np.asarray(ds.y_val))
    lossf = nn.CrossEntropyLoss()
    hist = {"train_loss": [], "val_loss": []}

    def record():
        with torch.no_grad():
            hist["train_loss"].append(lossf(net(x), y).item())
            hist["val_loss"].append(lossf(net(xv), yv).item())

    record()
    n = len(y)
    for epoch in range(1, m.train.epochs + 1):
        order = torch.from_numpy(engine.epoch_order(m.seed, epoch, n))
        for lo in range(0, n, m.train.batch_size):
            idx = order[lo:lo + m.train.batch_size]
            opt.zero_grad()
            lossf(net(x[idx]), y[idx]).backward()
            opt.step()
        record()
    return hist


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_k1_matches_plain_torch_optim_loop(momentum, nesterov):
    s = _spec(lr=[0.3])
    s = spec.resolve(spec.to_dict(s) | {"train": {**spec.to_dict(s)["train"],
                                                   "momentum": momentum, "nesterov": nesterov}})
    (m,) = spec.members(s)
    runs, ds = _run(s, [m])
    arch = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes)
    ref = _torch_reference(m, ds, arch, momentum, nesterov)
    np.testing.assert_allclose(runs[0].history["train_loss"], ref["train_loss"], rtol=1e-9)
    np.testing.assert_allclose(runs[0].history["val_loss"], ref["val_loss"], rtol=1e-9)


def test_diverging_member_is_frozen_and_isolated():
    s = _spec(lr=[1e4, 0.1, 0.01], seeds=2)
    runs, _ = _run(s)
    ms = spec.members(s)
    by_lr = {}
    for m, r in zip(ms, runs):
        by_lr.setdefault(m.swept["lr"], []).append(r)
    for r in by_lr[1e4]:
        assert r.status == "diverged" and r.diverged_epoch is not None
        assert all(v is None or math.isfinite(v) for vs in r.history.values() for v in vs)
        assert len(r.history["epoch"]) <= r.diverged_epoch + 1
    # the others' curves equal a cohort without the diverging members
    calm = [m for m in ms if m.swept["lr"] != 1e4]
    alone, _ = _run(s, calm)
    for m, r in zip(calm, alone):
        mine = runs[m.index]
        assert mine.status == "ok"
        np.testing.assert_allclose(mine.history["train_loss"], r.history["train_loss"],
                                   rtol=1e-12)


def test_full_batch_and_phases():
    doc = {"data": {"source": "moons", "n": 60, "validation_split": 0.0},
           "model": {"hidden": [5], "activation": "tanh", "output": "sigmoid"},
           "train": {"batch_size": 0, "epochs": 4, "lr": 0.5},
           "phases": [{"lr": 0.05, "batch_size": 10, "epochs": 3}],
           "run": {"dtype": "float64", "probes": False}}
    s = spec.resolve(doc)
    runs, _ = _run(s)
    h = runs[0].history
    assert h["epoch"] == list(range(8))
    assert h["phase"][1:] == [0.0] * 4 + [1.0] * 3
    assert runs[0].steps["lr"] == [0.5] * 4 + [0.05] * 18  # 60 samples / batch 10 = 6 steps
    assert "val_loss" not in h


def test_float32_cohort_close_to_alone_short_horizon():
    doc = {"data": {"source": "blobs", "n": 200, "classes": 4},
           "model": {"hidden": [10, 10], "init": "normal:0.05"},
           "train": {"batch_size": 64, "epochs": 3}, "sweep": {"lr": [0.1, 0.01], "seeds": 2},
           "run": {"probes": False}}
    s = spec.resolve(doc)
    runs, _ = _run(s)
    for m, r in zip(spec.members(s), runs):
        alone, _ = _run(s, [m])
        np.testing.assert_allclose(r.history["train_loss"], alone[0].history["train_loss"],
                                   rtol=1e-5)
