"""The range test: the divergence point of a quadratic, the user's model left alone, seeds as a
cohort equal to seeds alone, the suggestion rules on hand-made curves, and the CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lrlab import cli, finder
from lrlab.errors import LrlabError

# ----------------------------------------------------------------------------- rules


LRS = 10 ** np.linspace(-5, 0, 51)  # 0.1 decade apart: LRS[20] = 1e-3


def test_steepest_picks_the_inflection_of_a_falling_curve():
    losses = 2 - np.tanh(np.log10(LRS) + 3)  # falls fastest at lr = 1e-3, by 1 per decade
    s = finder.steepest(LRS, losses)
    assert s.lr == pytest.approx(1e-3) and s.rule == "steepest"
    assert s.evidence["slope_per_decade"] == pytest.approx(-1.0, rel=0.02)


def test_window_slope_is_exact_on_lines_and_tames_noise():
    x = np.log10(LRS)
    np.testing.assert_allclose(finder.window_slope(x, 3 * x + 1, 2), 3.0)
    noisy = 3 * x + np.random.default_rng(0).normal(0, 0.05, len(x))
    assert np.std(finder.window_slope(x, noisy, 2)) < 0.5 * np.std(np.gradient(noisy, x))


def test_steepest_ignores_drops_past_the_minimum():
    x = np.log10(LRS)
    losses = 2 - np.tanh((x + 3) / 0.5) * 0.5  # gentle fall, steepest at 1e-3 ...
    losses[35:] = losses[34] + 5 * (x[35:] - x[34])  # ... then a rise past the minimum
    losses[45:48] = losses[44] - 12 * (x[45:48] - x[44])  # a cliff (12 per decade) ...
    losses[48:] = losses[47]  # ... that stays far above the minimum
    assert finder.steepest(LRS, losses).lr == pytest.approx(1e-3)
    assert finder.steepest(LRS, np.linspace(1, 2, 51)).lr is None  # never falls: no lr


def test_min10_is_a_tenth_of_the_minimum():
    losses = (np.log10(LRS) - np.log10(LRS[37])) ** 2 + 1
    s = finder.min10(LRS, losses)
    assert s.lr == pytest.approx(LRS[37] / 10) and s.evidence["min_lr"] == LRS[37]


def test_valley_on_hand_made_curves():
    # strictly falling over points 0..19, then rising: fastai's loop sets max_end = 19 and
    # max_start = 19 - lds[19] = 19 - 20 = -1; sections = 20/3; idx = -1 + 6 + 3 = 8
    down = np.r_[np.linspace(3, 1, 20), np.linspace(1.05, 2, 10)]
    assert finder.valley(LRS[:30], down).lr == pytest.approx(LRS[8])
    # flat for 10 points, falling for 15, rising: max_end = 24, max_start = 24 - 16 = 8;
    # sections = 16/3; idx = 8 + 5 + 2 = 15
    flat = np.r_[np.ones(10), np.linspace(0.95, 0.3, 15), np.linspace(0.35, 2, 10)]
    assert finder.valley(LRS[:35], flat).lr == pytest.approx(LRS[15])
    assert finder.valley(LRS[:5], np.arange(5.0)).lr is None  # rising only: no valley


def _fastai_valley_idx(losses):
    """fastai.callback.schedule.valley's index, verbatim (the oracle)."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def test_valley_matches_fastai_on_random_curves():
    rng = np.random.default_rng(0)
    for _ in range(30):
        losses = np.cumsum(rng.normal(0, 1, 60)) + np.linspace(0, -20, 60) * rng.uniform()
        want = max(0, _fastai_valley_idx(list(losses)))
        assert finder.valley(LRS[:60] if len(LRS) >= 60 else 10 ** np.linspace(-5, 0, 60),
                             losses).lr == pytest.approx((10 ** np.linspace(-5, 0, 60))[want])


def _row(rule, factor, lr, losses, accs=None):
    """A check row as check_rows builds it from each seed's final loss (None = diverged)."""
    return finder.check_rows([(rule, factor, lr)], {lr: losses},
                             None if accs is None else {lr: accs})[0]


def _trio(rule, base, losses):  # bases 100x apart: each trio its own lrs
    return [_row(rule, f, base * f, v) for f, v in zip((0.3, 1.0, 3.0), losses)]


