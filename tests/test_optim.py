"""Batched optimizers against torch.optim (the oracle), member by member, in float64.

A small 2-layer tanh MLP is written out here with stacked parameters (`W: [K, fan_in,
fan_out]`, `b: [K, 1, fan_out]`); its twin is an `nn.Sequential` of `nn.Linear`s with the same
initial values, fed the same batches and trained by the matching `torch.optim` class.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import nn

from lrlab import optim
from lrlab.errors import LrlabError
from lrlab.spec import TrainSpec

DTYPE = torch.float64
SIZES = (4, 6, 3)  # in, hidden, classes
BATCH = 8
STEPS = 50
TEACHER = torch.randn(SIZES[0], SIZES[-1], generator=torch.Generator().manual_seed(0),
                      dtype=DTYPE)


# ----------------------------------------------------------------------------- the tiny task


def member_init(seed: int) -> list[torch.Tensor]:
    """One member's initial parameters [W1, b1, W2, b2] (W: [fan_in, fan_out], b: [1, fan_out])."""
    g = torch.Generator().manual_seed(1000 + seed)
    out = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:], strict=True):
        out.append(torch.randn(fan_in, fan_out, generator=g, dtype=DTYPE) * fan_in**-0.5)
        out.append(torch.randn(1, fan_out, generator=g, dtype=DTYPE) * 0.1)
    return out


