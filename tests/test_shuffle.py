"""`[train].shuffle`: epoch (a new order per epoch), once (one order reused), none (data order).

Each mode is checked against a plain torch loop fed the order it promises (float64, K=1, on the
compiled kernel and on the torch path); a cohort that mixes modes equals its members alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lrlab import cli, data, engine, export, nets, runner, spec
from lrlab.errors import LrlabError
from lrlab.spec import Cohort


def _spec(**sweep):
    doc = {"data": {"source": "blobs", "n": 120, "classes": 3, "validation_split": 0.25},
           "model": {"hidden": [8, 6], "activation": "relu", "init": "glorot_uniform"},
           "train": {"optimizer": "sgd", "batch_size": 16, "epochs": 5, "lr": 0.2},
           "sweep": sweep, "run": {"dtype": "float64", "probes": False}}
    return spec.resolve(doc)


def _run(s, members):
    ds = data.load(members[0].data)
    return engine.run_cohort(Cohort(0, tuple(members)), ds, s.run), ds


def _torch_loop(m, ds, orders):
    """nn.Sequential + torch.optim.SGD, fed `orders(epoch)` (epochs counted from 1)."""
    arch = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes)
    init = nets.init_member(arch, m.model, m.seed)
    layers: list[nn.Module] = []
    for i in range(arch.n_layers):
        lin = nn.Linear(arch.sizes[i], arch.sizes[i + 1]).double()
        with torch.no_grad():
            lin.weight.copy_(init[2 * i].T)
            lin.bias.copy_(init[2 * i + 1][0])
        layers += [lin, nn.ReLU()] if i < arch.n_layers - 1 else [lin]
    net = nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=m.train.lr)
    x = torch.tensor(np.asarray(ds.X_train)).double()
    y = torch.tensor(np.asarray(ds.y_train))
    lossf = nn.CrossEntropyLoss()
    losses = []
    for epoch in range(1, m.train.epochs + 1):
        order = torch.as_tensor(orders(epoch))
        for lo in range(0, len(y), m.train.batch_size):
            idx = order[lo:lo + m.train.batch_size]
            opt.zero_grad()
            lossf(net(x[idx]), y[idx]).backward()
            opt.step()
        with torch.no_grad():
            losses.append(lossf(net(x), y).item())
    return losses


@pytest.fixture(params=["kernel", "torch"])
def path(request, monkeypatch):
    if request.param == "torch":
        monkeypatch.setenv("LRLAB_KERNEL", "0")
    elif nets.kernel_lib() is None:
        pytest.skip("no C compiler: the kernel path is not available")
    return request.param


def test_spec_accepts_modes_and_the_old_booleans():
    assert spec.TrainSpec().shuffle == "epoch"
    for given, mode in ((True, "epoch"), (False, "none"), ("once", "once"), ("none", "none")):
        assert spec.resolve({"train": {"shuffle": given}}).train.shuffle == mode
        s = spec.resolve({"sweep": {"shuffle": [given]}})
        assert spec.members(s)[0].train.shuffle == mode
    s = spec.resolve({"phases": [{"shuffle": False}]})
    assert spec.members(s)[0].phases[0].shuffle == "none"
    with pytest.raises(LrlabError, match=r"\[train\]\.shuffle.*epoch, once, none"):
        spec.resolve({"train": {"shuffle": "sometimes"}})
    with pytest.raises(LrlabError, match="distinct"):
        spec.resolve({"sweep": {"shuffle": [True, "epoch"]}})


def test_modes_share_a_cohort():
    s = _spec(shuffle=["epoch", "once", "none"], seeds=2)
    (c,) = spec.cohorts(s)
    assert [m.train.shuffle for m in c.members] == ["epoch"] * 2 + ["once"] * 2 + ["none"] * 2


def test_member_orders():
    seeds, n = [3, 3, 7, 9], 50
    modes = ["epoch", "once", "none", "once"]
    first = engine.member_orders(seeds, modes, 1, n)
    for epoch in (1, 2, 5):
        o = engine.member_orders(seeds, modes, epoch, n)
        np.testing.assert_array_equal(o[0], engine.epoch_order(3, epoch, n))
        np.testing.assert_array_equal(o[1], first[1])  # drawn once ...
        np.testing.assert_array_equal(o[1], engine.epoch_order(3, 1, n))  # ... from its seed
        np.testing.assert_array_equal(o[2], np.arange(n))
        np.testing.assert_array_equal(o[3], engine.epoch_order(9, 1, n))
    assert not np.array_equal(engine.epoch_order(3, 1, n), engine.epoch_order(3, 2, n))
    np.testing.assert_array_equal(engine.member_orders([4, 5], ["epoch"] * 2, 3, n),
                                  engine.epoch_orders([4, 5], 3, n))


@pytest.mark.parametrize("mode", ["epoch", "once", "none"])
def test_k1_matches_a_plain_torch_loop(mode, path):
    s = _spec(shuffle=[mode])
    (m,) = spec.members(s)
    runs, ds = _run(s, [m])
    n = len(ds.y_train)
    order_of = {"epoch": lambda e: engine.epoch_order(m.seed, e, n),
                "once": lambda e, p=engine.epoch_order(m.seed, 1, n): p,  # one permutation
                "none": lambda e: np.arange(n)}[mode]
    ref = _torch_loop(m, ds, order_of)
    np.testing.assert_allclose(runs[0].history["train_loss"][1:], ref, rtol=1e-9)


def test_once_differs_from_epoch_after_the_first_epoch():
    s = _spec(shuffle=["epoch", "once"])
    (e, o), _ = _run(s, spec.members(s))
    assert e.history["train_loss"][1] == o.history["train_loss"][1]  # same first order
    assert e.history["train_loss"][2] != o.history["train_loss"][2]


def test_cohort_mixing_modes_equals_each_member_alone(path):
    s = _spec(shuffle=["epoch", "once", "none"], lr=[0.3, 0.05], seeds=2)
    ms = spec.members(s)
    cohort, _ = _run(s, ms)
    for m, r in zip(ms, cohort):
        (alone,), _ = _run(s, [m])
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            np.testing.assert_allclose(r.history[key], alone.history[key], rtol=1e-9,
                                       atol=1e-12)


def test_cli_flag_is_a_sweep_axis_and_export_names_it(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(cli, "run_sweep", lambda spec, *a: seen.setdefault("spec", spec))
    res = CliRunner().invoke(cli.app, ["sweep", "--shuffle", "epoch,once", "--out",
                                       str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert dict(seen["spec"].sweep)["shuffle"] == ("epoch", "once")
    seen.clear()
    res = CliRunner().invoke(cli.app, ["sweep", "--shuffle", "false", "--out",
                                       str(tmp_path / "b")])
    assert res.exit_code == 0 and seen["spec"].train.shuffle == "none"
    seen.clear()
    res = CliRunner().invoke(cli.app, ["sweep", "--shuffle", "twice", "--out",
                                       str(tmp_path / "c")])
    assert res.exit_code == 2 and "shuffle" in res.output and "twice" in res.output
    assert not seen and not (tmp_path / "c").exists()

    s = _spec(shuffle=["epoch", "once"])
    runner.sweep(s, tmp_path / "x")
    recs = [json.loads(line) for line in export.to_jsonl(tmp_path / "x").splitlines()]
    assert [r["member"]["shuffle"] for r in recs] == ["epoch", "once"]