def _around(m, half=0.01):
    return [m - half, m, m + half / 2, m - half / 2, m + half]  # 5 seeds, range m +- half


def test_check_verdicts_name_the_direction():
    rows = (_trio("ok", 1e-6, [_around(0.5), _around(0.3), _around(0.4)])
            + _trio("low", 1e-4, [_around(0.5), _around(0.3), _around(0.2)])
            + _trio("high", 1e-2, [_around(0.1), _around(0.3), _around(0.9)])
            # x3's median is 3% lower, but inside x1's seed range: no direction
            + _trio("tie", 1.0, [_around(0.5), _around(0.302, 0.03), _around(0.293, 0.03)])
            + _trio("noisy", 100.0, [_around(0.1), _around(0.3), _around(0.2)])
            + _trio("dead", 1e4, [[None] * 5] * 3))
    v = finder.Check("val_loss", 3, rows).verdicts()
    assert v["ok"].startswith("confirmed") and "too low" in v["low"] and "too high" in v["high"]
    assert "no clear winner" in v["tie"] and "x3" in v["tie"]
    assert "noisy" in v["noisy"] and "diverged" in v["dead"]


def test_clearly_better_is_complete_separation_of_the_seeds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = rng.normal(0, 1, 5).round(1), rng.normal(rng.uniform(-3, 3), 1, 4).round(1)
        for lower in (True, False):
            want = all((x < y) if lower else (x > y) for x in a for y in b)  # every pair
            assert finder.clearly_better(list(a), list(b), lower) == want
    assert not finder.clearly_better([0.9, 0.9], [0.9, 0.9], False)  # equal: no winner
    assert not finder.clearly_better([], [1.0], True)
    # the chance of a separation between equals, counted over every ordering of 3 + 2 seeds
    import itertools

    hits = sum(finder.clearly_better(list(p[:3]), list(p[3:]), True)
               or finder.clearly_better(list(p[3:]), list(p[:3]), True)
               for p in itertools.permutations(range(5)))
    assert finder.separation_chance(3, 2) == pytest.approx(hits / 120)


def test_nice_is_the_nearest_one_two_five_number():
    series = np.array([m * 10.0**e for e in range(-9, 3) for m in (1, 2, 5)])
    for x in 10 ** np.random.default_rng(1).uniform(-8, 1.5, 300):
        got = finder.nice(float(x))
        assert np.isclose(series, got, rtol=1e-12).any()
        assert abs(math.log10(got / x)) <= np.abs(np.log10(series / x)).min() + 1e-12


def test_recommend_a_difference_inside_the_seed_range_is_a_tie_won_by_the_lower_lr():
    rows = [_row("valley", 1.0, 0.03, [0.60, 0.64, 0.70, 0.66, 0.62]),
            _row("steepest", 1.0, 0.1, [0.30, 0.35, 0.40, 0.33, 0.38]),
            # median 0.30 against 0.35: better, but inside the seed range of lr 0.1
            _row("min10", 1.0, 0.3, [0.28, 0.31, 0.45, 0.29, 0.30])]
    rec = finder.Check("train_loss", 5, rows).recommend()
    assert (rec.lr, rec.rule) == (0.1, "tie") and "the lowest lr is taken" in rec.text
    ev = rec.evidence
    assert ev["tied_with"] == [0.3] and ev["best_median_lr"] == 0.3
    assert ev["metrics"] == ["train_loss"] and ev["decided_by"] == ["train_loss"]  # vs 0.03
    assert "nothing was separated" not in rec.text
    # one failed seed at each higher lr: nothing beats the lowest, and the text says so
    rows = [_row("a", 1.0, 0.01, _around(0.9)), _row("b", 1.0, 0.03, [0.4, 0.5, 1.1, 0.4, 0.45]),
            _row("c", 1.0, 0.1, [0.3, 0.35, 0.3, 1.1, 0.32])]
    rec = finder.Check("val_loss", 5, rows).recommend()
    assert (rec.lr, rec.rule) == (0.01, "tie") and "nothing was separated" in rec.text
    beaten = {c["lr"]: c["beaten_by"] for c in ev["candidates"]}
    assert beaten == {0.03: {"0.1": ["train_loss"], "0.3": ["train_loss"]}, 0.1: {}, 0.3: {}}


