"""Learning-rate schedules: pure functions `(step, epoch) -> lr[K]`, vectorised over members.

`step` is the global optimizer step about to be taken (0 for the first), `epoch` the epoch it
belongs to (from 0). `lr0: [K]` is each member's own lr; every other argument is shared by the
cohort. Each schedule equals `torch.optim.lr_scheduler` (or Keras) as torch users drive it:

| name | unit | equals |
| --- | --- | --- |
| constant | - | no scheduler |
| time_decay | step | Keras legacy `SGD(lr, decay=d)`: `lr0 / (1 + d * iterations)` |
| step | epoch | `StepLR(step_size, gamma)` |
| multistep | epoch | `MultiStepLR(milestones, gamma)` |
| exponential | epoch | `ExponentialLR(gamma)` |
| cosine | epoch | `CosineAnnealingLR(T_max, eta_min)` |
| cosine_restarts | epoch | `CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)` |
| onecycle | step | `OneCycleLR(max_lr, total_steps, pct_start, ...)`, momentum not cycled |
| cyclic | step | `CyclicLR(base_lr, max_lr, step_size_up, ...)`, momentum not cycled |
| plateau | epoch | `ReduceLROnPlateau(...)` on the metric passed to `observe` (stateful) |

An epoch-based scheduler is stepped once per epoch: the lr during epoch `e` is what torch gives
after `e` calls to `scheduler.step()`. A step-based one is stepped after every optimizer step.

Linear warmup composes with every schedule (args `warmup` epochs or `warmup_steps` steps, and
`warmup_start_factor`, default 1/3 as torch's `LinearLR`). It *joins* the two, exactly as
torch's ``SequentialLR([LinearLR(start_factor=f, total_iters=n), main], milestones=[n])``:
the lr rises linearly from `f * first` towards `first` for `n` units, `first` being the main
schedule's own first lr (`lr0`; one-cycle's `lr0 * max_lr / div_factor`; cyclic's
`lr0 * base_lr` -- for cyclic that is torch's result when `CyclicLR` is built before the
`LinearLR`, so the warmup ends where the cycle starts). Then the main schedule starts from its
own beginning: its clock counts from the end of the warmup, and its default span (cosine's
`T_max`, one-cycle's total steps) is what remains of the run. Both are stepped in the main
schedule's unit: for an epoch-based schedule `warmup = W` is W epochs of per-epoch
LinearLR; for a step-based schedule it is `W * steps_per_epoch` steps of per-step LinearLR.
`warmup_steps = S` always warms up per step; an epoch-based main schedule then starts its epoch
clock at epoch `S // steps_per_epoch` (the epochs the warmup filled completely), so with S a
multiple of `steps_per_epoch` only the warmup's granularity differs from `warmup = S / spe`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from lrlab.errors import LrlabError, bad_value

Schedule = Callable[[int, int], torch.Tensor]

# ----------------------------------------------------------------------------- constraints
# A constraint returns None for a valid value, else the words for what is allowed (STYLE 5).

Check = Callable[[Any], "str | None"]


def _num(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> Check:
    close = ")" if hi_open or hi == math.inf else "]"
    words = f"a number in {'(' if lo_open else '['}{lo}, {hi}{close}"

    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return words
        if v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi):
            return words
        return None

    return check


def _int(lo: int) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo
        return None if ok else f"an integer >= {lo}"

    return check


def _or_none(check: Check) -> Check:
    def inner(v: Any) -> str | None:
        err = check(v)
        return None if v is None or err is None else f"{err} (or unset)"

    return inner


def _one_of(*options: str) -> Check:
    return lambda v: None if v in options else "one of " + ", ".join(options)


def _milestones(v: Any) -> str | None:
    ok = (
        isinstance(v, (list, tuple)) and len(v) > 0
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)
        and all(a < b for a, b in zip(v, v[1:], strict=False))
    )
    return None if ok else "a non-empty, strictly increasing list of epochs >= 1"


REQUIRED = object()  # default of an argument the user must give


class Arg(NamedTuple):
    """One schedule argument: its constraint, default (or REQUIRED) and a line of help."""

    check: Check
    default: Any
    doc: str


class Entry(NamedTuple):
    """A registered schedule: its factory and its arguments (warmup ones excluded)."""

    factory: Callable[..., Any]
    args: dict[str, Arg]


WARMUP_ARGS: dict[str, Arg] = {
    "warmup": Arg(_int(0), 0, "linear warmup epochs before the schedule starts (0 = none)"),
    "warmup_steps": Arg(_int(0), 0, "linear warmup optimizer steps (instead of epochs)"),
    "warmup_start_factor": Arg(_num(0, 1, lo_open=True), 1 / 3,
                               "warmup starts at this fraction of lr (torch LinearLR default)"),
}
STEP_BASED = frozenset({"time_decay", "onecycle", "cyclic"})

# ----------------------------------------------------------------------------- the schedules


def constant_schedule(lr0: torch.Tensor) -> Schedule:
    """`lr = lr0`.

    >>> s = constant_schedule(torch.tensor([0.5, 1.0]))
    >>> s(123, 4).tolist()
    [0.5, 1.0]
    """
    return lambda step, epoch: lr0.clone()


def time_decay_schedule(lr0: torch.Tensor, decay: float) -> Schedule:
    """Keras' legacy time-based decay, per iteration: `lr = lr0 * 1 / (1 + decay * step)`.

    `step` counts the optimizer steps already taken (Keras' `iterations`, 0 for the first).

    >>> s = time_decay_schedule(torch.tensor([1.0, 0.5]), decay=0.5)
    >>> s(0, 0).tolist(), s(2, 0).tolist()
    ([1.0, 0.5], [0.5, 0.25])
    """
    return lambda step, epoch: lr0 * (1.0 / (1.0 + decay * step))


def step_schedule(lr0: torch.Tensor, step_size: int, gamma: float) -> Schedule:
    """StepLR: `lr = lr0 * gamma ** (epoch // step_size)`.

    >>> s = step_schedule(torch.tensor([1.0]), step_size=2, gamma=0.5)
    >>> [s(0, e).item() for e in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    return lambda step, epoch: lr0 * gamma ** (epoch // step_size)


def multistep_schedule(lr0: torch.Tensor, milestones: tuple[int, ...], gamma: float) -> Schedule:
    """MultiStepLR: `lr = lr0 * gamma ** (number of milestones <= epoch)`.

    >>> s = multistep_schedule(torch.tensor([1.0]), milestones=(2, 3), gamma=0.5)
    >>> [s(0, e).item() for e in range(5)]
    [1.0, 1.0, 0.5, 0.25, 0.25]
    """
    ms = sorted(milestones)
    return lambda step, epoch: lr0 * gamma ** bisect.bisect_right(ms, epoch)


def exponential_schedule(lr0: torch.Tensor, gamma: float) -> Schedule:
    """ExponentialLR: `lr = lr0 * gamma ** epoch`.

    >>> s = exponential_schedule(torch.tensor([1.0]), gamma=0.5)
    >>> [s(0, e).item() for e in range(4)]
    [1.0, 0.5, 0.25, 0.125]
    """
    return lambda step, epoch: lr0 * gamma**epoch


def _cos_factor(t: float, period: float) -> float:
    """`(1 + cos(pi t / period)) / 2`: 1 at t = 0, 0 at t = period."""
    return (1 + math.cos(math.pi * t / period)) / 2


def cosine_schedule(lr0: torch.Tensor, T_max: int, eta_min: float) -> Schedule:
    """CosineAnnealingLR: `lr = eta_min + (lr0 - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`.

    Past `T_max` it continues along the cosine (back up), as torch's does. `eta_min` is an
    absolute lr, shared by the members.

    >>> s = cosine_schedule(torch.tensor([1.0]), T_max=4, eta_min=0.0)
    >>> [round(s(0, e).item(), 4) for e in range(5)]
    [1.0, 0.8536, 0.5, 0.1464, 0.0]
    """
    return lambda step, epoch: (lr0 - eta_min) * _cos_factor(epoch, T_max) + eta_min


def _restart_position(epoch: int, T_0: int, T_mult: int) -> tuple[int, int]:
    """(epochs into the current cycle, current cycle length), as torch's per-epoch stepping."""
    t, period = epoch, T_0
    while t >= period:
        t -= period
        period *= T_mult
    return t, period


def cosine_restarts_schedule(lr0: torch.Tensor, T_0: int, T_mult: int, eta_min: float) -> Schedule:
    """CosineAnnealingWarmRestarts: `lr = eta_min + (lr0 - eta_min) (1 + cos(pi T_cur / T_i)) / 2`.

    The first cycle lasts `T_0` epochs, each later one `T_mult` times the previous; `T_cur` is
    the epoch within the cycle.

    >>> s = cosine_restarts_schedule(torch.tensor([1.0]), T_0=2, T_mult=2, eta_min=0.0)
    >>> [round(s(0, e).item(), 4) for e in range(7)]
    [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0]
    """

    def schedule(step: int, epoch: int) -> torch.Tensor:
        t, period = _restart_position(epoch, T_0, T_mult)
        return (lr0 - eta_min) * _cos_factor(t, period) + eta_min

    return schedule


def onecycle_schedule(
    lr0: torch.Tensor,
    total_steps: int,
    max_lr: float,
    pct_start: float,
    div_factor: float,
    final_div_factor: float,
    anneal_strategy: str,
) -> Schedule:
    """OneCycleLR (two phases, `three_phase=False`), per step.

    With `peak = max_lr * lr0`, `start = peak / div_factor`, `end = start / final_div_factor`
    and `s1 = pct_start * total_steps - 1`: the lr anneals from `start` to `peak` over steps
    `[0, s1]`, then from `peak` to `end` over `[s1, total_steps - 1]`. Cosine annealing from
    `a` to `b` at fraction `p` is `b + (a - b) (1 + cos(pi p)) / 2`; linear is `a + (b - a) p`.
    Momentum is not cycled (torch's `cycle_momentum=False`).

    >>> s = onecycle_schedule(torch.tensor([1.0]), total_steps=10, max_lr=1.0, pct_start=0.3,
    ...                       div_factor=4.0, final_div_factor=10.0, anneal_strategy="linear")
    >>> [round(s(i, 0).item(), 3) for i in range(10)]
    [0.25, 0.625, 1.0, 0.861, 0.721, 0.582, 0.443, 0.304, 0.164, 0.025]
    """
    peak = lr0 * max_lr
    start = peak / div_factor
    end = start / final_div_factor
    s1 = float(pct_start * total_steps) - 1
    s2 = float(total_steps - 1)

    def anneal(a: torch.Tensor, b: torch.Tensor, pct: float) -> torch.Tensor:
        if anneal_strategy == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (b - a) * pct + a

    def schedule(step: int, epoch: int) -> torch.Tensor:
        if step > total_steps:
            raise ValueError(f"onecycle: step {step} is past total_steps {total_steps}")
        if step <= s1:
            return anneal(start, peak, step / s1)
        return anneal(peak, end, (step - s1) / (s2 - s1))

    return schedule


def cyclic_schedule(
    lr0: torch.Tensor,
    base_lr: float,
    max_lr: float,
    step_size_up: int,
    step_size_down: int | None,
    mode: str,
    gamma: float,
) -> Schedule:
    """CyclicLR, per step, between `base_lr * lr0` and `max_lr * lr0`.

    With `T = up + down`, `cycle = floor(1 + step / T)`, `x = 1 + step / T - cycle`:
    the height is `x / r` rising (`x <= r = up / T`), else `(x - 1) / (r - 1)`, and
    `lr = base + (max - base) * height * scale`, scale = 1 (triangular), `1 / 2**(cycle - 1)`
    (triangular2) or `gamma ** step` (exp_range). Momentum is not cycled.

    >>> s = cyclic_schedule(torch.tensor([1.0]), base_lr=0.25, max_lr=1.0, step_size_up=2,
    ...                     step_size_down=None, mode="triangular2", gamma=1.0)
    >>> [s(i, 0).item() for i in range(9)]
    [0.25, 0.625, 1.0, 0.625, 0.25, 0.4375, 0.625, 0.4375, 0.25]
    """
    up = float(step_size_up)
    down = float(step_size_down) if step_size_down is not None else up
    total = up + down
    ratio = up / total
    base, peak = lr0 * base_lr, lr0 * max_lr

    def schedule(step: int, epoch: int) -> torch.Tensor:
        cycle = math.floor(1 + step / total)
        x = 1.0 + step / total - cycle
        height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        if mode == "triangular":
            scale = 1.0
        elif mode == "triangular2":
            scale = 1 / (2.0 ** (cycle - 1))
        else:
            scale = gamma**step
        return base + (peak - base) * height * scale

    return schedule


class ReduceOnPlateau:
    """ReduceLROnPlateau per member: the one stateful schedule.

    `observe(metric: [K])` once per epoch end (metric NaN counts as no improvement). When a
    member's metric has not improved (mode min, rel: `metric < best * (1 - threshold)`) for more
    than `patience` epochs, its lr becomes `max(lr * factor, min_lr)` (if that changes it by more
    than `eps`), then `cooldown` epochs pass before bad epochs count again. Calls return the
    current lrs. During a warmup the warmup lr is returned and observations are ignored.

    >>> s = ReduceOnPlateau(torch.tensor([1.0, 1.0]), mode="min", factor=0.5, patience=1,
    ...                     threshold=0.0, threshold_mode="rel", cooldown=0, min_lr=0.0, eps=0.0)
    >>> for m in ([3.0, 3.0], [2.0, 3.0], [2.0, 3.0]):
    ...     s.observe(torch.tensor(m))
    >>> s(0, 3).tolist()
    [1.0, 0.5]
    """

    def __init__(
        self,
        lr0: torch.Tensor,
        *,
        mode: str,
        factor: float,
        patience: int,
        threshold: float,
        threshold_mode: str,
        cooldown: int,
        min_lr: float,
        eps: float,
        warmup: Callable[[int, int], float | None] | None = None,
        skip: int = 0,
    ) -> None:
        self.lr0, self.lr = lr0, lr0.clone()
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.warmup, self.skip, self.seen = warmup, skip, 0
        k, dev = lr0.shape[0], lr0.device
        worse = math.inf if mode == "min" else -math.inf
        self.best = torch.full((k,), worse, dtype=torch.float64, device=dev)
        self.num_bad = torch.zeros(k, dtype=torch.long, device=dev)
        self.cooldown_counter = torch.zeros(k, dtype=torch.long, device=dev)

    def __call__(self, step: int, epoch: int) -> torch.Tensor:
        f = self.warmup(step, epoch) if self.warmup else None
        return self.lr0 * f if f is not None else self.lr.clone()

    def _is_better(self, a: torch.Tensor) -> torch.Tensor:
        best, thr = self.best, self.threshold
        if self.mode == "min":
            return a < (best * (1.0 - thr) if self.threshold_mode == "rel" else best - thr)
        return a > (best * (thr + 1.0) if self.threshold_mode == "rel" else best + thr)

    def observe(self, metric: torch.Tensor) -> None:
        """One epoch's metric per member ([K]); updates each member's lr as torch's step()."""
        self.seen += 1
        if self.seen <= self.skip:  # epochs filled by the warmup
            return
        m = metric.detach().to(device=self.best.device, dtype=torch.float64)
        better = self._is_better(m)
        self.best = torch.where(better, m, self.best)
        bad = torch.where(better, 0, self.num_bad + 1)
        cooling = self.cooldown_counter > 0
        self.cooldown_counter = torch.where(cooling, self.cooldown_counter - 1,
                                            self.cooldown_counter)
        bad = torch.where(cooling, 0, bad)
        reduce = bad > self.patience
        new = torch.clamp(self.lr * self.factor, min=self.min_lr)
        self.lr = torch.where(reduce & (self.lr - new > self.eps), new, self.lr)
        self.cooldown_counter = torch.where(reduce, self.cooldown, self.cooldown_counter)
        self.num_bad = torch.where(reduce, 0, bad)

    def compact(self, keep: torch.Tensor) -> ReduceOnPlateau:
        """Keep only members `keep` (in place); returns self."""
        for name in ("lr0", "lr", "best", "num_bad", "cooldown_counter"):
            setattr(self, name, getattr(self, name).index_select(0, keep))
        return self


# ----------------------------------------------------------------------------- registry

SCHEDULES: dict[str, Entry] = {
    "constant": Entry(constant_schedule, {}),
    "time_decay": Entry(time_decay_schedule, {
        "decay": Arg(_num(0), REQUIRED, "Keras decay: lr0 / (1 + decay * iterations)"),
    }),
    "step": Entry(step_schedule, {
        "step_size": Arg(_int(1), REQUIRED, "epochs between reductions"),
        "gamma": Arg(_num(0, lo_open=True), 0.1, "factor applied every step_size epochs"),
    }),
    "multistep": Entry(multistep_schedule, {
        "milestones": Arg(_milestones, REQUIRED, "epochs at which the lr is multiplied by gamma"),
        "gamma": Arg(_num(0, lo_open=True), 0.1, "factor applied at each milestone"),
    }),
    "exponential": Entry(exponential_schedule, {
        "gamma": Arg(_num(0, lo_open=True), REQUIRED, "factor applied every epoch"),
    }),
    "cosine": Entry(cosine_schedule, {
        "T_max": Arg(_or_none(_int(1)), None, "half-period in epochs (default: the epochs left "
                                                "after warmup)"),
        "eta_min": Arg(_num(0), 0.0, "lowest lr (absolute)"),
    }),
    "cosine_restarts": Entry(cosine_restarts_schedule, {
        "T_0": Arg(_int(1), REQUIRED, "epochs of the first cycle"),
        "T_mult": Arg(_int(1), 1, "each cycle is T_mult times longer than the previous"),
        "eta_min": Arg(_num(0), 0.0, "lowest lr (absolute)"),
    }),
    "onecycle": Entry(onecycle_schedule, {
        "max_lr": Arg(_num(0, lo_open=True), 1.0, "peak lr as a multiple of the member's lr"),
        "pct_start": Arg(_num(0, 1, lo_open=True, hi_open=True), 0.3,
                         "fraction of the steps spent rising"),
        "div_factor": Arg(_num(0, lo_open=True), 25.0, "start lr = peak / div_factor"),
        "final_div_factor": Arg(_num(0, lo_open=True), 1e4,
                                "final lr = start lr / final_div_factor"),
        "anneal_strategy": Arg(_one_of("cos", "linear"), "cos", "shape of both phases"),
    }),
    "cyclic": Entry(cyclic_schedule, {
        "base_lr": Arg(_num(0), 0.1, "lowest lr as a multiple of the member's lr"),
        "max_lr": Arg(_num(0, lo_open=True), 1.0, "highest lr as a multiple of the member's lr"),
        "step_size_up": Arg(_int(1), 2000, "steps rising in each cycle (torch's default)"),
        "step_size_down": Arg(_or_none(_int(1)), None, "steps falling (default: step_size_up)"),
        "mode": Arg(_one_of("triangular", "triangular2", "exp_range"), "triangular",
                    "amplitude: constant, halved each cycle, or gamma ** step"),
        "gamma": Arg(_num(0, 1, lo_open=True), 1.0, "exp_range's factor per step"),
    }),
    "plateau": Entry(ReduceOnPlateau, {
        "mode": Arg(_one_of("min", "max"), "min", "whether the metric should go down or up"),
        "factor": Arg(_num(0, 1, lo_open=True, hi_open=True), 0.1, "lr multiplier on a plateau"),
        "patience": Arg(_int(0), 10, "epochs without improvement tolerated"),
        "threshold": Arg(_num(0), 1e-4, "minimum improvement that counts"),
        "threshold_mode": Arg(_one_of("rel", "abs"), "rel", "threshold relative or absolute"),
        "cooldown": Arg(_int(0), 0, "epochs to wait after a reduction"),
        "min_lr": Arg(_num(0), 0.0, "lowest lr (absolute)"),
        "eps": Arg(_num(0), 1e-8, "smaller lr changes are skipped"),
    }),
}


def allowed_args(name: str) -> dict[str, Arg]:
    """Every argument schedule `name` accepts, warmup ones included."""
    return {**SCHEDULES[name].args, **WARMUP_ARGS}


def _key(key: str) -> str:
    return f"[train].schedule_args.{key}"


def check_args(
    name: str,
    args: Mapping[str, Any],
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
) -> None:
    """Raise `LrlabError` for an unknown schedule, an unknown or missing argument, or a bad value.

    With `epochs` and `steps_per_epoch` it also checks what depends on the run's length (the
    warmup fits, one-cycle's rising phase is longer than one step).
    """
    if name not in SCHEDULES:
        raise bad_value("[train].schedule", name, "one of " + ", ".join(SCHEDULES))
    allowed = allowed_args(name)
    for key, value in args.items():
        if key not in allowed:
            raise LrlabError(
                f"`{_key(key)}` is not an argument of schedule {name!r}; allowed: "
                + ", ".join(sorted(allowed))
            )
        err = allowed[key].check(value)
        if err:
            raise bad_value(_key(key), value, err)
    for key, arg in allowed.items():
        if arg.default is REQUIRED and key not in args:
            raise LrlabError(f"`{_key(key)}` is required by schedule {name!r}: {arg.doc}")
    a = _resolved(name, args)
    if a["warmup"] and a["warmup_steps"]:
        raise bad_value(_key("warmup_steps"), a["warmup_steps"],
                        f"0 when warmup is given (warmup = {a['warmup']} epochs)")
    if name == "cyclic" and a["base_lr"] >= a["max_lr"]:
        raise bad_value(_key("base_lr"), a["base_lr"], f"less than max_lr ({a['max_lr']})")
    if epochs is None or steps_per_epoch is None:
        return
    if a["warmup"] >= epochs:
        raise bad_value(_key("warmup"), a["warmup"], f"fewer epochs than the run's {epochs}")
    total = epochs * steps_per_epoch
    if a["warmup_steps"] >= total:
        raise bad_value(_key("warmup_steps"), a["warmup_steps"],
                        f"fewer steps than the run's {total}")
    if name == "onecycle":
        left = total - _offsets(a, steps_per_epoch)[0]
        if a["pct_start"] * left <= 1:
            raise bad_value(_key("pct_start"), a["pct_start"],
                            f"large enough that pct_start * total_steps > 1 (total_steps {left})")


def _resolved(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments with defaults filled in."""
    return {k: args.get(k, arg.default) for k, arg in allowed_args(name).items()}


def _offsets(a: Mapping[str, Any], steps_per_epoch: int) -> tuple[int, int]:
    """(steps, epochs) by which the warmup delays the main schedule's clock."""
    if a["warmup_steps"]:
        return a["warmup_steps"], a["warmup_steps"] // steps_per_epoch
    return a["warmup"] * steps_per_epoch, a["warmup"]


def linear_warmup(
    start_factor: float, n: int, per_step: bool
) -> Callable[[int, int], float | None]:
    """LinearLR's factor `f + (1 - f) * t / n` for `t < n` (t = step or epoch), then None.

    >>> w = linear_warmup(0.5, 2, per_step=False)
    >>> [w(0, e) for e in range(3)]
    [0.5, 0.75, None]
    """

    def factor(step: int, epoch: int) -> float | None:
        t = step if per_step else epoch
        return start_factor + (1.0 - start_factor) * t / n if t < n else None

    return factor


def make(name: str, lr0: torch.Tensor, args: Mapping[str, Any], steps_per_epoch: int,
         epochs: int) -> Schedule:
    """The schedule `name` for members with initial lrs `lr0: [K]`, checked first.

    `steps_per_epoch` and `epochs` give the run's length (for defaults such as cosine's `T_max`
    and one-cycle's total steps). See the module docstring for how a warmup joins.

    >>> args = {"step_size": 1, "gamma": 0.5, "warmup": 2, "warmup_start_factor": 0.5}
    >>> s = make("step", torch.tensor([1.0]), args, steps_per_epoch=3, epochs=6)
    >>> [s(3 * e, e).item() for e in range(5)]
    [0.5, 0.75, 1.0, 0.5, 0.25]
    """
    check_args(name, args, epochs=epochs, steps_per_epoch=steps_per_epoch)
    a = _resolved(name, args)
    step0, epoch0 = _offsets(a, steps_per_epoch)
    per_step = name in STEP_BASED or bool(a["warmup_steps"])
    warm = linear_warmup(a["warmup_start_factor"], step0 if per_step else epoch0, per_step) \
        if step0 else None
    kw = {k: v for k, v in a.items() if k not in WARMUP_ARGS}
    if name == "cosine" and kw["T_max"] is None:
        kw["T_max"] = epochs - epoch0
    if name == "onecycle":
        kw["total_steps"] = epochs * steps_per_epoch - step0
    if name == "multistep":
        kw["milestones"] = tuple(kw["milestones"])
    if name == "plateau":
        return ReduceOnPlateau(lr0, **kw, warmup=warm, skip=epoch0)
    main = SCHEDULES[name].factory(lr0, **kw)
    if warm is None:
        return main
    first = main(0, 0)  # the warmup rises towards the main schedule's first lr

    def joined(step: int, epoch: int) -> torch.Tensor:
        f = warm(step, epoch)
        if f is not None:
            return first * f
        return main(step - step0, max(0, epoch - epoch0))

    return joined


def compact(schedule: Schedule, keep: torch.Tensor) -> Schedule:
    """The schedule for members `keep` only (ReduceOnPlateau is compacted in place)."""
    if isinstance(schedule, ReduceOnPlateau):
        return schedule.compact(keep)
    return lambda step, epoch: schedule(step, epoch).index_select(0, keep)
