"""The learning-rate range test (Smith 2017; fastai `lr_find`, torch-lr-finder), seeds at once.

The lr ramps from `start_lr` to `end_lr` over `num_iter` steps (exponentially or linearly), each
step on a fresh batch. Every seed is a member of one batched model, so K seeds cost about one:
lrlab's own MLPs run as stacked weights (`finder_nets`), a user's `nn.Module` through
`torch.func` (`finder_module`); `finder_report` draws the result. Per seed the loss is
smoothed by an exponential moving average with bias correction, and a seed stops when its
smoothed loss exceeds `diverge_th` x its best.
The curve is the median over seeds with the seed range as a band; suggestions are pure
functions of that curve, and the check (on by default) trains short real runs at each of
them and recommends one lr, deciding on the seed spread rather than on medians alone.

Conventions (documented because the anchors differ):
- The loss recorded against the lr of step t is the loss on the *next* batch, i.e. measured
  after the update made with that lr. fastai and torch-lr-finder record the loss computed
  before the update, which reflects the previous, one ramp step smaller, lr.
- A seed that diverged counts as +inf in the median and the band from then on; the curve ends
  where more than half the seeds have diverged. `diverge_lr` is the median over seeds of the lr
  at which each seed's smoothed loss crossed the threshold (None when most never did).
- Suggestions skip the first `num_iter // 10` and the last 5 points of the curve, as fastai.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lrlab import folder
from lrlab.errors import LrlabError, bad_value

Tensor = torch.Tensor
MODES = ("exp", "linear")
CHECK_FACTORS = (0.3, 1.0, 3.0)
CHECK_STEPS = 200
"""Check runs train for about this many steps: ceil(CHECK_STEPS / steps per epoch) epochs,
clamped to [1, 50], unless the caller names the epochs."""
SKIP_END = 5
SLOPE_POINTS = 5
"""The steepest rule's slope is a least-squares fit over this many neighbouring points."""
FLAT = 0.02
"""A ramp whose median loss never falls more than this fraction below its start is flat:
its suggestions point at noise."""


# ----------------------------------------------------------------------------- suggestions


@dataclass(frozen=True)
class Suggestion:
    """A suggested lr (None when the rule finds nothing), the rule's name and its numbers."""

    lr: float | None
    rule: str
    evidence: dict[str, float] = field(default_factory=dict)