def test_recommend_a_clear_winner_wins_even_when_higher():
    rows = [_row("a", 1.0, 0.03, _around(0.60)), _row("b", 1.0, 0.1, _around(0.35)),
            _row("c", 1.0, 0.3, _around(0.20))]
    rec = finder.Check("val_loss", 5, rows).recommend()
    assert (rec.lr, rec.rule) == (0.3, "clear") and rec.evidence["decided_by"] == ["val_loss"]
    assert rec.evidence["tied_with"] == [] and "more seeds" not in rec.text
    two = finder.Check("val_loss", 5, [_row("a", 1.0, 0.1, [0.5, 0.6]),
                                       _row("b", 1.0, 0.3, [0.2, 0.3])]).recommend()
    assert (two.lr, two.rule) == (0.3, "clear") and "33% of the time" in two.text
    # a higher lr whose seeds scatter (one diverged, one at 2.0) is beaten by no one and
    # beats no one: a tie, which the lower lr takes
    rows.append(_row("d", 1.0, 1.0, [0.1, None, 0.2, 2.0, 0.3]))
    rec = finder.Check("val_loss", 5, rows).recommend()
    assert (rec.lr, rec.rule) == (0.3, "tie") and rec.evidence["tied_with"] == [1.0]
    d = rec.evidence["candidates"][-1]
    assert d["diverged"] == 1 and d["val_loss"]["max"] == 2.0 and d["beaten_by"] == {}


def test_recommend_accuracy_overrules_a_small_loss_gain():
    """The issue's case: x3 has a 2.6% lower validation loss (inside the seed range) while
    accuracy falls from 0.974 to 0.921 on every seed: the suggestion is not "too low"."""
    lo = _row("valley", 1.0, 0.1, [0.190, 0.200, 0.205, 0.195, 0.230],
              [0.974, 0.974, 0.947, 0.974, 0.974])
    hi = _row("valley", 3.0, 0.3, [0.185, 0.195, 0.199, 0.180, 0.240],
              [0.921, 0.895, 0.921, 0.921, 0.921])
    check = finder.Check("val_loss", 20, [lo, hi])
    rec = check.recommend()
    assert (rec.lr, rec.rule) == (0.1, "clear")
    assert rec.evidence["decided_by"] == ["val_acc"]
    assert rec.evidence["metrics"] == ["val_loss", "val_acc"]
    assert check.verdicts()["valley"].startswith("confirmed")


def test_recommend_loss_and_accuracy_disagreeing_is_a_tie_that_says_so():
    a = _row("r", 1.0, 0.1, _around(0.40), _around(0.95))
    b = _row("r", 3.0, 0.3, _around(0.20), _around(0.85))
    rec = finder.Check("val_loss", 20, [a, b]).recommend()
    assert (rec.lr, rec.rule) == (0.1, "tie")
    assert "val_loss favours 0.3" in rec.text and "val_acc favours 0.1" in rec.text


def test_recommend_when_every_run_diverged():
    rec = finder.Check("val_loss", 2, [_row("r", 1.0, 5.0, [None, None])]).recommend()
    assert rec.lr is None and rec.rule == "none"


# ----------------------------------------------------------------------------- quadratic


def _least_squares(n: int = 64, d: int = 4):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)) * np.array([3.0, 1.0, 0.5, 0.2])
    y = X @ (2 * rng.normal(size=d)) + 1.0 + 0.1 * rng.normal(size=n)
    A = np.c_[X, np.ones(n)]  # nn.Linear's bias is a weight on a ones column
    lam_max = np.linalg.eigvalsh(2 / n * A.T @ A).max()  # Hessian of mean((A theta - y)^2)
    return X, y, A, lam_max


def _replica(A, y, w0, lrs, beta, th):
    """Plain-numpy GD along the same ramp: loss after each step, EMA, threshold."""
    w, avg, best, n = w0.copy(), 0.0, math.inf, 0
    for lr in lrs:
        w = w - lr * 2 / len(y) * A.T @ (A @ w - y)
        loss = np.mean((A @ w - y) ** 2)
        n += 1
        avg = beta * avg + (1 - beta) * loss
        s = avg / (1 - beta**n)
        if s > th * best:
            return lr
        best = min(best, s)
    return None


