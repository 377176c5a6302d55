"""Verdicts: a constructed case for every label, each checked for its label and its evidence
numbers (against the recorded history or a direct numpy count); the recommendation; the
verdicts in the store, the export and `lrlab explain`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lrlab import data, engine, probes, runner, spec, verdicts
from lrlab.spec import Cohort
from lrlab.verdicts import RunView


def _run(doc: dict) -> tuple[list[engine.MemberRun], list[RunView], list[verdicts.Verdict],
                             data.Dataset]:
    """Train the spec's members in one cohort with the probes on; judge each."""
    doc = {**doc, "run": {"dtype": "float64"}}
    s = spec.resolve(doc)
    ms = spec.members(s)
    ds = data.load(ms[0].data)
    runs = engine.run_cohort(Cohort(0, tuple(ms)), ds, s.run, probes.hooks(s))
    views = [RunView(r.member.index, r.member.swept, r.status, r.diverged_epoch, r.history,
                     ds.n_classes, runner.member_setup(r.member)) for r in runs]
    return runs, views, [verdicts.judge(v) for v in views], ds


def _probe_forward(params: list[np.ndarray], ds: data.Dataset, act: str) -> list[np.ndarray]:
    """Pre-activations of every layer on the probes' batch, in numpy (an independent path)."""
    x, _ = probes.probe_batch(torch.tensor(ds.X_train[:512]), torch.tensor(ds.y_train[:512]))
    h, zs = x.numpy(), []
    for i in range(len(params) // 2):
        z = h @ params[2 * i] + params[2 * i + 1][0]
        zs.append(z)
        h = np.maximum(z, 0) if act == "relu" else 1 / (1 + np.exp(-z))
    return zs


def _majority(ds: data.Dataset) -> float:
    _, y = probes.probe_batch(torch.tensor(ds.X_train[:512]), torch.tensor(ds.y_train[:512]))
    return float(np.bincount(y.numpy()).max() / len(y))


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


BLOBS3 = {"source": "blobs", "n": 200, "classes": 3, "preprocess": "standardize"}


# ----------------------------------------------------------------------------- every label


def test_relu_net_with_very_negative_biases_is_dead_relu():
    runs, _, vs, ds = _run({"data": BLOBS3, "model": {
        "hidden": [16, 16], "activation": "relu", "init": "he_normal",
        "bias_init": "uniform:-8:-6"}, "train": {"batch_size": 32, "epochs": 5, "lr": 0.1}})
    v, ev = vs[0], vs[0].evidence
    assert v.label == "dead_relu" and "collapsed" in v.labels
    zs = _probe_forward(runs[0].params, ds, "relu")
    dead1 = float((zs[0] <= 0).all(axis=0).mean())
    assert dead1 == 1.0
    assert ev["dead_layer"] == 1 and ev["dead_frac_layer"] == dead1
    assert ev["dead_since_epoch"] == 0 and ev["dead_frac_layer_init"] == 1.0
    assert ev["top_class_share"] == 1.0 and ev["majority_share"] == _sig(_majority(ds))
    assert ev["final_acc"] == _sig(runs[0].history["val_acc"][-1])
    assert "dead from the start" in v.explanation and "cannot recover" in v.explanation


def test_sigmoid_net_with_weights_times_100_is_saturated():
    runs, _, vs, ds = _run({"data": BLOBS3, "model": {
        "hidden": [16], "activation": "sigmoid", "output": "quadratic",
        "init": "glorot_uniform", "init_scale": 100.0},
        "train": {"batch_size": 32, "epochs": 10, "lr": 0.5}})
    v, ev = vs[0], vs[0].evidence
    assert v.label == "saturated"
    zs = _probe_forward(runs[0].params, ds, "sigmoid")
    lay = ev["sat_layer"]
    assert ev["sat_frac_layer"] == _sig(float((np.abs(zs[lay - 1]) > 4.0).mean()))
    assert ev["sat_frac_layer"] >= verdicts.SAT_LAYER_MIN and ev["sat_since_epoch"] == 0
    h = runs[0].history["train_loss"]
    assert ev["loss_drop"] == _sig((h[0] - h[-1]) / h[0]) and ev["loss_drop"] < 0.1
    assert "slope" in v.explanation and "cannot climb out" in v.explanation


def test_lr_1e3_diverges_and_the_evidence_compares_lr_with_two_over_sharpness():
    runs, _, vs, _ = _run({"data": BLOBS3, "model": {
        "hidden": [16], "activation": "tanh", "init": "glorot_uniform"},
        "train": {"batch_size": 32, "epochs": 10, "lr": 1000.0}})
    r, v, ev = runs[0], vs[0], vs[0].evidence
    assert r.status == "diverged" and v.label == "diverged"
    assert ev["diverged_epoch"] == r.diverged_epoch
    assert ev["start_loss"] == _sig(r.history["train_loss"][0])
    lam = r.history["sharpness"][0]
    assert ev["sharpness_init"] == _sig(lam) and ev["stability_lr"] == _sig(2 / lam)
    assert ev["lr_over_stability"] == _sig(1000 * lam / 2)
    assert "not a wrong gradient" in v.explanation


def test_lr_1e_6_for_5_epochs_is_slow():
    runs, _, vs, _ = _run({"data": BLOBS3, "model": {
        "hidden": [16], "activation": "tanh", "init": "glorot_uniform"},
        "train": {"batch_size": 32, "epochs": 5, "lr": 1e-6}})
    v, ev, h = vs[0], vs[0].evidence, runs[0].history
    assert v.label == "slow" and v.labels == ("slow",)
    assert ev["loss_drop"] == _sig((h["train_loss"][0] - h["train_loss"][-1])
                                   / h["train_loss"][0])
    assert 0 <= ev["loss_drop"] < verdicts.LEARN_MIN_DROP
    upd = sorted(h["update_ratio_l1"][1:])
    assert ev["update_ratio_l1_median"] == _sig(upd[len(upd) // 2]) and upd[-1] < 1e-4
    assert "raise the lr" in v.explanation


def test_tiny_training_set_and_wide_net_overfit():
    runs, _, vs, _ = _run({"data": {"source": "moons", "n": 40, "noise": 0.35,
                                    "validation_split": 0.5, "preprocess": "standardize"},
                           "model": {"hidden": [64, 64], "activation": "relu",
                                     "init": "he_normal"},
                           "train": {"batch_size": 0, "epochs": 200, "lr": 0.1}})
    v, ev, h = vs[0], vs[0].evidence, runs[0].history
    assert v.label == "overfitting"
    best = int(np.argmin(h["val_loss"]))
    assert ev["best_val_epoch"] == h["epoch"][best]
    assert ev["best_val_loss"] == _sig(h["val_loss"][best])
    assert ev["final_val_loss"] == _sig(h["val_loss"][-1])
    assert ev["val_loss_rise"] >= verdicts.OVERFIT_RISE
    assert ev["acc_gap"] == _sig(h["train_acc"][-1] - h["val_acc"][-1]) >= 0.05
    assert h["train_loss"][-1] < h["train_loss"][best]


def test_tiny_init_deep_relu_net_at_lr_0_001_collapses_to_one_class():
    """Seed 000: "lr 0.001 seems to predict one class - why?"."""
    runs, _, vs, ds = _run({"data": {"source": "blobs", "n": 200, "classes": 4},
                            "model": {"hidden": [10, 10, 10, 10], "activation": "relu",
                                      "init": "normal:0.05"},
                            "train": {"batch_size": 64, "epochs": 20, "lr": 0.001}})
    v, ev, h = vs[0], vs[0].evidence, runs[0].history
    assert v.label == "collapsed"
    assert ev["top_class_share"] == 1.0 and ev["majority_share"] == _sig(_majority(ds))
    assert ev["val_acc"] == _sig(h["val_acc"][-1]) <= ev["majority_share"] + 0.05
    assert ev["final_train_loss"] == pytest.approx(math.log(4), rel=1e-3)
    assert ev["output_spread"] < verdicts.FLAT_SPREAD
    assert ev["weight_norms_init"] == [float(f"{h[f'weight_norm_l{i}'][0]:.3g}")
                                       for i in range(1, 6)]
    upd = sorted(h["update_ratio_l1"][1:])
    assert ev["update_ratio_l1_median"] == _sig(upd[len(upd) // 2]) < 1e-4
    for word in ("one class", "only", "normal:0.05", "flat start"):
        assert word in v.explanation


def test_minibatch_sgd_at_a_large_lr_oscillates():
    runs, _, vs, _ = _run({"data": {**BLOBS3, "noise": 2.5}, "model": {
        "hidden": [16], "activation": "tanh", "init": "glorot_uniform"},
        "train": {"batch_size": 8, "epochs": 30, "lr": 4.0}})
    v, ev, h = vs[0], vs[0].evidence, runs[0].history
    assert v.label == "oscillating" and "slow" not in v.labels
    tail = h["train_loss"][len(h["train_loss"]) // 2:]
    med = sorted(tail)[len(tail) // 2]
    rises = [b - a for a, b in zip(tail, tail[1:]) if b - a > 0.1 * med]
    assert ev["rises_share"] == round(len(rises) / (len(tail) - 1), 3) >= 0.3
    lam = [x for x in h["sharpness"] if x is not None][-1]
    assert ev["stability_lr_last"] == _sig(2 / lam)
    assert ("overshoot" in v.explanation) == (4.0 > 2 / lam)


def test_a_small_net_on_iris_converges():
    runs, _, vs, _ = _run({"data": {"source": "iris", "preprocess": "standardize",
                                    "split": "stratified"},
                           "model": {"hidden": [8], "activation": "tanh",
                                     "init": "glorot_uniform"},
                           "train": {"batch_size": 16, "epochs": 60, "lr": 0.3}})
    v, ev, h = vs[0], vs[0].evidence, runs[0].history
    assert v.label == "converged" and v.labels == ("converged",)
    assert ev["start_loss"] == _sig(h["train_loss"][0])
    assert ev["final_train_loss"] == _sig(h["train_loss"][-1])
    assert ev["final_acc"] == _sig(h["val_acc"][-1]) >= 0.9


# ----------------------------------------------------------------------------- constructed views


def _view(losses, lr=1.0, status="ok", **cols) -> RunView:
    n = len(losses)
    hist = {"epoch": list(range(n)), "train_loss": list(losses), "lr": [lr] * n}
    hist.update({k: list(v) for k, v in cols.items()})
    return RunView(0, {"lr": lr}, status, None, hist, 2, {"optimizer": "sgd"})


def test_a_spike_that_recovers_is_explained_by_sharpness_not_a_wrong_gradient():
    """Seed 001: "is the loss spike at lr 1 a wrong gradient or divergence?"."""
    losses = [0.7, 2.5, 1.9, 0.9, 0.6] + [0.3 - 0.001 * i for i in range(25)]
    sharp = [6.0, 4.0, 1.2] + [None] * 27
    v = verdicts.judge(_view(losses, lr=1.0, sharpness=sharp))
    ev = v.evidence
    assert v.label == "converged"
    assert ev["spike_epoch"] == 1 and ev["spike_loss"] == 2.5
    assert ev["sharpness_init"] == 6.0 and ev["stability_lr"] == _sig(2 / 6)
    assert ev["sharpness_after"] == 1.2 and ev["sharpness_after_epoch"] == 2
    assert "not a wrong gradient" in v.explanation and "flatter region" in v.explanation


def test_a_spike_after_large_steps_or_at_the_edge_of_stability_is_explained_so():
    losses = [0.7, 0.69, 2.4, 1.0, 0.5] + [0.3 - 0.001 * i for i in range(25)]
    flat = [0.5, 0.4, None] + [None] * 27  # limit 2/0.4 = 5 > lr 1 before the spike
    big = [None, 0.6, 0.05] + [0.01] * 27
    v = verdicts.judge(_view(losses, sharpness=flat, update_ratio_l1=big))
    assert v.evidence["update_ratio_max_before_spike"] == 0.6
    assert v.evidence["sharpness_before_spike"] == 0.4
    assert "steps before it were large" in v.explanation
    edge = [0.5, 3.0, None] + [None] * 27  # limit 2/3 < lr 1 at epoch 1
    v = verdicts.judge(_view(losses, sharpness=edge, update_ratio_l1=big))
    assert v.evidence["sharpness_over"] == 3.0 and v.evidence["sharpness_over_epoch"] == 1
    assert "edge of stability" in v.explanation


def test_dead_units_in_a_run_that_learned_are_a_secondary_label():
    """Seed 000: "do the dead ReLUs matter?" - not when the run still learns."""
    n = 40
    losses = [1.4 * 0.8 ** i + 0.2 for i in range(n)]
    dead = [0.1] * 5 + [0.7] * (n - 5)
    v = verdicts.judge(_view(losses, dead_frac_l2=dead, dead_frac=[0.3] * n,
                             top_class_share=[0.3] * n, majority_share=[0.3] * n,
                             train_acc=[0.9] * n))
    assert v.label == "converged" and v.labels == ("converged", "dead_relu")
    assert v.evidence["dead_frac_layer"] == 0.7 and v.evidence["dead_since_epoch"] == 5
    assert "Also: 70% of the layer-2 ReLUs dead from epoch 5" in v.explanation


def test_without_probes_a_flat_loss_at_ln_c_is_collapsed():
    losses = [math.log(2) * (1 + 1e-4 * (-1) ** i) for i in range(30)]
    v = verdicts.judge(_view(losses, train_acc=[0.5] * 30))
    assert v.label == "collapsed" and v.evidence["chance_loss"] == _sig(math.log(2))


def test_every_label_is_known_and_ruled():
    assert set(verdicts.RULES) == set(verdicts.LABELS) == set(verdicts.PRIORITY)


# ----------------------------------------------------------------------------- recommendation


def _curve(final_val: float, learned: bool, n: int = 30) -> dict[str, list[float]]:
    end = 0.3 if learned else 1.38
    tl = [1.4 + (end - 1.4) * min(1, i / 10) for i in range(n)]
    return {"epoch": list(range(n)), "train_loss": tl, "val_loss": [final_val] * n,
            "val_acc": [0.9 if learned else 0.25] * n}


def _group(outcomes: dict[float, list[tuple[float, bool]]]):
    views, i = [], 0
    for lr, runs in outcomes.items():
        for seed, (val, learned) in enumerate(runs):
            views.append(RunView(i, {"lr": lr, "seed": seed}, "ok", None, _curve(val, learned)))
            i += 1
    return views, verdicts.judge_all(views)


def test_recommendation_picks_the_best_validation_loss_and_the_converged_range():
    views, vs = _group({0.001: [(1.38, False)] * 3, 0.01: [(0.5, True)] * 3,
                        0.1: [(0.3, True), (0.35, True), (0.32, True)],
                        1.0: [(0.9, True), (1.38, False), (1.38, False)]})
    rec = verdicts.recommend(views, vs)
    assert rec.best_lr == 0.1 and rec.lr_range == (0.01, 0.1) and not rec.at_edge
    assert rec.converged_share[0.1] == 1.0 and rec.learned_share[1.0] == pytest.approx(1 / 3)
    assert "Best lr 0.1" in rec.text and "[0.01, 0.1]" in rec.text


def test_recommendation_warns_when_the_best_lr_is_at_the_edge():
    views, vs = _group({0.01: [(0.6, True)] * 2, 0.1: [(0.4, True)] * 2})
    rec = verdicts.recommend(views, vs)
    assert rec.best_lr == 0.1 and rec.at_edge and "largest one swept" in rec.text


def test_no_recommendation_when_no_lr_trains_for_most_seeds():
    views, vs = _group({0.01: [(1.38, False)] * 3, 0.1: [(0.4, True), (1.38, False),
                                                           (1.38, False)]})
    rec = verdicts.recommend(views, vs)
    assert rec.best_lr is None and "No lr trained for most" in rec.text
    assert "lr 0.1 1/3" in rec.text


# ----------------------------------------------------------------------------- end to end


def test_sweep_stores_verdicts_export_has_them_and_explain_prints_them(tmp_path):
    from lrlab import cli
    from lrlab.export import records

    doc = {"data": {"source": "blobs", "n": 200, "classes": 4, "split": "last"},
           "model": {"hidden": [10, 10, 10, 10], "activation": "relu", "init": "normal:0.05"},
           "train": {"batch_size": 64, "epochs": 12}, "sweep": {"lr": [0.5, 0.001]}}
    out = tmp_path / "exp"
    runner.sweep(doc, out, report=False)
    recs = records(out)
    for r in recs:
        v = r["verdict"]
        assert set(v) >= {"label", "labels", "evidence", "explanation"}
        assert v["label"] in verdicts.LABELS and v["evidence"] and v["explanation"]
    slow_lr = next(r for r in recs if r["member"]["lr"] == 0.001)
    assert slow_lr["verdict"]["label"] == "collapsed"
    res = CliRunner().invoke(cli.app, ["explain", str(out), "--lr", "0.001"])
    assert res.exit_code == 0, res.output
    assert "collapsed" in res.output and "one class" in res.output
    assert "evidence:" in res.output and "top_class_share=1" in res.output
    from lrlab.store import Store

    store = Store.open(out)
    try:
        rec = json.loads(store.meta()["recommendation"])
    finally:
        store.close()
    assert rec[0]["text"] and "learned_share" in rec[0]


# ----------------------------------------------------------------------------- converged is earned


def _late(n: int = 40, rise: float = 0.0, acc: float = 0.9, **cols) -> RunView:
    """A loss that falls to 0.3 by epoch 20, then stays (or rises by `rise` over the last
    fifth), with the given accuracy on a balanced 2-class problem."""
    losses = [0.7 - 0.4 * min(1, i / 20) for i in range(n)]
    k = int(round(0.2 * (n - 1)))
    for j in range(k):
        losses[n - k + j] = 0.3 * (1 + rise * (j + 1) / k)
    return _view(losses, train_acc=[acc] * n, val_acc=[acc] * n,
                 val_loss=losses, majority_share=[0.5] * n, **cols)


def test_a_run_whose_loss_rose_at_the_end_is_not_converged():
    flat = verdicts.judge(_late(rise=0.0))
    assert flat.label == "converged" and flat.evidence["baseline_acc"] == 0.5
    rose = verdicts.judge(_late(rise=0.2))
    assert rose.label == "oscillating" and "converged" not in rose.labels
    assert rose.evidence["late_rise"] == pytest.approx(0.2, rel=1e-3)
    assert rose.evidence["late_rise_from"] == pytest.approx(0.3)
    assert "rose at the end" in rose.explanation
    small = verdicts.judge(_late(rise=0.03))  # within LATE_RISE_MIN: settled
    assert small.label == "converged"


def test_a_run_at_the_majority_baseline_is_never_converged():
    """The loss fell by 57%, but the accuracy is that of always answering one class."""
    at_chance = verdicts.judge(_late(acc=0.52))
    assert at_chance.label == "slow" and "converged" not in at_chance.labels
    assert at_chance.evidence["final_acc"] == 0.52 and at_chance.evidence["baseline_acc"] == 0.5
    assert "no better than always answering" in at_chance.explanation
    # 0.1 above the baseline is the margin (ACC_MARGIN)
    assert verdicts.judge(_late(acc=0.59)).label == "slow"
    assert verdicts.judge(_late(acc=0.61)).label == "converged"
    # without probes the baseline is 1/C
    n = 40
    losses = [0.7 - 0.4 * min(1, i / 20) for i in range(n)]

    def four_classes(acc: float) -> RunView:
        return RunView(0, {"lr": 1.0}, "ok", None, {"epoch": list(range(n)), "train_loss": losses,
                                                   "train_acc": [acc] * n, "lr": [1.0] * n}, 4, {})

    assert verdicts.judge(four_classes(0.3)).label == "slow"  # below 1/4 + 0.1
    assert verdicts.judge(four_classes(0.4)).label == "converged"


def test_a_net_that_memorised_random_labels_overfits_and_one_that_did_not_is_not_converged():
    n = 40
    losses = [0.7 - 0.4 * min(1, i / 20) for i in range(n)]
    mem = verdicts.judge(_view(losses, train_acc=[1.0] * n, val_acc=[0.5] * n,
                               val_loss=[0.7] * n, majority_share=[0.5] * n))
    assert mem.label == "overfitting" and "memorised" in mem.explanation
    assert mem.evidence["acc_gap"] == 0.5 and mem.evidence["baseline_acc"] == 0.5
    neither = verdicts.judge(_view(losses, train_acc=[0.55] * n, val_acc=[0.5] * n,
                                   val_loss=[0.7] * n, majority_share=[0.5] * n))
    assert neither.label == "slow" and "converged" not in neither.labels


def test_a_saturated_run_at_chance_accuracy_is_saturated_not_converged():
    """Seed 001 at init scale 3 and lr 0.01: the loss fell from 18 to 14.6 (19%), accuracy 11%,
    98% of the units saturated: a failure, labelled by its cause."""
    n = 30
    losses = [18.1 - 3.5 * min(1, i / 5) for i in range(n)]
    v = verdicts.judge(_view(losses, train_acc=[0.11] * n, val_acc=[0.11] * n,
                             majority_share=[0.52] * n, sat_frac_l1=[0.98] * n,
                             sat_frac=[0.98] * n))
    assert v.label == "saturated" and "converged" not in v.labels
    assert v.evidence["sat_frac_layer"] == 0.98


def test_a_run_that_never_learned_is_never_overfitting():
    """Collapsed: one class for every input, at the baseline accuracy; its validation loss
    rising while the training loss creeps down does not make it overfitting."""
    n = 40
    tl = [1.386 - 0.001 * i for i in range(n)]
    vl = [1.386 + 0.01 * i for i in range(n)]
    v = verdicts.judge(_view(tl, val_loss=vl, train_acc=[0.4] * n, val_acc=[0.2] * n,
                             top_class_share=[1.0] * n, majority_share=[0.4] * n,
                             output_spread=[0.01] * n))
    assert v.label == "collapsed" and "overfitting" not in v.labels


# ----------------------------------------------------------------------------- ranges and selection


def _views(outcomes: dict[float, list[tuple[float, float, bool]]]) -> list[RunView]:
    """Per lr, seeds of (final val loss, final val acc, learned)."""
    views, i = [], 0
    for lr, runs in outcomes.items():
        for seed, (val, acc, learned) in enumerate(runs):
            c = _curve(val, learned)
            c["val_acc"] = [acc] * len(c["epoch"])
            views.append(RunView(i, {"lr": lr, "seed": seed}, "ok", None, c))
            i += 1
    return views


def test_converged_ranges_are_the_runs_of_consecutive_lrs_where_every_seed_converged():
    good, bad = (0.4, 0.9, True), (1.38, 0.25, False)
    views = _views({0.001: [bad] * 2, 0.01: [good] * 2, 0.1: [good] * 2,
                    1.0: [good, bad], 3.0: [good] * 2, 10.0: [bad] * 2})
    vs = verdicts.judge_all(views)
    rec = verdicts.recommend(views, vs)
    assert rec.lr_ranges == [(0.01, 0.1), (3.0, 3.0)]
    assert rec.lr_range == (0.01, 0.1)  # the widest
    assert "Every seed converged for lr in [0.01, 0.1] and lr 3." in rec.text
    assert verdicts.converged_ranges([1, 2, 3], {1: 1.0, 2: 1.0, 3: 1.0}) == [(1, 3)]
    assert verdicts.converged_ranges([1, 2, 3], {1: 0.5, 2: 0.0, 3: 0.99}) == []


def test_overfitting_runs_do_not_count_as_converged_in_the_ranges():
    good = (0.4, 0.9, True)
    views = _views({0.01: [good] * 2, 0.1: [good] * 2, 1.0: [good] * 2})
    vs = dict(verdicts.judge_all(views))
    assert all(v.label == "converged" for v in vs.values())
    for v in views:
        if v.swept["lr"] == 0.1 and v.swept["seed"] == 1:
            vs[v.member] = verdicts.Verdict("overfitting", ("overfitting",))
    rec = verdicts.recommend(views, vs)
    assert rec.lr_ranges == [(0.01, 0.01), (1.0, 1.0)] and rec.converged_share[0.1] == 0.5
    assert "[0.01, 1]" not in rec.text


def test_no_range_is_claimed_when_no_lr_converged_for_every_seed():
    views = _views({0.46: [(0.5, 0.9, True)], 1.0: [(1.38, 0.25, False)]})
    vs = dict(verdicts.judge_all(views))
    vs[0] = verdicts.Verdict("slow", ("slow",))
    rec = verdicts.recommend(views, vs)
    assert rec.best_lr == 0.46 and rec.lr_ranges == [] and rec.lr_range is None
    assert "Every seed converged" not in rec.text


def test_select_chooses_by_loss_or_accuracy_and_says_when_they_disagree():
    views = _views({0.01: [(0.5, 0.80, True)] * 3, 0.1: [(0.30, 0.85, True)] * 3,
                    1.0: [(0.35, 0.95, True)] * 3})
    vs = verdicts.judge_all(views)
    by_loss = verdicts.recommend(views, vs)
    assert by_loss.best_lr == 0.1 and by_loss.metric == "val_loss"
    assert by_loss.best_by == {"val_loss": 0.1, "val_acc": 1.0} and by_loss.disagree
    assert "By validation accuracy the best lr is 1 instead" in by_loss.text
    by_acc = verdicts.recommend(views, vs, select="val_acc")
    assert by_acc.best_lr == 1.0 and by_acc.metric == "val_acc"
    assert "highest median final validation accuracy" in by_acc.text
    assert "By validation loss the best lr is 0.1 instead" in by_acc.text
    same = _views({0.1: [(0.3, 0.95, True)], 1.0: [(0.4, 0.9, True)]})
    rec = verdicts.recommend(same, verdicts.judge_all(same), select="val_acc")
    assert rec.best_lr == 0.1 and not rec.disagree and "instead" not in rec.text
    with pytest.raises(ValueError, match="select"):
        verdicts.recommend(same, verdicts.judge_all(same), select="train_loss")


def test_select_flag_reaches_the_spec_and_the_stored_recommendation(tmp_path, monkeypatch):
    from lrlab import cli
    from lrlab.store import Store

    seen = {}

    def fake(spec, target, command, quiet, overwrite=False):
        seen["spec"] = spec

    monkeypatch.setattr(cli, "run_sweep", fake)
    res = CliRunner().invoke(cli.app, ["sweep", "--data", "iris", "--select", "val_acc",
                                       "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    assert seen["spec"].run.select == "val_acc"
    res = CliRunner().invoke(cli.app, ["sweep", "--data", "iris", "--select", "acc",
                                       "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "select" in res.output and "val_loss, val_acc" in res.output
    assert not (tmp_path / "y").exists()
    out = tmp_path / "api"
    runner.sweep({"data": {"source": "iris", "split": "stratified"},
                  "model": {"hidden": [6]}, "train": {"epochs": 3, "batch_size": 16},
                  "sweep": {"lr": [0.03, 0.3]}, "run": {"probes": False}}, out,
                 report=False, select="val_acc")
    store = Store.open(out)
    try:
        rec = json.loads(store.meta()["recommendation"])[0]
    finally:
        store.close()
    assert rec["select"] == "val_acc" and rec["metric"] == "val_acc"
    assert set(rec["best_by"]) == {"val_loss", "val_acc"} and "lr_ranges" in rec
    assert rec["lr_range"] is None or list(rec["lr_range"]) in rec["lr_ranges"]
    with pytest.raises(ValueError, match="select"):
        runner.sweep({"data": {"source": "iris"}}, tmp_path / "bad", select="acc")
    assert not (tmp_path / "bad").exists()


def test_the_report_reads_each_optimizers_edge_for_its_sharpness_line():
    from lrlab import report

    def rec(lr: float, opt: dict, key: str, lam: float) -> dict:
        return {"id": 0, "member": {"lr": lr}, "status": "ok", "verdict": None,
                "final": {}, "optimizer_setup": opt,
                "history": {"epoch": [0, 1], key: [None if key != "sharpness" else lam, lam]}}

    sgd = rec(0.1, {"optimizer": "sgd"}, "sharpness", 8.0)
    mom = rec(0.1, {"optimizer": "momentum", "momentum": 0.9}, "sharpness", 8.0)
    adam = rec(0.01, {"optimizer": "adam", "beta1": 0.9}, "precond_sharpness", 100.0)
    t = report.sharpness_table([("sgd", [sgd]), ("momentum", [mom]), ("adam", [adam])])
    rows = {r[0].text: r for r in t.rows}
    assert [rows[k][2].text for k in ("sgd", "momentum", "adam")] == [
        "2/λ", "(2 + 2·0.9)/λ", "38/λ_P"]
    assert rows["sgd"][5].sort == pytest.approx(2 / 8)
    assert rows["momentum"][5].sort == pytest.approx(3.8 / 8)
    assert rows["adam"][5].sort == pytest.approx(38 / 100)
    assert rows["adam"][3].sort is None  # no preconditioned sharpness before the first step
    assert report.probe_series(adam["history"], "lr_sharpness", 0.01,
                               report.edge_of_rec(adam))[1] == pytest.approx(0.01 * 100 / 38)
