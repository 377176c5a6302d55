"""Classify each finished run, with the numbers that justify the label, in plain words.

A verdict rule is a pure function `(RunView) -> Finding | None` in the `RULES` registry
(STYLE 11). The primary label is the first rule that fires in `PRIORITY` order; every rule that
fires is a secondary label. No label is given without evidence numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

LABELS = ("converged", "slow", "diverged", "oscillating", "collapsed", "dead_relu", "saturated",
          "overfitting")

SLOW_LAST_FRACTION = 0.2
"""`slow`: the training loss still fell by more than SLOW_MIN_DROP (relative) over the last
SLOW_LAST_FRACTION of the epochs: training was cut off while still improving."""
SLOW_MIN_DROP = 0.05
OSCILLATION_MIN_REL = 0.1
"""`oscillating`: over the last half of training, the training loss went up between epochs
by more than OSCILLATION_MIN_REL of its median, in at least OSCILLATION_MIN_SHARE of the
epoch-to-epoch changes (a converging run's loss mostly falls or stays flat)."""
OSCILLATION_MIN_SHARE = 0.3


@dataclass(frozen=True)
class RunView:
    """What a rule may look at: one member's stored results."""

    member: int
    swept: dict[str, Any]
    status: str
    diverged_epoch: int | None
    history: dict[str, list[Any]]
    n_classes: int = 0


@dataclass(frozen=True)
class Finding:
    label: str
    evidence: dict[str, Any]
    explanation: str


@dataclass(frozen=True)
class Verdict:
    label: str
    labels: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)
    explanation: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "labels": list(self.labels), "evidence": self.evidence,
                "explanation": self.explanation}


def _clean(col: Sequence[Any] | None) -> list[float]:
    return [float(x) for x in (col or []) if x is not None and math.isfinite(x)]


def _lr(v: RunView) -> str:
    lr = v.swept.get("lr")
    return f"lr {lr:g}" if isinstance(lr, (int, float)) else "this run"


def diverged(v: RunView) -> Finding | None:
    if v.status != "diverged":
        return None
    losses = _clean(v.history.get("train_loss"))
    start = losses[0] if losses else None
    last = losses[-1] if losses else None
    ev = {"diverged_epoch": v.diverged_epoch, "start_loss": start, "last_finite_loss": last}
    blew = (f"its training loss went from {start:.3g} to {last:.3g}" if start is not None
            and last is not None and last > start else "its loss became NaN/Inf")
    return Finding("diverged", ev, (
        f"At {_lr(v)} training diverged in epoch {v.diverged_epoch}: {blew}. The steps were "
        "too large for the curvature of the loss, so each update overshot the minimum by more "
        "than the last; the run was stopped there."))