def test_divergence_point_of_least_squares_is_two_over_lambda_max():
    """Full-batch GD on least squares diverges exactly for lr > 2/lambda_max.

    A range test ramps the lr while it trains, so "where it diverges" needs care: the error
    along the top-curvature direction is multiplied by |1 - lr lambda_max| per step, so the
    ramp first shrinks it and, past the edge, must grow it back beyond 4x the best smoothed
    loss. Started far below the edge (1e-2 x) that lag puts the reported point ~1.2x beyond
    2/lambda_max; started at 0.95x the edge, with a slow linear ramp (300 steps to 1.5x) and
    no batch noise, the finder must land in [1, 1.1] x 2/lambda_max, and never before it:
    below the edge every step lowers the loss.
    """
    X, y, A, lam_max = _least_squares()
    edge = 2 / lam_max
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.tensor(X), torch.tensor(y)[:, None]), batch_size=len(y))
    model = nn.Linear(X.shape[1], 1).double()
    r = finder.find_lr(model, loader, nn.MSELoss(), optimizer="sgd", start_lr=0.95 * edge,
                       end_lr=1.5 * edge, num_iter=300, mode="linear", seeds=3, check=False)
    assert edge <= r.diverge_lr <= 1.1 * edge, r.diverge_lr / edge
    for c in r.per_seed:
        assert edge <= c.diverge_lr <= 1.1 * edge
    # and it is that GD ramp: seed 0's init (manual_seed(0); reset_parameters()) in numpy
    torch.manual_seed(0)
    lin = nn.Linear(X.shape[1], 1, dtype=torch.float64)  # drawn in float64, as the copies are
    w0 = np.r_[lin.weight.detach().numpy().ravel(), lin.bias.detach().numpy()]
    want = _replica(A, y, w0, finder.ramp(r.settings), 0.98, 4.0)
    assert r.per_seed[0].diverge_lr == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------------- user modules