def member_batches(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One member's fixed batches: X [STEPS, BATCH, in], y [STEPS, BATCH]."""
    g = torch.Generator().manual_seed(2000 + seed)
    x = torch.randn(STEPS, BATCH, SIZES[0], generator=g, dtype=DTYPE)
    y = (x @ TEACHER).argmax(-1)  # a learnable rule, so training really moves the weights
    return x, y


def stacked_init(seeds: list[int]) -> list[torch.Tensor]:
    """The members' initial parameters stacked: [K, fan_in, fan_out] and [K, 1, fan_out]."""
    return [torch.stack(ps) for ps in zip(*(member_init(s) for s in seeds), strict=True)]


def unchanged(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def cohort_loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member mean cross-entropy: [K]. x: [K, B, in], y: [K, B]."""
    w1, b1, w2, b2 = params
    h = torch.tanh(torch.bmm(x, w1) + b1)  # [K, B, hidden]
    logits = torch.bmm(h, w2) + b2  # [K, B, classes]
    logp = torch.log_softmax(logits, dim=-1)
    return -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(dim=1)


def run_cohort(name: str, trains: list[TrainSpec], seeds: list[int]):
    """Train K members at once with lrlab.optim; returns (final params, losses [STEPS, K])."""
    params = stacked_init(seeds)
    data = [member_batches(s) for s in seeds]
    xs = torch.stack([d[0] for d in data], dim=1)  # [STEPS, K, B, in]
    ys = torch.stack([d[1] for d in data], dim=1)
    # a member's TrainSpec names its optimizer (None-valued keys resolve to its defaults)
    hp = optim.hyperparams([replace(t, optimizer=name) for t in trains], dtype=DTYPE)
    opt = optim.make(name, hp)
    state = opt.init(params)
    losses = []
    for t in range(STEPS):
        ps = [p.detach().requires_grad_() for p in params]
        loss = cohort_loss(ps, xs[t], ys[t])
        grads = torch.autograd.grad(loss.sum(), ps)  # member k's grad is d loss_k
        before = [p.clone() for p in params]
        grads_before = [g.clone() for g in grads]
        updates, state = opt.update(list(grads), state, params, hp["lr"])
        assert unchanged(before, params), "update modified the params"
        assert unchanged(grads_before, list(grads)), "update modified the grads"
        params = [p + u for p, u in zip(params, updates, strict=True)]
        losses.append(loss.detach())
    return params, torch.stack(losses)


def torch_kwargs(name: str, t: TrainSpec) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The torch.optim class and arguments a member's TrainSpec stands for. A None in the spec
    means "the optimizer's default", so that key is left out and torch applies its own."""
    cls, kw = _torch_kwargs(name, t)
    return cls, {k: v for k, v in kw.items() if v is not None}


def _torch_kwargs(name: str, t: TrainSpec) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    fam = optim.FAMILY[name]
    if fam == "sgd":
        return torch.optim.SGD, dict(lr=t.lr, momentum=t.momentum, dampening=t.dampening,
                                     nesterov=t.nesterov, weight_decay=t.weight_decay)
    if fam == "adagrad":
        return torch.optim.Adagrad, dict(lr=t.lr, lr_decay=t.lr_decay, eps=t.eps,
                                         weight_decay=t.weight_decay,
                                         initial_accumulator_value=t.initial_accumulator_value)
    if fam == "rmsprop":
        return torch.optim.RMSprop, dict(lr=t.lr, alpha=t.alpha, eps=t.eps, momentum=t.momentum,
                                         centered=t.centered, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if fam == "adamw" else torch.optim.Adam
    return cls, dict(lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, weight_decay=t.weight_decay)


def run_torch(name: str, t: TrainSpec, seed: int):
    """The same member trained the plain way: nn.Sequential + torch.optim."""
    w1, b1, w2, b2 = member_init(seed)
    model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.Tanh(),
                          nn.Linear(SIZES[1], SIZES[2])).to(DTYPE)
    with torch.no_grad():
        model[0].weight.copy_(w1.T)
        model[0].bias.copy_(b1[0])
        model[2].weight.copy_(w2.T)
        model[2].bias.copy_(b2[0])
    cls, kw = torch_kwargs(name, t)
    opt = cls(model.parameters(), **kw)
    x, y = member_batches(seed)
    losses = []
    for s in range(STEPS):
        loss = nn.functional.cross_entropy(model(x[s]), y[s])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = [model[0].weight.T, model[0].bias[None], model[2].weight.T, model[2].bias[None]]
    return [p.detach() for p in final], torch.tensor(losses, dtype=DTYPE)


# ----------------------------------------------------------------------------- the cases

T = TrainSpec()
# name -> three members with different hyperparameters (K=1 uses the first)
CASES: dict[str, tuple[str, list[TrainSpec]]] = {
    "sgd": ("sgd", [replace(T, lr=0.3), replace(T, lr=0.05), replace(T, lr=1.0)]),
    "sgd+momentum": ("momentum", [replace(T, lr=0.1, momentum=0.9),
                                  replace(T, lr=0.2, momentum=0.0),
                                  replace(T, lr=0.05, momentum=0.5)]),
    "sgd+nesterov": ("nesterov", [replace(T, lr=0.1, momentum=0.9, nesterov=True),
                                  replace(T, lr=0.05, momentum=0.5, nesterov=True),
                                  replace(T, lr=0.1, momentum=0.8, nesterov=False)]),
    "sgd+dampening": ("sgd", [replace(T, lr=0.1, momentum=0.9, dampening=0.5),
                              replace(T, lr=0.3, momentum=0.0, dampening=0.5),
                              replace(T, lr=0.1, momentum=0.7, dampening=0.1)]),
    "adagrad": ("adagrad", [replace(T, lr=0.1, eps=1e-10),
                            replace(T, lr=0.3, initial_accumulator_value=0.1),
                            replace(T, lr=0.05, eps=1e-6)]),
    "adagrad+lr_decay": ("adagrad", [replace(T, lr=0.2, lr_decay=0.05),
                                     replace(T, lr=0.1, lr_decay=0.0),
                                     replace(T, lr=0.5, lr_decay=0.5,
                                             initial_accumulator_value=0.2)]),
    "rmsprop": ("rmsprop", [replace(T, lr=0.01), replace(T, lr=0.003, alpha=0.9),
                            replace(T, lr=0.02, eps=1e-4)]),
    "rmsprop+centered": ("rmsprop", [replace(T, lr=0.01, centered=True),
                                     replace(T, lr=0.005, alpha=0.9, centered=True),
                                     replace(T, lr=0.01, centered=False)]),
    "rmsprop+momentum": ("rmsprop", [replace(T, lr=0.005, momentum=0.9),
                                     replace(T, lr=0.002, momentum=0.5, centered=True),
                                     replace(T, lr=0.01, momentum=0.0)]),
    "adam": ("adam", [replace(T, lr=0.01), replace(T, lr=0.003, beta1=0.5, beta2=0.9),
                      replace(T, lr=0.02, beta1=0.0, beta2=0.99, eps=1e-6)]),
    "adamw": ("adamw", [replace(T, lr=0.01), replace(T, lr=0.05, beta1=0.8, beta2=0.95),
                        replace(T, lr=0.002, eps=1e-4)]),
}
WEIGHT_DECAY = (0.05, 0.0, 0.3)  # the per-member values of the weight-decay variants


def _with_wd(trains: list[TrainSpec], wd: bool) -> list[TrainSpec]:
    if not wd:
        return trains
    return [replace(t, weight_decay=w) for t, w in zip(trains, WEIGHT_DECAY, strict=True)]


def _assert_match(name: str, trains: list[TrainSpec], seeds: list[int]) -> None:
    params, losses = run_cohort(name, trains, seeds)
    for k, (t, seed) in enumerate(zip(trains, seeds, strict=True)):
        ref, ref_losses = run_torch(name, t, seed)
        torch.testing.assert_close(losses[:, k], ref_losses, rtol=1e-6, atol=1e-12)
        for p, r in zip(params, ref, strict=True):
            torch.testing.assert_close(p[k], r, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("wd", [False, True], ids=["no_wd", "wd"])
@pytest.mark.parametrize("case", list(CASES))
def test_single_member_matches_torch(case: str, wd: bool) -> None:
    name, trains = CASES[case]
    _assert_match(name, _with_wd(trains, wd)[:1], [0])


@pytest.mark.parametrize("wd", [False, True], ids=["no_wd", "wd"])
@pytest.mark.parametrize("case", list(CASES))
def test_three_members_with_different_hyperparameters_match_torch(case: str, wd: bool) -> None:
    name, trains = CASES[case]
    _assert_match(name, _with_wd(trains, wd), [0, 1, 2])


def test_training_moves_the_weights() -> None:
    """Guard against a vacuous oracle: in 50 steps every case learns (the loss falls)."""
    for name, trains in CASES.values():
        _, losses = run_cohort(name, trains, [0, 1, 2])
        assert bool((losses[-10:].mean(0) < 0.9 * losses[:10].mean(0)).all()), name


# ----------------------------------------------------------------------------- cohort = alone

MIXES: dict[str, tuple[str, list[TrainSpec]]] = {
    "sgd": ("sgd", [
        replace(T, lr=0.1), replace(T, lr=0.5), replace(T, lr=0.1, momentum=0.9),
        replace(T, lr=0.1, momentum=0.9, nesterov=True), replace(T, lr=0.2, weight_decay=0.1),
        replace(T, lr=0.1, momentum=0.5, dampening=0.3), replace(T, lr=0.01, momentum=0.99),
        replace(T, lr=0.3, momentum=0.6, nesterov=True, weight_decay=0.01),
    ]),
    "adagrad": ("adagrad", [
        replace(T, lr=lr, lr_decay=ld, initial_accumulator_value=a, weight_decay=w)
        for lr, ld, a, w in [(0.1, 0, 0, 0), (0.3, 0.1, 0, 0), (0.05, 0, 0.5, 0),
                             (0.1, 0, 0, 0.1), (1.0, 0.01, 0.1, 0), (0.2, 0.5, 0, 0.02),
                             (0.01, 0, 0, 0), (0.5, 0.2, 1.0, 0.3)]
    ]),
    "rmsprop": ("rmsprop", [
        replace(T, lr=lr, alpha=a, momentum=m, centered=c, weight_decay=w)
        for lr, a, m, c, w in [(0.01, 0.99, 0, False, 0), (0.003, 0.9, 0, True, 0),
                               (0.005, 0.99, 0.9, False, 0), (0.002, 0.95, 0.5, True, 0.1),
                               (0.02, 0.5, 0, False, 0.01), (0.001, 0.99, 0.99, True, 0),
                               (0.01, 0.8, 0.3, False, 0), (0.004, 0.9, 0, True, 0.2)]
    ]),
    "adam": ("adam", [
        replace(T, lr=lr, beta1=b1, beta2=b2, eps=e, weight_decay=w)
        for lr, b1, b2, e, w in [(0.01, 0.9, 0.999, 1e-8, 0), (0.001, 0.9, 0.999, 1e-8, 0),
                                 (0.03, 0.5, 0.9, 1e-8, 0), (0.01, 0.0, 0.99, 1e-6, 0),
                                 (0.01, 0.95, 0.95, 1e-8, 0.1), (0.1, 0.9, 0.999, 1e-3, 0),
                                 (0.005, 0.99, 0.9999, 1e-8, 0.01), (0.02, 0.8, 0.99, 1e-8, 0)]
    ]),
    "adamw": ("adamw", [
        replace(T, lr=lr, beta1=b1, beta2=b2, weight_decay=w)
        for lr, b1, b2, w in [(0.01, 0.9, 0.999, 0.01), (0.001, 0.9, 0.999, 0),
                              (0.03, 0.5, 0.9, 0.1), (0.01, 0.0, 0.99, 1.0),
                              (0.01, 0.95, 0.95, 0), (0.1, 0.9, 0.999, 0.05),
                              (0.005, 0.99, 0.9999, 0.3), (0.02, 0.8, 0.99, 0.02)]
    ]),
}


@pytest.mark.parametrize("family", list(MIXES))
def test_cohort_of_eight_settings_equals_each_alone(family: str) -> None:
    name, trains = MIXES[family]
    seeds = list(range(8))
    params, losses = run_cohort(name, trains, seeds)
    for k in range(8):
        alone, alone_losses = run_cohort(name, [trains[k]], [seeds[k]])
        torch.testing.assert_close(losses[:, k], alone_losses[:, 0], rtol=1e-12, atol=1e-14)
        for p, a in zip(params, alone, strict=True):
            torch.testing.assert_close(p[k], a[0], rtol=1e-12, atol=1e-14)


def test_cohort_of_eight_also_matches_torch() -> None:
    """The mixed sgd cohort (momentum 0 next to Nesterov) against torch.optim.SGD directly."""
    name, trains = MIXES["sgd"]
    _assert_match(name, trains, list(range(8)))


# ----------------------------------------------------------------------------- compaction


@pytest.mark.parametrize("family", list(MIXES))
def test_compacted_state_continues_like_the_kept_members(family: str) -> None:
    """Dropping members mid-run leaves the others' trajectories exactly as they were."""
    name, trains = MIXES[family]
    seeds = list(range(8))
    keep = torch.tensor([0, 3, 6])
    params = stacked_init(seeds)
    hp = optim.hyperparams(trains, dtype=DTYPE)
    opt = optim.make(name, hp)
    state = opt.init(params)
    g = torch.Generator().manual_seed(7)
    grads_seq = [[torch.randn(p.shape, generator=g, dtype=DTYPE) for p in params]
                 for _ in range(6)]
    lr = hp["lr"]
    full = params
    for t in range(6):
        if t == 3:  # compact the running cohort
            params = [p.index_select(0, keep) for p in params]
            state = optim.compact(state, keep)
            lr = optim.compact_hp(hp, keep)["lr"]
        grads = [gr.index_select(0, keep) for gr in grads_seq[t]] if t >= 3 else grads_seq[t]
        updates, state = opt.update(grads, state, params, lr)
        params = [p + u for p, u in zip(params, updates, strict=True)]
    state_full = opt.init(full)
    for t in range(6):
        updates, state_full = opt.update(grads_seq[t], state_full, full, hp["lr"])
        full = [p + u for p, u in zip(full, updates, strict=True)]
    for p, f in zip(params, full, strict=True):
        torch.testing.assert_close(p, f.index_select(0, keep), rtol=0, atol=0)


def test_compact_accepts_a_mask_and_keeps_scalars() -> None:
    state = {"a": torch.arange(6.0).reshape(3, 2), "n": 5, "nested": {"b": torch.arange(3)}}
    out = optim.compact(state, torch.tensor([True, False, True]))
    assert out["n"] == 5
    assert out["a"].tolist() == [[0.0, 1.0], [4.0, 5.0]]
    assert out["nested"]["b"].tolist() == [0, 2]


# ----------------------------------------------------------------------------- api details


def test_state_tensors_have_the_member_axis_first() -> None:
    params = [torch.zeros(5, 2, 3), torch.zeros(5, 1, 3), torch.zeros(5, 7)]
    trains = [replace(T, optimizer="rmsprop", momentum=0.9, centered=True)] * 5
    opt = optim.make("rmsprop", optim.hyperparams(trains))
    state = opt.init(params)

    def walk(s: Any) -> None:
        if isinstance(s, torch.Tensor):
            assert s.shape[0] == 5
        elif isinstance(s, dict):
            for v in s.values():
                walk(v)

    walk(state)
    updates, _ = opt.update([torch.ones_like(p) for p in params], state, params,
                            torch.full((5,), 0.1))
    assert [u.shape for u in updates] == [p.shape for p in params]


def test_hyperparams_are_member_vectors() -> None:
    trains = [replace(T, lr=0.1, momentum=0.9, nesterov=True), replace(T, lr=0.2)]
    hp = optim.hyperparams(trains, dtype=DTYPE)
    assert hp["lr"].tolist() == [0.1, 0.2]
    assert hp["momentum"].tolist() == [0.9, 0.0]
    assert hp["nesterov"].tolist() == [True, False]
    assert all(v.shape == (2,) for v in hp.values())
    assert optim.compact_hp(hp, torch.tensor([1]))["lr"].tolist() == [0.2]


def test_family_table() -> None:
    assert {optim.FAMILY[n] for n in ("sgd", "momentum", "nesterov")} == {"sgd"}
    assert all(optim.FAMILY[n] == n for n in ("adagrad", "rmsprop", "adam", "adamw"))


def test_hyperparams_reject_mixed_families_and_bad_nesterov() -> None:
    with pytest.raises(ValueError, match="family"):
        optim.hyperparams([T, replace(T, optimizer="adam")])
    with pytest.raises(LrlabError, match="nesterov.*momentum 0.0"):
        optim.hyperparams([replace(T, nesterov=True)])
    with pytest.raises(LrlabError, match="dampening 0.5"):
        optim.hyperparams([replace(T, nesterov=True, momentum=0.9, dampening=0.5)])


def test_unknown_optimizer_names_the_allowed() -> None:
    with pytest.raises(LrlabError, match="adamw.*got 'lamb'"):
        optim.make("lamb", optim.hyperparams([T]))
