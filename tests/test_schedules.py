"""Schedules against torch.optim.lr_scheduler (and Keras' formula), over 200 steps, per member.

The oracle drives a real torch optimizer and scheduler the way torch users do: the lr in force
for an optimizer step is `param_groups[0]["lr"]` read before `optimizer.step()`; epoch-based
schedulers are stepped at each epoch end, step-based ones after every optimizer step.
"""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler as tls

from lrlab import schedules
from lrlab.errors import LrlabError
from lrlab.spec import resolve

SPE, EPOCHS = 10, 20  # 200 steps
STEPS = SPE * EPOCHS
LR0 = (0.1, 0.5, 2.0)  # three members with different initial lrs
F = 1 / 3  # torch LinearLR's default start factor

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's step-order hints


def ours(name: str, args: dict[str, Any], lr0: tuple[float, ...] = LR0,
         spe: int = SPE, epochs: int = EPOCHS) -> torch.Tensor:
    """lrlab's lr at every step: [steps, K]."""
    s = schedules.make(name, torch.tensor(lr0, dtype=torch.float64), args, spe, epochs)
    return torch.stack([s(t, t // spe) for t in range(spe * epochs)])


def torch_lrs(build: Callable[[torch.optim.Optimizer, float], Any], per_step: bool,
              lr0: tuple[float, ...] = LR0) -> torch.Tensor:
    """torch's lr at every step, one optimizer + scheduler per member: [STEPS, K]."""
    cols = []
    for lr in lr0:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        sched = build(opt, lr)
        col = []
        for t in range(STEPS):
            col.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            if per_step or (t + 1) % SPE == 0:
                sched.step()
        cols.append(col)
    return torch.tensor(cols, dtype=torch.float64).T


def seq(warm_iters: int, start: float, main: Callable[..., Any]) -> Callable[..., Any]:
    """SequentialLR([LinearLR(start, warm_iters), main], milestones=[warm_iters])."""

    def build(opt: torch.optim.Optimizer, lr: float) -> Any:
        m = main(opt, lr)  # built first: CyclicLR / OneCycleLR set the initial lr
        w = tls.LinearLR(opt, start_factor=start, total_iters=warm_iters)
        return tls.SequentialLR(opt, [w, m], milestones=[warm_iters])

    return build


# name, args, torch builder, stepped per optimizer step
CASES: dict[str, tuple[str, dict[str, Any], Callable[..., Any], bool]] = {
    "constant": ("constant", {}, lambda o, lr: tls.LambdaLR(o, lambda e: 1.0), False),
    "step": ("step", {"step_size": 3, "gamma": 0.5},
             lambda o, lr: tls.StepLR(o, step_size=3, gamma=0.5), False),
    "step-default-gamma": ("step", {"step_size": 7}, lambda o, lr: tls.StepLR(o, 7), False),
    "multistep": ("multistep", {"milestones": [3, 8, 15], "gamma": 0.3},
                  lambda o, lr: tls.MultiStepLR(o, [3, 8, 15], gamma=0.3), False),
    "exponential": ("exponential", {"gamma": 0.8},
                    lambda o, lr: tls.ExponentialLR(o, gamma=0.8), False),
    "cosine": ("cosine", {}, lambda o, lr: tls.CosineAnnealingLR(o, T_max=EPOCHS), False),
    "cosine-past-T_max": ("cosine", {"T_max": 6, "eta_min": 0.01},
                          lambda o, lr: tls.CosineAnnealingLR(o, T_max=6, eta_min=0.01), False),
    "cosine_restarts": ("cosine_restarts", {"T_0": 3, "T_mult": 2, "eta_min": 0.001},
                        lambda o, lr: tls.CosineAnnealingWarmRestarts(o, 3, 2, 0.001), False),
    "cosine_restarts-T_mult-1": ("cosine_restarts", {"T_0": 4},
                                 lambda o, lr: tls.CosineAnnealingWarmRestarts(o, 4), False),
    "onecycle": ("onecycle", {},
                 lambda o, lr: tls.OneCycleLR(o, max_lr=lr, total_steps=STEPS,
                                              cycle_momentum=False), True),
    "onecycle-linear": ("onecycle", {"max_lr": 2.0, "pct_start": 0.25, "div_factor": 10.0,
                                     "final_div_factor": 100.0, "anneal_strategy": "linear"},
                        lambda o, lr: tls.OneCycleLR(o, max_lr=2 * lr, total_steps=STEPS,
                                                     pct_start=0.25, div_factor=10.0,
                                                     final_div_factor=100.0,
                                                     anneal_strategy="linear",
                                                     cycle_momentum=False), True),
    "cyclic": ("cyclic", {"step_size_up": 15},
               lambda o, lr: tls.CyclicLR(o, base_lr=0.1 * lr, max_lr=lr, step_size_up=15,
                                          cycle_momentum=False), True),
    "cyclic-triangular2": ("cyclic", {"base_lr": 0.2, "max_lr": 1.5, "step_size_up": 10,
                                      "step_size_down": 25, "mode": "triangular2"},
                           lambda o, lr: tls.CyclicLR(o, base_lr=0.2 * lr, max_lr=1.5 * lr,
                                                      step_size_up=10, step_size_down=25,
                                                      mode="triangular2",
                                                      cycle_momentum=False), True),
    "cyclic-exp_range": ("cyclic", {"step_size_up": 20, "mode": "exp_range", "gamma": 0.99},
                         lambda o, lr: tls.CyclicLR(o, base_lr=0.1 * lr, max_lr=lr,
                                                    step_size_up=20, mode="exp_range",
                                                    gamma=0.99, cycle_momentum=False), True),
    # linear warmup joined to the main schedule (SequentialLR)
    "warmup+step": ("step", {"warmup": 4, "step_size": 3, "gamma": 0.5},
                    seq(4, F, lambda o, lr: tls.StepLR(o, 3, 0.5)), False),
    "warmup+cosine": ("cosine", {"warmup": 5, "warmup_start_factor": 0.1},
                      seq(5, 0.1, lambda o, lr: tls.CosineAnnealingLR(o, T_max=EPOCHS - 5)),
                      False),
    "warmup+multistep": ("multistep", {"warmup": 2, "milestones": [4, 9]},
                         seq(2, F, lambda o, lr: tls.MultiStepLR(o, [4, 9])), False),
    "warmup+exponential": ("exponential", {"warmup": 3, "gamma": 0.9},
                           seq(3, F, lambda o, lr: tls.ExponentialLR(o, 0.9)), False),
    "warmup+cosine_restarts": ("cosine_restarts", {"warmup": 3, "T_0": 5},
                               seq(3, F, lambda o, lr: tls.CosineAnnealingWarmRestarts(o, 5)),
                               False),
    "warmup+constant": ("constant", {"warmup": 6, "warmup_start_factor": 0.25},
                        seq(6, 0.25, lambda o, lr: tls.LambdaLR(o, lambda e: 1.0)), False),
    # step-based main schedules warm up per step: `warmup` epochs = warmup * SPE steps
    "warmup+onecycle": ("onecycle", {"warmup": 3},
                        seq(3 * SPE, F, lambda o, lr: tls.OneCycleLR(
                            o, max_lr=lr, total_steps=STEPS - 3 * SPE, cycle_momentum=False)),
                        True),
    "warmup_steps+cyclic": ("cyclic", {"warmup_steps": 37, "step_size_up": 12},
                            seq(37, F, lambda o, lr: tls.CyclicLR(
                                o, base_lr=0.1 * lr, max_lr=lr, step_size_up=12,
                                cycle_momentum=False)), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_schedule_matches_torch(case: str) -> None:
    name, args, build, per_step = CASES[case]
    got, want = ours(name, args), torch_lrs(build, per_step)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert want.std(0).min() > 0 or name == "constant"  # a schedule that really moves


def test_time_decay_is_keras_per_iteration() -> None:
    """Keras legacy `SGD(lr, decay=d)`: lr * (1. / (1. + d * iterations)), iterations from 0."""
    decay = 0.01
    got = ours("time_decay", {"decay": decay})
    want = torch.tensor([[lr * (1.0 / (1.0 + decay * it)) for lr in LR0] for it in range(STEPS)],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert got[9, 0] > got[10, 0] > got[11, 0]  # decays within an epoch, not per epoch


def test_time_decay_with_warmup_starts_decaying_after_it() -> None:
    got = ours("time_decay", {"decay": 0.1, "warmup_steps": 20, "warmup_start_factor": 0.5},
               lr0=(1.0,))
    want = [0.5 + 0.5 * t / 20 if t < 20 else 1.0 / (1.0 + 0.1 * (t - 20)) for t in range(STEPS)]
    torch.testing.assert_close(got[:, 0], torch.tensor(want, dtype=torch.float64))


def test_warmup_steps_with_an_epoch_schedule() -> None:
    """Per-step warmup; the epoch schedule's clock starts after the epochs the warmup filled."""
    got = ours("step", {"warmup_steps": 25, "step_size": 3, "gamma": 0.5}, lr0=(1.0,))
    want = []
    for t in range(STEPS):
        e = t // SPE
        want.append(F + (1 - F) * t / 25 if t < 25 else 0.5 ** (max(0, e - 25 // SPE) // 3))
    torch.testing.assert_close(got[:, 0], torch.tensor(want, dtype=torch.float64))


def test_epoch_schedules_hold_within_an_epoch() -> None:
    for name, args, _, per_step in CASES.values():
        if not per_step:
            lrs = ours(name, args).reshape(EPOCHS, SPE, -1)
            assert torch.equal(lrs, lrs[:, :1].expand_as(lrs)), name


# ----------------------------------------------------------------------------- plateau

METRICS = [  # one scripted metric sequence per member (20 epochs)
    [1.0, 0.9, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85, 0.85, 0.85, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7,
     0.69995, 0.7, 0.7, 0.7],
    [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.2, 0.19, 0.18, 0.18, 0.18, 0.18, 0.18, 0.18, 0.18,
     0.18, 0.18, 0.18, 0.18],
    [1.0, math.nan, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5, math.inf, 0.5, 0.5, 0.4, 0.5, 0.5, 0.5,
     0.5, 0.5, 0.5, 0.5, 0.5],
]
PLATEAU_ARGS: list[dict[str, Any]] = [
    {"factor": 0.5, "patience": 2},
    {"factor": 0.3, "patience": 1, "cooldown": 2, "threshold": 0.01, "min_lr": 0.05},
    {"mode": "max", "factor": 0.5, "patience": 0, "threshold": 0.05, "threshold_mode": "abs"},
]


def plateau_torch(args: dict[str, Any], metrics: list[list[float]], skip: int = 0
                  ) -> torch.Tensor:
    cols = []
    for lr, ms in zip(LR0, metrics, strict=True):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        sched = tls.ReduceLROnPlateau(opt, **args)
        col = []
        for t in range(STEPS):
            col.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            e = t // SPE
            if (t + 1) % SPE == 0 and e >= skip:
                sched.step(ms[e])
        cols.append(col)
    return torch.tensor(cols, dtype=torch.float64).T


def plateau_ours(args: dict[str, Any], metrics: list[list[float]]) -> torch.Tensor:
    s = schedules.make("plateau", torch.tensor(LR0, dtype=torch.float64), args, SPE, EPOCHS)
    out = []
    for t in range(STEPS):
        out.append(s(t, t // SPE))
        if (t + 1) % SPE == 0:
            s.observe(torch.tensor([m[t // SPE] for m in metrics]))
    return torch.stack(out)


@pytest.mark.parametrize("args", PLATEAU_ARGS, ids=["min-rel", "cooldown-min_lr", "max-abs"])
def test_plateau_matches_torch_per_member(args: dict[str, Any]) -> None:
    got, want = plateau_ours(args, METRICS), plateau_torch(args, METRICS)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert (want[-1] < want[0]).any()  # the script does trigger reductions


def test_plateau_defaults_match_torch() -> None:
    metrics = [[1.0 / (1 + e) if e < 5 else 0.2 for e in range(EPOCHS)]] * 3
    torch.testing.assert_close(plateau_ours({}, metrics), plateau_torch({}, metrics))


def test_plateau_after_warmup_ignores_the_warmup_epochs() -> None:
    args = {"factor": 0.5, "patience": 1}
    got = plateau_ours({**args, "warmup": 3}, METRICS)
    want = plateau_torch(args, METRICS, skip=3)
    lr0 = torch.tensor(LR0, dtype=torch.float64)
    for e in range(3):
        want[e * SPE : (e + 1) * SPE] = lr0 * (F + (1 - F) * e / 3)
    torch.testing.assert_close(got, want)


def test_plateau_compacts_per_member_state() -> None:
    args = PLATEAU_ARGS[0]
    s = schedules.make("plateau", torch.tensor(LR0, dtype=torch.float64), args, SPE, EPOCHS)
    for e in range(8):
        s.observe(torch.tensor([m[e] for m in METRICS]))
    keep = torch.tensor([0, 2])
    schedules.compact(s, keep)
    for e in range(8, EPOCHS - 1):
        s.observe(torch.tensor([METRICS[0][e], METRICS[2][e]]))
    want = plateau_ours(args, METRICS)[-1, keep]  # the lr in the last epoch: 19 observations
    assert want[0] < LR0[0]
    torch.testing.assert_close(s(STEPS - 1, EPOCHS - 1), want)


def test_pure_schedules_compact() -> None:
    s = schedules.make("cosine", torch.tensor(LR0, dtype=torch.float64), {}, SPE, EPOCHS)
    c = schedules.compact(s, torch.tensor([2, 0]))
    assert torch.equal(c(50, 5), s(50, 5)[[2, 0]])


def test_schedules_do_not_alias_lr0() -> None:
    lr0 = torch.tensor(LR0, dtype=torch.float64)
    for name in ("constant", "plateau"):
        out = schedules.make(name, lr0, {}, SPE, EPOCHS)(0, 0)
        out.mul_(0)
        assert lr0.tolist() == list(LR0)


def test_docstring_examples() -> None:
    result = doctest.testmod(schedules, raise_on_error=False)
    assert result.attempted >= 12 and result.failed == 0


def test_every_factory_documents_its_formula_with_an_example() -> None:
    for name, entry in schedules.SCHEDULES.items():
        assert ">>>" in (entry.factory.__doc__ or ""), name


# ----------------------------------------------------------------------------- validation


def test_every_argument_has_a_constraint_default_and_doc() -> None:
    """check_param_validation-style: every key is constrained and rejects a nonsense value."""
    for name in schedules.SCHEDULES:
        for key, arg in schedules.allowed_args(name).items():
            assert callable(arg.check) and arg.doc, (name, key)
            if arg.default is not schedules.REQUIRED:
                assert arg.check(arg.default) is None, (name, key)
            for bad in ("nonsense", -1.5, True, math.nan):
                if arg.check(bad) is None:
                    continue
                base = {k: v for k, v in REQUIRED_ARGS.get(name, {}).items() if k != key}
                with pytest.raises(LrlabError) as info:
                    schedules.check_args(name, {**base, key: bad})
                assert f"`[train].schedule_args.{key}` must be" in str(info.value)
                assert repr(bad) in str(info.value)
                break
            else:
                pytest.fail(f"{name}.{key} accepts every nonsense value")


REQUIRED_ARGS: dict[str, dict[str, Any]] = {
    "time_decay": {"decay": 0.01},
    "step": {"step_size": 2},
    "multistep": {"milestones": [2, 5]},
    "exponential": {"gamma": 0.9},
    "cosine_restarts": {"T_0": 5},
}


def test_required_arguments_are_listed() -> None:
    for name in schedules.SCHEDULES:
        schedules.check_args(name, REQUIRED_ARGS.get(name, {}))  # valid as given
        for key in REQUIRED_ARGS.get(name, {}):
            rest = {k: v for k, v in REQUIRED_ARGS[name].items() if k != key}
            with pytest.raises(LrlabError, match=rf"schedule_args\.{key}` is required"):
                schedules.check_args(name, rest)


@pytest.mark.parametrize("name, args, parts", [
    ("cosin", {}, ["`[train].schedule` must be one of", "constant", "plateau", "'cosin'"]),
    ("step", {"step_size": 2, "gama": 0.5},
     ["`[train].schedule_args.gama` is not an argument of schedule 'step'", "gamma",
      "step_size", "warmup"]),
    ("time_decay", {"decay": -1},
     ["`[train].schedule_args.decay` must be a number in [0, inf); got -1"]),
    ("step", {"step_size": 2, "gamma": 0},
     ["`[train].schedule_args.gamma` must be a number in (0, inf); got 0"]),
    ("exponential", {"gamma": -0.5}, ["schedule_args.gamma` must be", "got -0.5"]),
    ("step", {"step_size": 0}, ["schedule_args.step_size` must be an integer >= 1; got 0"]),
    ("step", {"step_size": 2.5}, ["schedule_args.step_size` must be an integer", "got 2.5"]),
    ("multistep", {"milestones": [5, 3]},
     ["schedule_args.milestones` must be a non-empty, strictly increasing", "got [5, 3]"]),
    ("multistep", {"milestones": []}, ["schedule_args.milestones` must be", "got []"]),
    ("cosine", {"eta_min": -0.1}, ["schedule_args.eta_min` must be", "got -0.1"]),
    ("cosine", {"T_max": 0}, ["schedule_args.T_max` must be an integer >= 1", "got 0"]),
    ("cosine_restarts", {"T_0": 5, "T_mult": 0}, ["schedule_args.T_mult` must be", "got 0"]),
    ("onecycle", {"pct_start": 1.0}, ["schedule_args.pct_start` must be a number in (0, 1)",
                                      "got 1.0"]),
    ("onecycle", {"anneal_strategy": "cosine"},
     ["schedule_args.anneal_strategy` must be one of cos, linear", "got 'cosine'"]),
    ("cyclic", {"mode": "triangle"}, ["schedule_args.mode` must be one of triangular",
                                      "got 'triangle'"]),
    ("cyclic", {"base_lr": 2.0}, ["schedule_args.base_lr` must be less than max_lr (1.0)",
                                  "got 2.0"]),
    ("cyclic", {"gamma": 1.5}, ["schedule_args.gamma` must be a number in (0, 1]", "got 1.5"]),
    ("plateau", {"factor": 1.0}, ["schedule_args.factor` must be a number in (0, 1)",
                                  "got 1.0"]),
    ("plateau", {"patience": -1}, ["schedule_args.patience` must be an integer >= 0",
                                   "got -1"]),
    ("plateau", {"threshold_mode": "relative"}, ["schedule_args.threshold_mode` must be one of",
                                                 "got 'relative'"]),
    ("constant", {"warmup": -2}, ["schedule_args.warmup` must be an integer >= 0", "got -2"]),
    ("constant", {"warmup": 2, "warmup_steps": 10},
     ["schedule_args.warmup_steps` must be 0 when warmup is given", "got 10"]),
    ("constant", {"warmup_start_factor": 0}, ["schedule_args.warmup_start_factor` must be a "
                                              "number in (0, 1]", "got 0"]),
    ("step", {"step_size": 2, "gamma": True}, ["schedule_args.gamma` must be", "got True"]),
])
def test_check_args_errors_name_the_key_and_value(name: str, args: dict[str, Any],
                                                  parts: list[str]) -> None:
    with pytest.raises(LrlabError) as info:
        schedules.check_args(name, args)
    for part in parts:
        assert part in str(info.value), (part, str(info.value))


def test_make_checks_what_depends_on_the_run_length() -> None:
    lr0 = torch.tensor([0.1])
    with pytest.raises(LrlabError, match=r"warmup` must be fewer epochs than the run's 20; got 20"):
        schedules.make("constant", lr0, {"warmup": 20}, SPE, EPOCHS)
    with pytest.raises(LrlabError, match=r"warmup_steps` must be fewer steps .* got 200"):
        schedules.make("constant", lr0, {"warmup_steps": 200}, SPE, EPOCHS)
    with pytest.raises(LrlabError, match=r"pct_start` must be .*total_steps 200.*got 0.005"):
        schedules.make("onecycle", lr0, {"pct_start": 0.005}, SPE, EPOCHS)
    with pytest.raises(LrlabError, match=r"step_size` is required"):
        schedules.make("step", lr0, {}, SPE, EPOCHS)


def test_spec_validation_uses_the_schedule_rules() -> None:
    with pytest.raises(LrlabError, match=r"schedule_args\.decay` must be .*got -1"):
        resolve({"train": {"schedule": "time_decay", "schedule_args": {"decay": -1}}})
    with pytest.raises(LrlabError, match=r"`\[train\]\.schedule` must be one of"):
        resolve({"train": {"schedule": "linear"}})
    spec = resolve({"train": {"schedule": "multistep", "schedule_args": {"milestones": [3, 6]}}})
    assert dict(spec.train.schedule_args)["milestones"] == (3, 6)