def _loader(n=48, d=3, classes=2, dtype=torch.float64, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    y = (X[:, 0] + 0.3 * torch.randn(n, generator=g, dtype=dtype) > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch,
                                       shuffle=True)


def test_user_model_and_optimizer_left_bit_identical():
    loader = _loader(dtype=torch.float32)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
    x, y = next(iter(loader))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()  # the optimizer has state to lose
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {k: v.clone() for k, v in opt.state[model[0].weight].items()}
    rng_before = torch.get_rng_state()
    r = finder.find_lr(model, loader, nn.CrossEntropyLoss(), optimizer=opt, seeds=3,
                       num_iter=40, val_loader=loader, check=True, check_epochs=1)
    assert r.optimizer == "adam" and r.check is not None and r.check.rows
    assert r.check.metric == "val_loss" and len(r.check.rows) == 9
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    for k, v in opt_before.items():
        assert torch.equal(opt.state[model[0].weight][k], v), k
    assert opt.param_groups[0]["lr"] == 0.01
    assert not model.training and not model[0].training
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_module_find_checks_by_default_and_recommends_a_trained_candidate():
    loader = _loader(dtype=torch.float32)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    kw = dict(seeds=2, num_iter=20, start_lr=1e-3, end_lr=10.0)
    r = finder.find_lr(model, loader, nn.CrossEntropyLoss(), check_epochs=1, **kw)
    assert r.check is not None and r.check.metric == "train_loss"
    assert r.recommended.lr in {row.lr for row in r.check.rows}
    assert r.recommended.rule in ("clear", "tie") and r.summary()[0].startswith("Use lr ")
    off = finder.find_lr(model, loader, nn.CrossEntropyLoss(), check=False, **kw)
    assert off.check is None and off.recommended.lr is None

    class Stream(torch.utils.data.IterableDataset):  # a loader without a length
        def __iter__(self):
            yield from zip(*loader.dataset.tensors)

    stream = torch.utils.data.DataLoader(Stream(), batch_size=16)
    r = finder.find_lr(model, stream, nn.CrossEntropyLoss(), **kw)
    assert r.check is None and any("no length" in n for n in r.notices)


def test_a_torch_optimizer_lends_its_class_and_settings():
    from lrlab.finder_module import train_spec

    p = [nn.Parameter(torch.zeros(2))]
    t = train_spec(torch.optim.SGD(p, lr=0.3, momentum=0.8, nesterov=True, weight_decay=0.1))
    assert (t.optimizer, t.momentum, t.nesterov, t.weight_decay) == ("sgd", 0.8, True, 0.1)
    t = train_spec(torch.optim.AdamW(p, betas=(0.8, 0.99)))
    assert (t.optimizer, t.beta1, t.beta2, t.weight_decay) == ("adamw", 0.8, 0.99, 0.01)
    t = train_spec(torch.optim.RMSprop(p, alpha=0.9, centered=True))
    assert (t.optimizer, t.alpha, t.centered) == ("rmsprop", 0.9, True)
    with pytest.raises(LrlabError, match="amsgrad"):
        train_spec(torch.optim.Adam(p, amsgrad=True))
    with pytest.raises(LrlabError, match="optimizer"):
        train_spec(torch.optim.LBFGS(p))


def test_module_vmap_cannot_batch_falls_back_with_a_notice():
    loader = _loader(dtype=torch.float32)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="one at a time"):
        r = finder.find_lr(model, loader, nn.CrossEntropyLoss(), seeds=2, num_iter=20,
                           check=False)
    assert any("vmap" in n for n in r.notices)
    for k, v in before.items():  # BN running stats and num_batches_tracked too
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.parametrize("dropout", [False, True])
def test_five_seed_cohort_equals_five_single_seed_finds(dropout):
    layers = [nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh()]
    layers += [nn.Dropout(0.1)] if dropout else []  # dropout: the one-at-a-time fallback
    model = nn.Sequential(*layers, nn.Linear(8, 2)).double()
    loader = _loader()  # shuffles with torch's global RNG: seeded the same before each find
    kw = dict(num_iter=30, start_lr=1e-4, end_lr=3.0, optimizer="adam", check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(123)
        cohort = finder.find_lr(model, loader, nn.CrossEntropyLoss(), seeds=5, **kw)
        alone = []
        for s in range(5):
            torch.manual_seed(123)
            alone.append(finder.find_lr(model, loader, nn.CrossEntropyLoss(), seeds=[s], **kw))
    for s, one in enumerate(alone):
        a, b = cohort.per_seed[s], one.per_seed[0]
        assert a.seed == b.seed == s and len(a.raw) == len(b.raw)
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a.loss, b.loss, rtol=1e-10, atol=1e-12)
        assert a.diverge_lr == b.diverge_lr
    assert len({tuple(np.round(c.raw[:5], 6)) for c in cohort.per_seed}) == 5  # seeds differ


TORCH_OPT = {
    "sgd": lambda p: torch.optim.SGD(p), "momentum": lambda p: torch.optim.SGD(p, momentum=0.9),
    "nesterov": lambda p: torch.optim.SGD(p, momentum=0.9, nesterov=True),
    "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


@pytest.mark.parametrize("name", list(TORCH_OPT))
def test_module_find_matches_a_plain_torch_optim_ramp(name):
    """Every optimizer: seed 2's raw curve equals a hand-written torch.optim range test."""
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=8)
    r = finder.find_lr(model, loader, nn.CrossEntropyLoss(), optimizer=name, seeds=[2],
                       start_lr=1e-3, end_lr=0.5, num_iter=20, check=False)
    ref = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    torch.manual_seed(2)  # seed 2 = manual_seed(2), then reset_parameters() in modules() order
    for m in ref.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    opt = TORCH_OPT[name](ref.parameters())
    batches = [b for _ in range(5) for b in loader]
    want = []
    for t, lr in enumerate([*finder.ramp(r.settings), None]):
        xb, yb = batches[t]
        loss = nn.functional.cross_entropy(ref(xb), yb)
        if t:
            want.append(loss.item())  # the loss after the step with the previous lr
        if lr is not None:
            for group in opt.param_groups:
                group["lr"] = float(lr)
            opt.zero_grad()
            loss.backward()
            opt.step()
    got = r.per_seed[0].raw
    np.testing.assert_allclose(got, want[: len(got)], rtol=1e-9, atol=1e-12)