def oscillating(v: RunView) -> Finding | None:
    losses = _clean(v.history.get("train_loss"))
    tail = losses[len(losses) // 2:]
    if len(tail) < 6:
        return None
    med = sorted(tail)[len(tail) // 2]
    ups = [b - a for a, b in zip(tail, tail[1:]) if b - a > OSCILLATION_MIN_REL * max(med, 1e-12)]
    share = len(ups) / (len(tail) - 1)
    if share < OSCILLATION_MIN_SHARE:
        return None
    return Finding("oscillating", {"rises_share": round(share, 3), "median_loss": med}, (
        f"At {_lr(v)} the training loss kept jumping up between epochs ({share:.0%} of the "
        f"epoch-to-epoch changes in the second half were rises of more than "
        f"{OSCILLATION_MIN_REL:.0%}): the steps bounce across the valley instead of settling."))


def slow(v: RunView) -> Finding | None:
    losses = _clean(v.history.get("train_loss"))
    if len(losses) < 3 or v.status != "ok":
        return None
    k = max(1, int(round(SLOW_LAST_FRACTION * (len(losses) - 1))))
    before, end = losses[-1 - k], losses[-1]
    drop = (before - end) / max(abs(before), 1e-12)
    if drop <= SLOW_MIN_DROP:
        return None
    return Finding("slow", {"loss_drop_last_epochs": round(drop, 4), "epochs_window": k,
                            "final_train_loss": end}, (
        f"At {_lr(v)} the loss was still falling when training stopped ({drop:.0%} lower over "
        f"the last {k} epochs): it needs more epochs or a larger learning rate."))


def converged(v: RunView) -> Finding | None:
    if v.status != "ok":
        return None
    losses = _clean(v.history.get("train_loss"))
    val = _clean(v.history.get("val_acc")) or _clean(v.history.get("train_acc"))
    if not losses:
        return None
    ev: dict[str, Any] = {"start_loss": losses[0], "final_train_loss": losses[-1]}
    if val:
        ev["final_acc"] = val[-1]
    acc = f", accuracy {val[-1]:.3f}" if val else ""
    return Finding("converged", ev, (
        f"At {_lr(v)} the loss fell from {losses[0]:.3g} to {losses[-1]:.3g} and levelled "
        f"off{acc}."))


Rule = Callable[[RunView], Finding | None]
RULES: dict[str, Rule] = {
    "diverged": diverged,
    "oscillating": oscillating,
    "slow": slow,
    "converged": converged,
}
PRIORITY: tuple[str, ...] = ("diverged", "oscillating", "slow", "converged")


def judge(v: RunView) -> Verdict:
    """Run every rule; the first in PRIORITY that fires is the label."""
    found = {name: f for name in PRIORITY if (f := RULES[name](v)) is not None}
    if not found:
        return Verdict("slow", ("slow",), {"epochs": len(v.history.get("epoch", []))},
                       "Too few epochs were recorded to judge this run.")
    primary = next(iter(found.values()))
    if primary.label != "converged":
        found.pop("converged", None)
    evidence: dict[str, Any] = {}
    for f in found.values():
        evidence.update(f.evidence)
    return Verdict(primary.label, tuple(found), evidence, primary.explanation)


def judge_all(views: Sequence[RunView]) -> dict[int, Verdict]:
    return {v.member: judge(v) for v in views}


# ----------------------------------------------------------------------------- recommendation


@dataclass(frozen=True)
class Recommendation:
    best_lr: float | None
    lr_range: tuple[float, float] | None
    metric: str
    at_edge: bool
    text: str


def recommend(views: Sequence[RunView], verdicts: dict[int, Verdict]) -> Recommendation:
    """Best lr by median final validation loss over seeds (training loss without a val set),
    and the range of lrs where every seed converged. Only compares lrs within the group of runs
    given (call it per optimizer/preprocess combination)."""
    by_lr: dict[float, list[RunView]] = {}
    for v in views:
        lr = v.swept.get("lr")
        if isinstance(lr, (int, float)):
            by_lr.setdefault(float(lr), []).append(v)
    if not by_lr:
        return Recommendation(None, None, "", False, "No learning rate axis was swept.")
    has_val = any(_clean(v.history.get("val_loss")) for v in views)
    metric = "val_loss" if has_val else "train_loss"
    scores: dict[float, float] = {}
    for lr, vs in by_lr.items():
        finals = [(_clean(v.history.get(metric)) or [math.inf])[-1] if v.status == "ok"
                  else math.inf for v in vs]
        finals.sort()
        scores[lr] = finals[len(finals) // 2]
    lrs = sorted(by_lr)
    good = [lr for lr in lrs if all(verdicts[v.member].label == "converged" for v in by_lr[lr])]
    finite = {lr: s for lr, s in scores.items() if math.isfinite(s)}
    if not finite:
        return Recommendation(None, None, metric, False,
                              "No learning rate trained without diverging.")
    best = min(finite, key=lambda lr: finite[lr])
    at_edge = len(lrs) > 1 and best in (lrs[0], lrs[-1])
    rng = (min(good), max(good)) if good else None
    text = f"Best lr {best:g} by median final {metric.replace('_', ' ')} ({finite[best]:.4g})."
    if rng:
        text += f" Every seed converged for lr in [{rng[0]:g}, {rng[1]:g}]."
    if at_edge:
        side = "smallest" if best == lrs[0] else "largest"
        text += (f" Warning: the best lr is the {side} one swept; the optimum may lie outside "
                 "the range, so extend the sweep.")
    return Recommendation(best, rng, metric, at_edge, text)