Rule = Callable[[np.ndarray, np.ndarray], Suggestion]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    """Register a suggestion rule `(lrs, losses) -> Suggestion` under `name`."""

    def register(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return register


def describe(name: str) -> str:
    """The first line of a rule's docstring: what it picks."""
    return (RULES[name].__doc__ or name).strip().splitlines()[0]


@rule("steepest")
def steepest(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """Steepest descent: where the loss falls fastest per decade of lr, left of its minimum."""
    # Two deviations from torch-lr-finder (np.gradient over the whole curve) and fastai's
    # `steep`: the search stops at the minimum (a drop in the chaotic region past it can win
    # there, and every lr past the minimum is already too high), and the slope is the
    # least-squares slope over 5 neighbouring points (SLOPE_POINTS), not a 2-3 point
    # difference, which mostly measures noise.
    if len(lrs) < 2:
        return Suggestion(None, "steepest", {"points": float(len(lrs))})
    slope = window_slope(np.log10(lrs), losses, SLOPE_POINTS // 2)  # d loss / d log10(lr)
    i = int(np.argmin(slope[: int(np.argmin(losses)) + 1]))
    if not slope[i] < 0:  # the loss never falls: no steepest descent to point at
        return Suggestion(None, "steepest", {"min_slope_per_decade": float(slope[i])})
    return Suggestion(float(lrs[i]), "steepest", {"slope_per_decade": float(slope[i]),
                                                  "loss": float(losses[i])})


def window_slope(x: np.ndarray, y: np.ndarray, half: int) -> np.ndarray:
    """Least-squares slope dy/dx at each point over its neighbours i-half..i+half (the window
    shrinks at the ends)."""
    out = np.empty(len(x))
    for i in range(len(x)):
        xs, ys = x[max(0, i - half): i + half + 1], y[max(0, i - half): i + half + 1]
        dx = xs - xs.mean()
        out[i] = float(dx @ (ys - ys.mean()) / (dx @ dx))
    return out


@rule("valley")
def valley(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """Valley (fastai): a third plus a sixth of the way into the longest descending run."""
    # fastai's `valley`, step for step: lds[i] = longest decreasing subsequence ending at i;
    # max_start is set when max_end moves to i, from lds[i] *at that moment* (fastai's inner
    # loop checks after every j). One deviation: the index is clamped to >= 0 (fastai can
    # return lrs[-1] when the longest run starts at the first point).
    n = len(losses)
    lds = np.ones(n, dtype=np.int64)
    max_start = max_end = 0
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if not higher.any():
            continue
        cand = lds[:i] + 1
        first = np.flatnonzero(higher & (cand > lds[max_end]))
        lds[i] = cand[higher].max()
        if first.size:
            max_end = i
            max_start = i - int(cand[first[0]])
    if lds[max_end] < 2:
        return Suggestion(None, "valley", {"longest_descent_points": float(lds[max_end])})
    sections = (max_end - max_start) / 3
    idx = max(0, max_start + int(sections) + int(sections / 2))
    return Suggestion(float(lrs[idx]), "valley", {
        "valley_from_lr": float(lrs[max(max_start, 0)]), "valley_to_lr": float(lrs[max_end]),
        "valley_points": float(lds[max_end]), "loss": float(losses[idx])})


@rule("min10")
def min10(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """Minimum / 10: a tenth of the lr where the loss is lowest."""
    i = int(np.argmin(losses))
    return Suggestion(float(lrs[i]) / 10, "min10", {"min_lr": float(lrs[i]),
                                                    "min_loss": float(losses[i])})


def trim(lrs: np.ndarray, losses: np.ndarray, num_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """fastai's window: drop the first num_iter // 10 points and the last 5 (kept whole when
    that would leave fewer than 5 points)."""
    lo, hi = num_iter // 10, len(lrs) - SKIP_END
    if hi - lo < 5:
        return lrs, losses
    return lrs[lo:hi], losses[lo:hi]


def suggest(lrs: np.ndarray, losses: np.ndarray, num_iter: int,
            rules: Mapping[str, Rule] | None = None) -> dict[str, Suggestion]:
    """Every rule on the trimmed curve (non-finite points dropped first)."""
    ok = np.isfinite(losses)
    x, y = trim(np.asarray(lrs)[ok], np.asarray(losses)[ok], num_iter)
    if len(x) == 0:
        return {name: Suggestion(None, name, {"points": 0.0}) for name in (rules or RULES)}
    return {name: fn(x, y) for name, fn in (rules or RULES).items()}


# ----------------------------------------------------------------------------- the ramp


@dataclass(frozen=True)
class Settings:
    """How the range test runs (validated by `check_settings`)."""

    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 100
    mode: str = "exp"
    smooth: float = 0.98
    diverge_th: float = 4.0


def check_settings(s: Settings, flags: bool = False) -> None:
    """Raise LrlabError naming the first bad setting (as a CLI flag when `flags`)."""

    def key(name: str) -> str:
        return "--" + name.replace("_", "-") if flags else name

    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not (num(s.start_lr) and s.start_lr > 0):
        raise bad_value(key("start_lr"), s.start_lr, "a number > 0")
    if not (num(s.end_lr) and s.end_lr > s.start_lr):
        raise bad_value(key("end_lr"), s.end_lr, f"a number > start_lr ({s.start_lr:g})")
    if isinstance(s.num_iter, bool) or not isinstance(s.num_iter, int) or s.num_iter < 10:
        raise bad_value(key("num_iter"), s.num_iter, "an integer >= 10")
    if s.mode not in MODES:
        raise bad_value(key("mode"), s.mode, "one of exp, linear")
    if not (num(s.smooth) and 0 <= s.smooth < 1):
        raise bad_value(key("smooth"), s.smooth, "a number in [0, 1)")
    if not (num(s.diverge_th) and s.diverge_th > 1):
        raise bad_value(key("diverge_th"), s.diverge_th, "a number > 1")


def ramp(s: Settings) -> np.ndarray:
    """The lr of each step: start * (end/start)^(i/(n-1)) (exp) or start + (end-start) i/(n-1).

    >>> ramp(Settings(start_lr=1e-3, end_lr=1e-1, num_iter=10, mode="exp"))[[0, -1]].tolist()
    [0.001, 0.1]
    """
    i = np.arange(s.num_iter) / (s.num_iter - 1)
    if s.mode == "exp":
        return s.start_lr * (s.end_lr / s.start_lr) ** i
    return s.start_lr + (s.end_lr - s.start_lr) * i


class Stepper(Protocol):
    """A cohort of K_active members that walks through batches.

    `step(lr)` returns the loss [K_active] of each member on the next batch at its current
    weights, then (when lr [K_active] is given) updates each member on that batch with its lr.
    `keep(idx)` keeps only members idx (positions among the active ones).
    """

    def step(self, lr: Tensor | None) -> Tensor: ...

    def keep(self, idx: list[int]) -> None: ...


@dataclass
class SeedCurve:
    """One seed's ramp: raw and smoothed loss per step (lr[i] = ramp lr of step i)."""

    seed: int
    lr: np.ndarray
    raw: np.ndarray
    loss: np.ndarray  # smoothed (EMA with bias correction)
    start_loss: float  # before any step
    diverge_lr: float | None  # where the smoothed loss first crossed diverge_th x best


def run_ramp(stepper: Stepper, seeds: Sequence[int], s: Settings, device: torch.device,
             dtype: torch.dtype) -> list[SeedCurve]:
    """Walk the ramp with every seed at once; a seed stops (and is dropped) once it diverges."""
    lrs = ramp(s)
    k = len(seeds)
    raw: list[list[float]] = [[] for _ in range(k)]
    smooth: list[list[float]] = [[] for _ in range(k)]
    start = [math.nan] * k
    stop: list[int | None] = [None] * k
    avg, best = [0.0] * k, [math.inf] * k
    active = list(range(k))
    for t in range(len(lrs) + 1):
        lr = torch.full((len(active),), float(lrs[t]), device=device, dtype=dtype) \
            if t < len(lrs) else None
        losses = stepper.step(lr).tolist()  # one host sync per step
        out = []
        for j, m in enumerate(active):
            v = losses[j]
            if t == 0:
                start[m] = v
                continue
            raw[m].append(v)
            if math.isfinite(v):
                avg[m] = s.smooth * avg[m] + (1 - s.smooth) * v
                sm = avg[m] / (1 - s.smooth ** len(raw[m]))  # bias correction
            else:
                sm = math.inf
            smooth[m].append(sm)
            if not math.isfinite(sm) or sm > s.diverge_th * best[m]:
                stop[m] = len(raw[m]) - 1
                out.append(j)
            else:
                best[m] = min(best[m], sm)
        if out:
            keep = [j for j in range(len(active)) if j not in out]
            active = [active[j] for j in keep]
            if not active:
                break
            stepper.keep(keep)
    return [SeedCurve(seed, lrs[: len(raw[m])], np.array(raw[m]), np.array(smooth[m]),
                      start[m], None if stop[m] is None else float(lrs[stop[m]]))
            for m, seed in enumerate(seeds)]


@dataclass
class Curve:
    """The median smoothed loss over seeds per lr, with the seed range (lo, hi) as a band.

    `hi` is +inf where some seed has already diverged; the curve ends where most have."""

    lr: np.ndarray
    loss: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def aggregate(curves: Sequence[SeedCurve]) -> tuple[Curve, float | None]:
    """The median curve and the median divergence lr of the seeds."""
    n = max(len(c.loss) for c in curves)
    mat = np.full((len(curves), n), np.inf)
    for i, c in enumerate(curves):
        mat[i, : len(c.loss)] = np.where(np.isfinite(c.loss), c.loss, np.inf)
    med = np.median(mat, axis=0) if n else np.zeros(0)
    end = int(np.argmax(~np.isfinite(med))) if (~np.isfinite(med)).any() else n
    grid = max(curves, key=lambda c: len(c.lr)).lr
    curve = Curve(grid[:end], med[:end], mat.min(0)[:end], mat.max(0)[:end])
    logs = [math.log10(c.diverge_lr) if c.diverge_lr else math.inf for c in curves]
    mid = float(np.median(logs))
    return curve, (10 ** mid if math.isfinite(mid) else None)


# ----------------------------------------------------------------------------- check


def nice(x: float) -> float:
    """The nearest lr of the 1-2-5 series (nearest in log10), as people write learning rates.

    Check candidates are rounded to it, so nearby suggestions from different finds are the
    same candidate and the recommendation reads as a number one would type.

    >>> [nice(v) for v in (0.0167, 0.03, 0.7, 3.3)]
    [0.02, 0.02, 0.5, 5.0]
    """
    e = math.floor(math.log10(x))
    m = x / 10.0 ** e  # about [1, 10)
    pick = min((1, 2, 5, 10), key=lambda p: abs(math.log10(m / p)))
    return float(f"{pick}e{e}") if pick < 10 else float(f"1e{e + 1}")


@dataclass(frozen=True)
class CheckRow:
    """Short training runs at one lr: the median final loss over seeds (None: all diverged),
    and each seed's final loss and accuracy (None where that seed diverged)."""

    rule: str
    factor: float
    lr: float
    loss: float | None
    acc: float | None
    diverged: int
    seeds: int
    losses: tuple[float | None, ...] = ()
    accs: tuple[float | None, ...] = ()


def clearly_better(a: Sequence[float], b: Sequence[float], lower: bool) -> bool:
    """Every seed of `a` beats every seed of `b`: a's worst seed beats b's best, strictly.

    With 5 seeds each, two samples of one distribution separate this way with probability
    2/252 (one side 1/252, the exact Mann-Whitney U = 0): a difference inside the seed range
    is never read as a winner.
    """
    if not len(a) or not len(b):
        return False
    return max(a) < min(b) if lower else min(a) > max(b)


def separation_chance(n: int, m: int) -> float:
    """How often `clearly_better` picks a side (either way) between n and m seeds of one and
    the same distribution: 2 / C(n+m, n) (no ties).

    >>> round(separation_chance(5, 5), 4), separation_chance(1, 1)
    (0.0079, 1.0)
    """
    return min(1.0, 2 / math.comb(n + m, n)) if n and m else 1.0


@dataclass(frozen=True)
class Recommendation:
    """The lr to use after the check: `rule` is "clear" (one candidate no other beat), "tie"
    (several are within each other's seed range: the lowest is taken) or "none"."""

    lr: float | None
    rule: str
    text: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"lr": self.lr, "rule": self.rule, "text": self.text, "evidence": self.evidence}


@dataclass
class Check:
    """Short real runs at each suggestion and x0.3 / x3 of it (rounded to the 1-2-5 series),
    every seed, and the one lr they recommend."""

    metric: str  # val_loss | train_loss
    epochs: int
    rows: list[CheckRow]

    @property
    def acc_metric(self) -> str:
        return self.metric.replace("loss", "acc")

    @property
    def best(self) -> CheckRow | None:
        """The row with the lowest median final loss (not the recommendation: see
        `recommend`)."""
        ok = [r for r in self.rows if r.loss is not None]
        return min(ok, key=lambda r: r.loss) if ok else None

    def per_lr(self) -> dict[float, dict[str, Any]]:
        """The distinct candidate lrs (ascending): who proposed each, and its seeds' finals
        per metric (loss: +inf, accuracy: -inf where a seed diverged)."""
        out: dict[float, dict[str, Any]] = {}
        for r in sorted(self.rows, key=lambda r: r.lr):
            c = out.setdefault(r.lr, {"from": [], "row": r})
            c["from"].append(f"{r.rule} x{r.factor:g}")
        has_acc = any(a is not None for r in self.rows for a in r.accs)
        for c in out.values():
            r = c["row"]
            losses = r.losses or (r.loss,)
            c["values"] = {self.metric: [math.inf if v is None else v for v in losses]}
            if has_acc:
                accs = r.accs or (r.acc,)
                c["values"][self.acc_metric] = [-math.inf if v is None else v for v in accs]
        return out

    def _compare(self, a: dict[str, Any], b: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The metrics on which a's seeds clearly beat b's, and those on which b's beat a's."""
        won, lost = [], []
        for m, va in a["values"].items():
            lower = m.endswith("loss")
            if clearly_better(va, b["values"][m], lower):
                won.append(m)
            if clearly_better(b["values"][m], va, lower):
                lost.append(m)
        return won, lost

    def recommend(self) -> Recommendation:
        """The lowest candidate lr that no other candidate beat beyond the seed range.

        Candidate a beats b when a's seeds clearly beat b's (`clearly_better`) on one metric
        (final loss, or accuracy where there is one) and b's do not clearly beat a's on the
        other. One unbeaten candidate is a clear winner; several unbeaten ones are a tie,
        and the tie goes to the lowest lr: a larger step did not show it trains better, and
        it is the one closer to instability.
        """
        cands = self.per_lr()
        live = {lr: c for lr, c in cands.items()
                if any(math.isfinite(v) for v in c["values"][self.metric])}
        base: dict[str, Any] = {"metric": self.metric, "metrics": [], "epochs": self.epochs,
                                "seeds": self.rows[0].seeds if self.rows else 0,
                                "candidates": _cand_json(cands, self.metric, self.acc_metric)}
        if not live:
            return Recommendation(None, "none", "every seed diverged at every candidate lr "
                                  "(see the curve: the loss may already blow up at start_lr)",
                                  base)
        metrics = list(next(iter(live.values()))["values"])
        base["metrics"] = metrics
        beaten: dict[float, dict[float, list[str]]] = {lr: {} for lr in cands}
        conflicts = []
        for a in live:
            for b in cands:
                if a == b:
                    continue
                won, lost = self._compare(cands[a], cands[b])
                if won and not lost:
                    beaten[b][a] = won
                elif won and lost and a < b:
                    conflicts.append({"lrs": [a, b], a: won, b: lost})
        unbeaten = [lr for lr in live if not beaten[lr]]
        if not unbeaten:  # two metrics can beat in a circle: fall back to the loss alone
            unbeaten = [lr for lr in live if not any(
                clearly_better(cands[o]["values"][self.metric],
                               cands[lr]["values"][self.metric], True) for o in live)]
        lr = min(unbeaten)
        med = {x: float(np.median(live[x]["values"][self.metric])) for x in unbeaten}
        best_med = min(med, key=med.get)
        for c in base["candidates"]:
            c["beaten_by"] = {fmt(k): v for k, v in beaten[c["lr"]].items()}
        won_on = sorted({m for b in cands if b != lr for m in beaten[b].get(lr, [])})
        ev = {**base, "tied_with": [x for x in unbeaten if x != lr], "best_median_lr": best_med,
              "decided_by": won_on, "conflicts": [
                  {"lrs": c["lrs"], "favours": {fmt(k): v for k, v in c.items()
                                                if k != "lrs"}} for c in conflicts
                  if set(c["lrs"]) <= set(unbeaten)]}
        where = " and ".join(metrics)
        n = base["seeds"]
        ev["chance_separation"] = separation_chance(n, n)
        if len(unbeaten) == 1:
            text = (f"lr {fmt(lr)} is the one candidate no other beat beyond the seed range on "
                    f"{where} (it won on {', '.join(won_on) or where})")
            if ev["chance_separation"] > 0.05:
                text += (f"; with {n} seed{'s' * (n > 1)} two equal lrs separate this way "
                         f"{ev['chance_separation']:.0%} of the time: use more seeds")
            return Recommendation(lr, "clear", text, ev)
        others = ", ".join(fmt(x) for x in unbeaten if x != lr)
        text = (f"lr {fmt(lr)} and {others} end within each other's seed range on "
                f"{where}; the lowest lr is taken (best median: {fmt(best_med)})")
        if not won_on and lr == min(live):
            text += ("; nothing was separated from the lowest candidate: every higher lr has a "
                     "seed that ended as badly (often one that failed to learn), so more seeds "
                     "or epochs, or a setup that trains more reliably, would tell")
        if ev["conflicts"]:
            text += "; " + "; ".join(
                " and ".join(f"{'/'.join(v)} favours {k}" for k, v in c["favours"].items())
                for c in ev["conflicts"])
        return Recommendation(lr, "tie", text, ev)

    def verdicts(self) -> dict[str, str]:
        """Per rule: did the suggestion beat x0.3 and x3 of it beyond the seed range?"""
        cands = self.per_lr()
        out = {}
        for name in dict.fromkeys(r.rule for r in self.rows):
            trio = {r.factor: cands[r.lr] for r in self.rows if r.rule == name}
            ok = {f: c for f, c in trio.items()
                  if any(math.isfinite(v) for v in c["values"][self.metric])}
            if not ok:
                out[name] = "every run diverged"
                continue
            if 1.0 not in ok:
                out[name] = "every run at the suggestion itself diverged: it is too high"
                continue
            better = {f: self._compare(c, trio[1.0]) for f, c in trio.items() if f != 1.0}
            wins = {f: won for f, (won, lost) in better.items() if won and not lost}
            loses = {f for f, (won, lost) in better.items() if lost and not won}
            if len(wins) > 1:
                out[name] = ("x0.3 and x3 both trained better than x1 beyond the seed range: "
                             "the outcome is noisy around this lr (more seeds or epochs would "
                             "tell)")
            elif wins:
                f, won = next(iter(wins.items()))
                out[name] = (f"x{f:g} trained better beyond the seed range ({', '.join(won)} "
                             f"median {_med(trio[f], won[0])} vs {_med(trio[1.0], won[0])}): "
                             f"the suggestion is {'too low' if f > 1 else 'too high'}")
            elif len(loses) == len(better):
                out[name] = "confirmed: trains better than x0.3 and x3, beyond the seed range"
            else:
                out[name] = ("no clear winner: x1 ends within the seed range of "
                             + " and ".join(f"x{f:g}" for f in better if f not in loses))
        return out


def _med(c: dict[str, Any], metric: str) -> str:
    return fmt(float(np.median(c["values"][metric])))


def _spread(vals: Sequence[float]) -> dict[str, float | None]:
    ok = [v for v in vals if math.isfinite(v)]
    if not ok:
        return {"median": None, "min": None, "max": None}
    return {"median": _num(float(np.median(vals))), "min": float(min(ok)),
            "max": float(max(ok))}


def _cand_json(cands: Mapping[float, dict[str, Any]], metric: str,
               acc_metric: str) -> list[dict[str, Any]]:
    out = []
    for lr, c in cands.items():
        v = c["values"]
        out.append({"lr": lr, "from": c["from"], metric: _spread(v[metric]),
                    acc_metric: _spread(v[acc_metric]) if acc_metric in v else None,
                    "diverged": c["row"].diverged, "seeds": c["row"].seeds, "beaten_by": {}})
    return out


def candidates(sugg: Mapping[str, Suggestion]) -> list[tuple[str, float, float]]:
    """(rule, factor, lr) for each suggestion that has an lr, at CHECK_FACTORS, the lr rounded
    to the 1-2-5 series (`nice`)."""
    return [(name, f, nice(s.lr * f)) for name, s in sugg.items() if s.lr
            for f in CHECK_FACTORS]


def check_epochs(steps_per_epoch: int, epochs: int | None) -> int:
    """The epochs of a check run (see CHECK_STEPS)."""
    if epochs is not None:
        return epochs
    return int(min(50, max(1, math.ceil(CHECK_STEPS / max(1, steps_per_epoch)))))


def check_rows(cands: Sequence[tuple[str, float, float]],
               finals: Mapping[float, Sequence[float | None]],
               accs: Mapping[float, Sequence[float | None]] | None) -> list[CheckRow]:
    """Median final metric per candidate lr (non-finite = diverged), with each seed's."""
    rows = []
    for name, f, lr in cands:
        vals = np.array([v if v is not None and math.isfinite(v) else np.inf
                         for v in finals[lr]])
        med = float(np.median(vals))
        acc, seed_accs = None, ()
        if accs is not None:
            a = [x for x, v in zip(accs[lr], vals) if math.isfinite(v) and x is not None]
            acc = float(np.median(a)) if a and math.isfinite(med) else None
            seed_accs = tuple(None if not math.isfinite(v) or x is None else float(x)
                              for x, v in zip(accs[lr], vals))
        rows.append(CheckRow(name, f, lr, med if math.isfinite(med) else None, acc,
                             int((~np.isfinite(vals)).sum()), len(vals),
                             tuple(float(v) if math.isfinite(v) else None for v in vals),
                             seed_accs))
    return rows


# ----------------------------------------------------------------------------- the result


@dataclass
class FindResult:
    """What a range test found. `.to_json()` is the `lrlab find --json` object."""

    suggestions: dict[str, Suggestion]
    diverge_lr: float | None
    curve: Curve
    per_seed: list[SeedCurve]
    settings: Settings
    optimizer: str = ""
    check: Check | None = None
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seeds(self) -> list[int]:
        return [c.seed for c in self.per_seed]

    @property
    def recommended(self) -> Recommendation:
        """The one lr to use (`Check.recommend`); lr None when the check did not run."""
        if self.check is None:
            return Recommendation(None, "unchecked", "the check did not run (--no-check, or "
                                  "nothing to check): the suggestions are unverified readings "
                                  "of the curve")
        return self.check.recommend()

    def to_json(self) -> dict[str, Any]:
        """`{"recommended": {lr, rule, evidence}, "suggestions": {...lr...}, "diverge_lr",
        "curve": {lr, loss, lo, hi}}` + details."""
        out: dict[str, Any] = {
            "recommended": self.recommended.to_json(),
            "suggestions": {k: s.lr for k, s in self.suggestions.items()},
            "diverge_lr": self.diverge_lr,
            "curve": {k: _list(getattr(self.curve, k)) for k in ("lr", "loss", "lo", "hi")},
            "suggestion_details": {k: {"lr": s.lr, "rule": s.rule, "text": describe(k),
                                       "evidence": s.evidence}
                                   for k, s in self.suggestions.items()},
            "seeds": self.seeds,
            "per_seed": [{"seed": c.seed, "start_loss": _num(c.start_loss),
                          "diverge_lr": c.diverge_lr, "lr": _list(c.lr), "loss": _list(c.loss),
                          "raw": _list(c.raw)} for c in self.per_seed],
            "settings": {**self.settings.__dict__, "optimizer": self.optimizer},
            "notices": list(self.notices),
            "seconds": round(self.seconds, 4),
            "check": None,
        }
        if self.check:
            best = self.check.best
            out["check"] = {"metric": self.check.metric, "epochs": self.check.epochs,
                            "rows": [{**r.__dict__, "losses": list(r.losses),
                                      "accs": list(r.accs)} for r in self.check.rows],
                            "best": best.__dict__ | {"losses": list(best.losses),
                                                     "accs": list(best.accs)} if best else None,
                            "verdicts": self.check.verdicts()}
        return out

    def headline(self) -> str:
        """One line: "Use lr X", with the seed range behind it (or why there is no X)."""
        rec = self.recommended
        if rec.lr is None:
            return f"No verified lr: {rec.text}"
        c = next(c for c in rec.evidence["candidates"] if c["lr"] == rec.lr)
        parts = []
        for m in rec.evidence["metrics"]:
            v = c[m]
            parts.append(f"{m} {fmt(v['median'])} (seeds {fmt(v['min'])}..{fmt(v['max'])})")
        ev = rec.evidence
        why = (f"tie with {', '.join(fmt(x) for x in ev['tied_with'])} within the seed range, "
               "the lowest lr taken" if rec.rule == "tie" else
               f"beat the other candidates beyond the seed range on "
               f"{', '.join(ev['decided_by']) or ', '.join(ev['metrics'])}")
        div = f", {c['diverged']}/{c['seeds']} diverged" if c["diverged"] else ""
        return (f"Use lr {fmt(rec.lr)}: {', '.join(parts)} after {ev['epochs']} epochs, "
                f"{ev['seeds']} seeds{div}; {why}")

    def summary(self) -> list[str]:
        """A short human summary, one line each; the first is the headline."""
        lines = [self.headline()] if self.check else []
        lines.append(f"range test: {len(self.per_seed)} seeds, {self.optimizer}, lr "
                     f"{self.settings.start_lr:g} -> {self.settings.end_lr:g} "
                     f"({self.settings.mode}, {self.settings.num_iter} steps), "
                     f"{self.seconds:.2f} s")
        for name, s in self.suggestions.items():
            lr = "none" if s.lr is None else f"{s.lr:.3g}"
            lines.append(f"  {name:<9} {lr:>9}   {describe(name)}")
        lines.append(f"  {'diverges':<9} {fmt(self.diverge_lr):>9}   median lr where the "
                     f"smoothed loss passed {self.settings.diverge_th:g} x its best")
        if self.check:
            rec = self.recommended
            ck = self.check
            metrics = rec.evidence.get("metrics") or [ck.metric]
            lines.append(f"check: {ck.epochs} epochs per run at each candidate (suggestions "
                         f"x0.3, x1, x3, rounded to 1-2-5), {len(self.per_seed)} seeds; "
                         "median (seed range)")
            lines.append(f"  {'lr':<9} " + "".join(f"{m:<26}" for m in metrics) + "from")
            for c in rec.evidence["candidates"]:
                cells = "".join(f"{cell(c[m]):<26}" for m in metrics)
                div = f"  {c['diverged']}/{c['seeds']} diverged" if c["diverged"] else ""
                mark = ("  <- use" if c["lr"] == rec.lr else
                        "  tie" if c["lr"] in rec.evidence.get("tied_with", []) else
                        "  beaten by " + ", ".join(c["beaten_by"]) if c["beaten_by"] else "")
                lines.append(f"  {fmt(c['lr']):<9} {cells}{', '.join(c['from'])}{div}{mark}")
            lines.append(f"  {rec.rule}: {rec.text}")
            for name, text in ck.verdicts().items():
                lines.append(f"  {name}: {text}")
        else:
            lines.append("unchecked: the suggestions are readings of the curve, not verified "
                         "by training (the check recommends one lr; it is on unless --no-check)")
        lines += [f"note: {n}" for n in self.notices]
        return lines

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write find.json, find.png and a self-contained report.html into `out`.

        A folder that holds another kind of lrlab result (a sweep's store or report, a
        comparison page) is refused unless `overwrite`, which removes only the files lrlab
        wrote there (`folder.remove_own`); a user's files and sub-folders stay."""
        d = Path(out)
        if check_out_dir(d, overwrite) not in (None, "find"):
            folder.remove_own(d)
        d.mkdir(parents=True, exist_ok=True)
        (d / "find.json").write_text(json.dumps(self.to_json(), indent=1) + "\n",
                                     encoding="utf-8")
        from lrlab import finder_report

        png = finder_report.plot_png(self, d / "find.png")
        return finder_report.write_html(self, d / "report.html", png)


def check_out_dir(d: Path, overwrite: bool, key: str = "--out") -> str | None:
    """Refuse (LrlabError) a path that is a file, or a folder holding another kind of result
    (a sweep's lrlab.sqlite, a report.html that no find wrote) unless `overwrite`. Returns the
    kind of result found there (`folder.kind`)."""
    return folder.check_out(d, "find", overwrite=overwrite, flag=key)


def cell(v: dict[str, float | None] | None) -> str:
    """A candidate's metric as median (min..max) over seeds; a dash when none finished."""
    if v is None or v["median"] is None:
        return "-"
    return f"{fmt(v['median'])} ({fmt(v['min'])}..{fmt(v['max'])})"


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _list(a: np.ndarray) -> list[float | None]:
    return [_num(float(v)) for v in np.asarray(a, dtype=np.float64)]


def fmt(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.4g}"


def finish(curves: list[SeedCurve], s: Settings, optimizer: str, t0: float) -> FindResult:
    """Aggregate the seeds, apply the rules and write the notices a user should read."""
    curve, diverge = aggregate(curves)
    sugg = suggest(curve.lr, curve.loss, s.num_iter)
    notices = []
    if diverge is None:
        notices.append(f"most seeds did not diverge up to end_lr={s.end_lr:g}: the upper "
                       "bound is unknown (raise end_lr)")
    if len(curve.lr) < s.num_iter // 10 + SKIP_END + 5:
        notices.append(f"the median curve has only {len(curve.lr)} points before most seeds "
                       "diverged; lower start_lr or raise num_iter")
    if all(v.lr is None for k, v in sugg.items() if k != "min10"):
        notices.append("the loss never fell along the ramp: start_lr may already be too high")
    elif len(curve.loss) and curve.loss.min() > (1 - FLAT) * curve.loss[0]:
        notices.append(f"the median loss fell by only {1 - curve.loss.min() / curve.loss[0]:.1%}"
                       " along the whole ramp: the suggestions are weak (the net learns little in "
                       "num_iter steps: raise num_iter, or check the init and the input scale)")
    return FindResult(sugg, diverge, curve, curves, s, optimizer, notices=notices,
                      seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- entry point


def find_lr(
    model: Any,
    train_loader: Any = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    optimizer: Any = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    mode: str = "exp",
    smooth: float = 0.98,
    diverge_th: float = 4.0,
    seeds: int | Sequence[int] = 5,
    first_seed: int = 0,
    val_loader: Any = None,
    check: bool = True,
    check_epochs: int | None = None,
    device: str | torch.device | None = None,
) -> FindResult:
    """The learning-rate range test, several seeds as one cohort.

    `model` is either an lrlab spec (a `Spec`, a TOML path or a TOML-shaped dict: data, model
    and optimizer as in `lrlab sweep`) or your own `torch.nn.Module`, with `train_loader`
    yielding `(inputs, targets)` batches and `loss_fn(outputs, targets) -> scalar`.

    - optimizer: a name (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw) or a
      `torch.optim` SGD/Adagrad/RMSprop/Adam/AdamW object, whose class and the settings of its
      first param group are used (its lr is ignored: the ramp sets it). None: the spec's
      optimizer, or adam for a module.
    - seeds: a count (seeds first_seed .. first_seed+seeds-1) or a list. For a module, seed s
      is `torch.manual_seed(s)` followed by `reset_parameters()` on every submodule that has
      one; all seeds see the same batches from your loader (one pass feeds the cohort).
    - val_loader (modules only): record the mean validation loss after every step instead of
      the training batch loss (slower; as torch-lr-finder's val_loader).
    - check (default True): train short runs at each suggestion and at x0.3 and x3 of it
      (rounded to the 1-2-5 series; check_epochs epochs, default about CHECK_STEPS steps;
      every seed) and recommend one lr: `result.recommended` (`Check.recommend`: a candidate
      wins only when its seeds beat the others' beyond their range, else the lowest of the
      tied lrs). Give check_epochs the horizon you will train for. check=False: the ramp
      only, as torch-lr-finder and fastai give it (much faster; `recommended.lr` is None).

    Your module's state_dict and train/eval modes, your optimizer's state and torch's global
    RNG are the same afterwards as before (restored in a `finally`).
    """
    from lrlab import spec as spec_mod

    (start_lr, end_lr, num_iter, smooth, diverge_th, seeds, first_seed,  # NumPy scalars/arrays
     check_epochs) = spec_mod.plain([start_lr, end_lr, num_iter, smooth, diverge_th, seeds,
                                     first_seed, check_epochs])
    s = Settings(start_lr, end_lr, num_iter, mode, smooth, diverge_th)
    check_settings(s)
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or first_seed < 0:
        raise bad_value("first_seed", first_seed, "an integer >= 0")
    seed_list = spec_mod.parse_seeds(list(seeds) if not isinstance(seeds, int) else seeds,
                                     first_seed)
    if isinstance(model, torch.nn.Module):
        from lrlab import finder_module

        if train_loader is None or loss_fn is None:
            raise LrlabError("find_lr(model, train_loader, loss_fn): a module needs a "
                             "train_loader and a loss_fn")
        return finder_module.find_module(model, train_loader, loss_fn, s, seed_list,
                                         optimizer=optimizer, val_loader=val_loader,
                                         check=check, epochs=check_epochs, device=device)
    if train_loader is not None or loss_fn is not None or val_loader is not None:
        raise LrlabError("train_loader, loss_fn and val_loader go with a torch.nn.Module; "
                         "a spec brings its own data")
    if optimizer is not None and not isinstance(optimizer, str):
        raise bad_value("optimizer", optimizer, "an optimizer name for a spec")
    from lrlab import finder_nets

    return finder_nets.find_spec(model, s, seed_list, check=check, epochs=check_epochs,
                                 optimizer=optimizer,
                                 device=None if device is None else str(device))