def test_lrlab_net_cohort_equals_single_seeds():
    spec = {"data": {"source": "blobs", "n": 200}, "model": {"hidden": [8, 8]},
            "train": {"optimizer": "momentum", "batch_size": 16}, "run": {"dtype": "float64"}}
    kw = dict(num_iter=40, start_lr=1e-4, end_lr=30.0, check=False)
    cohort = finder.find_lr(spec, seeds=3, **kw)
    for s in range(3):
        one = finder.find_lr(spec, seeds=[s], **kw).per_seed[0]
        np.testing.assert_allclose(cohort.per_seed[s].raw, one.raw, rtol=1e-10, atol=1e-12)
        assert cohort.per_seed[s].diverge_lr == one.diverge_lr
    assert cohort.diverge_lr is not None and cohort.optimizer == "momentum"
    lo, hi = np.asarray(cohort.curve.lo), np.asarray(cohort.curve.hi)
    assert np.all(lo <= cohort.curve.loss) and np.all(cohort.curve.loss <= hi)


def test_bad_settings_raise_one_sentence():
    model = nn.Linear(3, 2)
    for kw, key in ((dict(num_iter=5), "num_iter"), (dict(mode="cubic"), "mode"),
                    (dict(start_lr=1.0, end_lr=0.5), "end_lr"), (dict(smooth=1.0), "smooth"),
                    (dict(optimizer="lamb"), "optimizer"), (dict(seeds=0), "seeds")):
        with pytest.raises(LrlabError, match=key):
            finder.find_lr(model, _loader(dtype=torch.float32), nn.CrossEntropyLoss(), **kw)


# ----------------------------------------------------------------------------- CLI


runner = CliRunner()
IRIS = ["find", "--data", "iris", "--split", "random", "--validation-split", "0.25",
        "--data-seed", "42", "--model", "4-50-12-3", "--optimizer", "adam"]


def test_cli_json_has_the_promised_keys():
    res = runner.invoke(cli.app, [*IRIS, "--seeds", "3", "--first-seed", "2", "--num-iter",
                                  "60", "--epochs", "2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc["suggestions"]) == {"steepest", "valley", "min10"}
    assert all(v is None or v > 0 for v in doc["suggestions"].values())
    assert "diverge_lr" in doc and doc["seeds"] == [2, 3, 4]
    curve = doc["curve"]
    assert set(curve) == {"lr", "loss", "lo", "hi"} and len(curve["lr"]) > 20
    assert len({len(v) for v in curve.values()}) == 1
    assert np.all(np.diff(curve["lr"]) > 0) and curve["lr"][0] == pytest.approx(1e-7)


def test_cli_check_writes_plot_and_report(tmp_path):
    res = runner.invoke(cli.app, ["find", "--data", "blobs", "--n", "300", "--model", "2-8-4",
                                  "--preprocess", "standardize", "--seeds", "2", "--num-iter",
                                  "50", "--check", "--epochs", "2", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("Use lr ") and "check: 2 epochs" in res.stdout
    assert sum("<- use" in ln for ln in lines) == 1
    doc = json.loads((tmp_path / "find.json").read_text())
    assert doc["check"]["rows"] and doc["check"]["best"]["loss"] is not None
    rec = doc["recommended"]
    assert rec["lr"] == float(lines[0].split()[2].rstrip(":"))
    assert (tmp_path / "find.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and lines[0] in page


BLOBS = ["find", "--data", "blobs", "--n", "200", "--model", "2-8-4", "--preprocess",
         "standardize", "--seeds", "2", "--num-iter", "30", "--epochs", "1"]


def test_cli_checks_by_default_and_no_check_gives_the_ramp_only():
    on = runner.invoke(cli.app, [*BLOBS, "--json"])
    alias = runner.invoke(cli.app, [*BLOBS, "--check", "--json"])  # the old flag: a no-op
    off = runner.invoke(cli.app, [*BLOBS, "--no-check", "--json"])
    assert on.exit_code == alias.exit_code == off.exit_code == 0, on.output + off.output
    a, b, c = (json.loads(r.stdout) for r in (on, alias, off))
    assert a["check"]["epochs"] == 1 and len(a["check"]["rows"]) >= 3
    assert a["recommended"]["rule"] in ("clear", "tie") and a["recommended"]["lr"] > 0
    assert b["recommended"] == a["recommended"]  # same seeds, same numbers
    # the recommendation is one of the trained candidates, and matches its seeds' numbers
    rows = {r["lr"]: r for r in a["check"]["rows"]}
    assert a["recommended"]["lr"] in rows
    ev = a["recommended"]["evidence"]
    for cand in ev["candidates"]:
        seeds = [v for v in rows[cand["lr"]]["losses"] if v is not None]
        assert cand["val_loss"]["min"] == min(seeds) and cand["val_loss"]["max"] == max(seeds)
    assert c["check"] is None and c["recommended"]["lr"] is None
    assert c["recommended"]["rule"] == "unchecked"
    assert c["suggestions"] == a["suggestions"] and c["curve"] == a["curve"]  # same ramp
    text = runner.invoke(cli.app, [*BLOBS, "--no-check"]).stdout
    assert "Use lr" not in text and "not verified" in text


def test_cli_json_keeps_the_old_keys_and_adds_recommended():
    doc = json.loads(runner.invoke(cli.app, [*BLOBS, "--json"]).stdout)
    assert {"recommended", "suggestions", "diverge_lr", "curve"} <= set(doc)
    assert set(doc["recommended"]) >= {"lr", "rule", "evidence"}
    ev = doc["recommended"]["evidence"]
    assert {"metric", "metrics", "decided_by", "tied_with", "candidates", "epochs",
            "seeds"} <= set(ev)
    assert ev["metrics"] == ["val_loss", "val_acc"] and ev["seeds"] == 2


def _tree(d):
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(d.rglob("*"))}


@pytest.mark.parametrize("foreign", ["lrlab.sqlite", "report.html"])
def test_cli_out_refuses_another_result_and_overwrite_keeps_user_files(tmp_path, foreign):
    d = tmp_path / "sweep"
    (d / "figures").mkdir(parents=True)
    (d / foreign).write_bytes(b"a sweep's " + foreign.encode())
    (d / "notes.txt").write_text("mine")
    (d / "figures" / "a.png").write_bytes(b"png")
    before = _tree(d)
    res = runner.invoke(cli.app, [*BLOBS, "--no-check", "--out", str(d)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "--out" in res.output and foreign in res.output and "--overwrite" in res.output
    assert _tree(d) == before  # nothing written
    res = runner.invoke(cli.app, [*BLOBS, "--no-check", "--out", str(d), "--overwrite"])
    assert res.exit_code == 0, res.output
    after = _tree(d)
    for k in ("notes.txt", "figures", "figures/a.png"):
        assert after[k] == before[k]  # the user's files stay
    # --overwrite replaces the other result (lrlab's own files), nothing else
    assert set(after) == (set(before) - {foreign}) | {"find.json", "find.png", "report.html"}
    assert b"lrlab find" in after["report.html"]
    # a find folder is find's own: written again without --overwrite, user files kept
    res = runner.invoke(cli.app, [*BLOBS, "--no-check", "--out", str(d)])
    assert res.exit_code == 0, res.output
    assert _tree(d)["notes.txt"] == b"mine"


def test_cli_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "x"
    f.write_text("keep")
    res = runner.invoke(cli.app, [*BLOBS, "--no-check", "--out", str(f)])
    assert res.exit_code == 2 and "is a file" in res.output and f.read_text() == "keep"


def test_cli_takes_a_sweep_spec_file_ignoring_its_lr_axis(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "s"\n[data]\nsource = "blobs"\nn = 300\n[model]\nhidden = [8]\n'
                 '[sweep]\nlr = [0.1, 0.01]\nseeds = 3\n')
    res = runner.invoke(cli.app, ["find", str(f), "--num-iter", "30", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["seeds"] == [0, 1, 2]  # the file's seeds


@pytest.mark.parametrize("args,needle", [
    (["--mode", "cubic"], "--mode"),
    (["--start-lr", "-1"], "--start-lr"),
    (["--optimizer", "adam,sgd"], "optimizer"),
    (["--first-seed", "-3"], "--first-seed"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    res = runner.invoke(cli.app, [*IRIS, *args, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert needle in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
