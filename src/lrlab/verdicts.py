"""Classify each finished run, with the numbers that justify the label, in plain words.

A verdict rule is a pure function `(RunView) -> Finding | None` in the `RULES` registry
(STYLE 11). Every rule that fires is a label of the run; the primary label is the first
finding in `PRIORITY` order that may be primary (dead ReLUs and saturation are causes of a
failure only when the run failed: in a run that learned well they are secondary notes). No
label is given without evidence numbers, and every threshold below is a named constant whose
docstring gives the reasoning.

Rules read the per-epoch history the engine and the probes recorded (see `lrlab.probes` for
the metric names). Without probes the rules fall back to the loss and accuracy curves alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lrlab.spec import SELECT

LABELS = ("converged", "slow", "diverged", "oscillating", "collapsed", "dead_relu", "saturated",
          "overfitting")

# ----------------------------------------------------------------------------- thresholds

LEARN_MIN_DROP = 0.2
"""A run has *learned* when its training loss fell by at least this fraction of where it
started (over the judged phase), and its accuracy clearly beats the majority-class baseline
(see ACC_MARGIN). Below that it made no real progress: it is `slow` (or `collapsed`,
`dead_relu`, `saturated` when the probes show why). 20% is far outside the epoch-to-epoch
noise of a minibatch loss at a fixed point (about 0.1% on the blobs runs that never move) and
far below what any run that learns achieves (50-95% on the seed problems and the calibration
cases). Tuned on bench/calibration.py's tuning seeds: at 10%, sigmoid nets saturated by a 60x
weight scale whose loss crept 15-17% down (to 58-77% accuracy, stuck there) counted as
converged."""
SLOW_LAST_FRACTION = 0.2
"""`slow`: the training loss still fell by more than SLOW_MIN_DROP (relative) over the last
SLOW_LAST_FRACTION of the epochs: training was cut off while still improving. A converged
run changes by a few percent at most over its last fifth."""
SLOW_MIN_DROP = 0.05
SLOW_MIN_SHARE_OF_START = 0.02
"""... and that last stretch also removed more than 2% of the loss the run started from:
a cross-entropy loss on separable data keeps shrinking by a constant factor forever (0.005
to 0.004 is 20% lower, but nothing a learner should wait for). Tuned on bench/calibration.py's
tuning seeds: at 1% a healthy net at loss 0.08 that still sheds 1.1% of its start over its last
fifth was called slow."""
OSCILLATION_MIN_REL = 0.1
"""`oscillating`: over the last half of training, the training loss went up between epochs
by more than OSCILLATION_MIN_REL of its median, in at least OSCILLATION_MIN_SHARE of the
epoch-to-epoch changes (a converging run's loss mostly falls or stays flat; minibatch noise
at a fixed point is about 1%)."""
OSCILLATION_MIN_SHARE = 0.3
DEAD_LAYER_MIN = 0.5
"""`dead_relu`: at the end, at least this share of one hidden layer's ReLUs are dead (<= 0 for
every probe sample), and either the whole layer is dead or training killed them (the share
rose by at least DEAD_RISE_MIN since the start of the judged phase: some units dead at init
in a layer that still passes signal are a symptom of the start, not of the lr). Half a layer
gone halves its capacity; a whole layer gone (1.0) cuts every path from the input to the
output, so the output cannot depend on the input and no gradient reaches the layers below: the
run can never recover. `dead_relu` is the primary label when a whole layer died, or when the
run failed to learn while its output still depends on the input; when the output never
depended on the input (a flat start, see FLAT_SPREAD) the primary label is `collapsed` and
the dead units are a secondary note."""
DEAD_RISE_MIN = 0.2
SAT_LAYER_MIN = 0.5
"""`saturated`: at the end, at least this share of one sigmoid/tanh layer's (unit, sample)
pre-activations sit beyond probes.SAT_THRESHOLD, where the derivative is below ~7% of its
peak. When most of a layer passes back less than a fourteenth of the gradient, the layers
below it (and its own weights) barely move: the run cannot leave that state by gradient
steps of the size that trains a healthy net."""
COLLAPSE_SHARE = 0.95
"""`collapsed`: at least this share of the probe batch is predicted as one class, and the
training accuracy is no better than always answering the most frequent class (within
COLLAPSE_ACC_MARGIN). The accuracy condition keeps a good model of a heavily imbalanced
problem (which also predicts one class most of the time) from being called collapsed."""
COLLAPSE_ACC_MARGIN = 0.05
COLLAPSE_LOSS_TOL = 0.02
"""Without probes: a softmax run whose final training loss is within 2% of ln(C) (the loss of
predicting every class with the same probability) and whose accuracy is at most 1/C + 0.1
counts as collapsed."""
FLAT_SPREAD = 0.05
"""`output_spread` (std of the output pre-activations across inputs) below this means the
output barely depends on the input: softmax probabilities then differ by less than ~5% between
inputs, so every input gets the same answer."""
BIG_UPDATE = 0.1
"""An epoch that changes a layer's weights by 10% or more of their norm is a large step: a few
of them can move a ReLU unit's whole input range below zero. A healthy run's per-epoch
update ratio is typically 0.1-1% (Karpathy's rule of thumb is about 1e-3 per step)."""
OVERFIT_MIN_EPOCHS = 5
"""`overfitting`: the validation loss reached its minimum at least OVERFIT_MIN_EPOCHS epochs
before the end, ended at least OVERFIT_RISE (relative) above that minimum, while the training
loss kept falling; and train accuracy exceeds val accuracy by at least OVERFIT_ACC_GAP.
Several epochs of rise rule out noise; 10% is well beyond the epoch-to-epoch jitter of a
validation loss; 5 points of accuracy gap is what separates memorising from generalising on
the small validation sets of the seed problems (a fluctuation of one or two samples there is
1-2 points)."""
OVERFIT_RISE = 0.1
OVERFIT_ACC_GAP = 0.05
PLATEAU_DROP = 0.02
"""A *plateau at the start*: the training loss stayed within 2% of its starting value for at
least PLATEAU_MIN_SHARE of the epochs before it began to fall (the flat start of a too-small
initialisation: the run only begins to learn once it escapes). 2% is well above the
epoch-to-epoch jitter of a loss that is not moving (about 0.1% on the blobs runs)."""
PLATEAU_MIN_SHARE = 0.1
SPIKE_FACTOR = 1.5
"""A *spike*: the training loss rose above SPIKE_FACTOR x its starting value at some epoch
and the run still ended below where it started (it recovered)."""
ACC_MARGIN = 0.1
"""A run *beats the baseline clearly* when its accuracy is at least ACC_MARGIN above always
answering the most frequent class (the probes' `majority_share`; 1/C without probes), or
halfway from that baseline to 1 when the baseline is above 0.8. Ten points is two to three
binomial standard deviations of a chance-level accuracy on the 100-300 validation samples of
the seed problems, so a run at chance (a random-label set, a collapsed or saturated net) does
not pass by luck, while every run that learns anything real passes by far (0.9 and above)."""
LATE_RISE_MIN = 0.05
"""`converged` needs a loss that stopped improving *without rising*: over the last
SLOW_LAST_FRACTION of the epochs the training loss must not end more than LATE_RISE_MIN
(relative) above its lowest value in that stretch, and the rise must also exceed
SLOW_MIN_SHARE_OF_START of the starting loss to count (a loss of 0.004 that ends at 0.0045
has not failed). The full-set loss at the end of an epoch of a settled run moves by a percent
or two; 5% up over the last fifth of training means the run is being pushed out of its
valley (an lr near the edge of stability), which is `oscillating`, not converged."""
LATE_RISE_GIVEN_BACK = 0.05
"""... and the rise must give back at least this share of the progress the run had made
(start minus lowest loss): a loss of 0.105 that drifts to 0.117 after falling from 0.7 gave
back 2% (a net fitting a tiny training set at the edge of stability, still overfitting, not
failing); one that climbs from 0.3 to 0.36 after falling from 0.7 gave back 15%. Tuned on
bench/calibration.py's tuning seeds."""
BLOWUP_FACTOR = 3.0
"""`diverged` without the engine stopping it: the training loss ended at least BLOWUP_FACTOR
times where it started and stayed there (the median of the last half too). The engine stops
a run only past 100x its start; a full-batch run far above its stability edge can bounce
between 3x and 50x its start for ever (its tanh units saturated, so the loss is bounded), and
that is divergence, not a run that oscillates around a solution."""

ADAPTIVE = ("adagrad", "rmsprop", "adam", "adamw")
"""Optimizers whose effective step is preconditioned per parameter: their stability edge is
on the preconditioned sharpness (see `edge_of`), not the raw Hessian's."""


# ----------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class RunView:
    """What a rule may look at: one member's stored results.

    `setup` holds the member's resolved settings a rule may cite: activation, output, init,
    init_scale, hidden, optimizer, momentum, nesterov, batch_size, epochs, and `phases` (one
    dict of epochs/lr/batch_size per training phase)."""

    member: int
    swept: dict[str, Any]
    status: str
    diverged_epoch: int | None
    history: dict[str, list[Any]]
    n_classes: int = 0
    setup: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """One rule's result. `primary` is False for a cause that is present but did not stop the
    run from learning (it becomes a secondary label); `summary` is the one-line form used when
    the finding is secondary."""

    label: str
    evidence: dict[str, Any]
    explanation: str
    primary: bool = True
    summary: str = ""


@dataclass(frozen=True)
class Verdict:
    label: str
    labels: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)
    explanation: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "labels": list(self.labels), "evidence": self.evidence,
                "explanation": self.explanation}


# ----------------------------------------------------------------------------- reading runs


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _clean(col: Sequence[Any] | None) -> list[float]:
    return [float(x) for x in (col or []) if _finite(x)]


def _r(x: float | None, digits: int = 4) -> float | None:
    """Round for evidence (significant digits), keeping None."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 or x == 0 else f"{100 * x:.2g}%"


def _g(x: float | None) -> str:
    return "?" if x is None else f"{x:.3g}"


class _Run:
    """Derived views of one RunView: the judged window (the last training phase), the loss
    curve in it, and probe series by name. Internal to the rules; `_Run.of(v)` builds it once
    per view (judge runs every rule on the same view)."""

    _last: list[tuple[RunView, _Run]] = []

    @classmethod
    def of(cls, v: RunView) -> _Run:
        if cls._last and cls._last[0][0] is v:
            return cls._last[0][1]
        r = cls(v)
        cls._last[:] = [(v, r)]
        return r

    def __init__(self, v: RunView) -> None:
        self.v = v
        self._series: dict[tuple[str, bool], list[tuple[int, float]]] = {}
        h = v.history
        self.epochs: list[int] = [int(e) for e in h.get("epoch", [])]
        phase = h.get("phase") or [None] * len(self.epochs)
        last = max((p for p in phase if _finite(p)), default=0)
        self.phase = int(last)
        # the record just before the last phase began (epoch 0 for a single phase)
        self.start = max((i for i, p in enumerate(phase) if _finite(p) and p < last),
                         default=0)
        self.idx = list(range(self.start, len(self.epochs)))

    def col(self, name: str) -> list[Any]:
        c = self.v.history.get(name) or []
        return list(c) + [None] * (len(self.epochs) - len(c))

    def series(self, name: str, window: bool = True) -> list[tuple[int, float]]:
        """(epoch, value) pairs with a finite value, in the judged window by default."""
        key = (name, window)
        if key not in self._series:
            c = self.v.history.get(name) or []
            lo = self.start if window else 0
            ep = self.epochs
            self._series[key] = [(ep[i], float(x)) for i, x in enumerate(c[lo:len(ep)], lo)
                                 if x is not None and x == x and abs(x) != math.inf]
        return self._series[key]

    def first(self, name: str) -> float | None:
        s = self.series(name)
        return s[0][1] if s else None

    def last(self, name: str) -> float | None:
        s = self.series(name)
        return s[-1][1] if s else None

    def losses(self) -> list[float]:
        return [x for _, x in self.series("train_loss")]

    def layers(self, prefix: str) -> list[int]:
        pat = re.compile(re.escape(prefix) + r"_l(\d+)$")
        return sorted(int(m.group(1)) for k in self.v.history if (m := pat.match(k)))

    @property
    def lr(self) -> float | None:
        """The learning rate of the judged phase (its last recorded step)."""
        lr = self.last("lr")
        if lr is None:
            s = self.v.swept.get("lr")
            lr = float(s) if _finite(s) else None
        return lr

    @property
    def edge(self) -> Edge:
        return edge_of(self.v.setup)

    @property
    def n_layers(self) -> int:
        return max(self.layers("weight_norm") or self.layers("grad_norm") or
                   self.layers("update_ratio") or [0])

    def drop(self) -> float | None:
        """Relative fall of the training loss over the judged window (1 = to zero)."""
        ls = self.losses()
        if len(ls) < 2 or ls[0] <= 0:
            return None
        return (ls[0] - ls[-1]) / ls[0]

    def baseline(self) -> float | None:
        """The accuracy of always answering the most frequent class: the probes'
        `majority_share`, else 1/C (None when neither is known)."""
        maj = self.last("majority_share")
        if maj is None and self.v.n_classes >= 2:
            maj = 1.0 / self.v.n_classes
        return maj

    def beats(self, acc: float | None) -> bool:
        """`acc` clearly beats the baseline (see ACC_MARGIN); True when either is unknown."""
        base = self.baseline()
        if acc is None or base is None:
            return True
        return acc >= base + min(ACC_MARGIN, (1 - base) / 2)

    def acc(self) -> float | None:
        """The accuracy a run is judged by: validation when there is a validation set."""
        va = self.last("val_acc")
        return va if va is not None else self.last("train_acc")

    def learned(self) -> bool:
        """The training loss fell by LEARN_MIN_DROP and the judged accuracy clearly beats
        always answering the most frequent class."""
        d = self.drop()
        return d is not None and d >= LEARN_MIN_DROP and self.beats(self.acc())

    def fitted(self) -> bool:
        """Like `learned`, on the training set alone (a net that memorised its training set
        fitted it without learning anything that generalises)."""
        d = self.drop()
        return d is not None and d >= LEARN_MIN_DROP and self.beats(self.last("train_acc"))

    def late_rise(self) -> tuple[float, float, int] | None:
        """(lowest, final, epochs) when the training loss ended more than LATE_RISE_MIN above
        its lowest value over the last SLOW_LAST_FRACTION of the judged window."""
        ls = self.losses()
        if len(ls) < 3:
            return None
        k = max(1, int(round(SLOW_LAST_FRACTION * (len(ls) - 1))))
        lo, end = min(ls[-1 - k:]), ls[-1]
        if end > lo * (1 + LATE_RISE_MIN) and \
                end - lo >= LATE_RISE_GIVEN_BACK * max(ls[0] - min(ls), 0.0) > 0:
            return lo, end, k
        return None

    def blew_up(self) -> bool:
        """The loss ended BLOWUP_FACTOR above its start and its last half stayed there."""
        ls = self.losses()
        if len(ls) < 4 or not ls[0] > 0:
            return False
        tail = sorted(ls[len(ls) // 2:])
        return ls[-1] >= BLOWUP_FACTOR * ls[0] and tail[len(tail) // 2] >= BLOWUP_FACTOR * ls[0]

    def where(self) -> str:
        """'At lr 0.5' plus the phase when there are several."""
        lr = self.lr
        at = f"At lr {lr:g}" if lr is not None else "In this run"
        if self.phase > 0:
            e0 = self.epochs[self.start] if self.epochs else 0
            before = (self.v.setup.get("phases") or [])[: self.phase]
            after = "; ".join(f"{p['epochs']} epochs at lr {p['lr']:g}" +
                              (f", batch {p['batch_size']}" if p.get("batch_size") else "")
                              for p in before)
            at += f" (phase {self.phase + 1}, from epoch {e0}" + (
                f", after {after})" if after else ")")
        return at


@dataclass(frozen=True)
class Edge:
    """Where an optimizer's steps turn unstable on a quadratic: stable for lr < c / lam, with
    lam the top eigenvalue of the history key `quantity` (`sharpness`: the Hessian's;
    `precond_sharpness`: the preconditioned Hessian P^-1/2 H P^-1/2's, see lrlab.probes).

    - gradient descent: x <- x - lr lam x, stable for lr lam < 2 (c = 2);
    - heavy-ball momentum m (torch's SGD): x_{t+1} = x_t - lr lam x_t + m (x_t - x_{t-1}), the
      characteristic roots leave the unit disc through -1 at lr lam = 2 + 2m;
    - Nesterov (torch's form, buf = m buf + g, step g + m buf): the recursion on
      (x_t, lr buf_{t-1}) has characteristic polynomial z^2 - (1+m)(1-a) z + m(1-a),
      a = lr lam, with a root at -1 for a = (2 + 2m)/(1 + 2m);
    - Adam/AdamW with a frozen preconditioner P = sqrt(v_hat) + eps: the first moment is an EMA
      (1 - b1) g + b1 m, i.e. heavy-ball with momentum b1 and step lr (1 - b1) on P^-1 H, so
      the edge is lr (1 - b1) lam_P = 2 + 2 b1, c = (2 + 2 b1)/(1 - b1) (38 at b1 = 0.9;
      Cohen et al., "Adaptive gradient methods at the edge of stability", 2022);
    - RMSprop (P = sqrt(v) + eps) and Adagrad (P = sqrt(sum) + eps): gradient descent on
      P^-1 H, c = 2 (RMSprop with momentum m: c = 2 + 2m, its buffer is heavy-ball's).
    """

    quantity: str
    c: float
    formula: str  # e.g. "2/λ", "(2 + 2·0.9)/λ", "38/λ_P"
    what: str  # the quantity in words

    def lr(self, lam: float | None) -> float | None:
        """The largest stable lr at this curvature (None for a non-positive or missing lam)."""
        if lam is None or not lam > 0 or not math.isfinite(lam):
            return None
        return self.c / lam

    def rule(self, lam: float, lim: float) -> str:
        """'2/6.2 = 0.32' in words for the explanations."""
        return f"{self.formula.replace('λ_P', f'{lam:.3g}').replace('λ', f'{lam:.3g}')} = {lim:.3g}"


def edge_of(setup: Mapping[str, Any]) -> Edge:
    """The stability edge for a run's optimizer settings (RunView.setup keys `optimizer`,
    `momentum`, `nesterov`, `beta1`)."""
    opt = setup.get("optimizer", "sgd") or "sgd"
    m = float(setup.get("momentum") or 0.0)
    if opt in ("adam", "adamw"):
        b1 = setup.get("beta1")
        b1 = 0.9 if b1 is None else float(b1)
        c = (2 + 2 * b1) / (1 - b1) if b1 < 1 else math.inf
        return Edge("precond_sharpness", c, f"{c:.3g}/λ_P" if b1 == 0.9 else
                    f"(2 + 2·{b1:g})/((1 − {b1:g})·λ_P)",
                    "the preconditioned sharpness λ_P (top eigenvalue of P^-1/2 H P^-1/2, P "
                    "= sqrt(v̂) + eps, Adam's per-parameter step scale)")
    if opt in ("rmsprop", "adagrad"):
        mm = m if opt == "rmsprop" else 0.0
        p = "sqrt(v) + eps" if opt == "rmsprop" else "sqrt(sum of g²) + eps"
        return Edge("precond_sharpness", 2 + 2 * mm,
                    "2/λ_P" if mm == 0 else f"(2 + 2·{mm:g})/λ_P",
                    f"the preconditioned sharpness λ_P (top eigenvalue of P^-1/2 H P^-1/2, P = "
                    f"{p}, {opt}'s per-parameter step scale)")
    what = "the sharpest curvature of the loss (top Hessian eigenvalue) λ"
    if m > 0 and (setup.get("nesterov") or opt == "nesterov"):
        return Edge("sharpness", (2 + 2 * m) / (1 + 2 * m),
                    f"(2 + 2·{m:g})/((1 + 2·{m:g})·λ)", what)
    if m > 0:
        return Edge("sharpness", 2 + 2 * m, f"(2 + 2·{m:g})/λ", what)
    return Edge("sharpness", 2.0, "2/λ", what)


def stability_lr(sharpness: float | None, optimizer: str = "sgd", momentum: float = 0.0,
                 nesterov: bool = False, beta1: float | None = None) -> float | None:
    """The largest lr for which the optimizer is stable on a quadratic whose top curvature
    (preconditioned, for adaptive optimizers) is `sharpness` (see `Edge`); None for a
    non-positive sharpness."""
    return edge_of({"optimizer": optimizer, "momentum": momentum, "nesterov": nesterov,
                    "beta1": beta1}).lr(sharpness)


def _stability(r: _Run, epoch_index: int | None = None) -> tuple[float | None, float | None,
                                                                 int | None]:
    """(sharpness, its stability lr, epoch) at the start of the judged window (or the first
    measurement after it), in the quantity that sets the run's optimizer's edge."""
    s = r.series(r.edge.quantity)
    if not s:
        return None, None, None
    e, lam = s[0] if epoch_index is None else s[epoch_index]
    return lam, r.edge.lr(lam), e


def _opt(r: _Run) -> str:
    """The optimizer in words, for the stability sentences."""
    st = r.v.setup
    opt = st.get("optimizer", "sgd") or "sgd"
    if opt in ADAPTIVE:
        return {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
                "adagrad": "Adagrad"}[opt]
    m = float(st.get("momentum") or 0.0)
    if m > 0:
        return ("Nesterov" if st.get("nesterov") or opt == "nesterov" else "heavy-ball") + \
            f" momentum {m:g}"
    return "gradient descent"


def _plateau(r: _Run) -> tuple[int, int] | None:
    """(epochs spent, the epoch it ended) when the training loss sat within PLATEAU_DROP of
    its start for at least PLATEAU_MIN_SHARE of the judged window before it fell."""
    s = r.series("train_loss")
    if len(s) < 10:
        return None
    e0, l0 = s[0]
    end = next((e for e, x in s if abs(x - l0) > PLATEAU_DROP * l0), None)
    if end is None or (end - e0) < PLATEAU_MIN_SHARE * (s[-1][0] - e0):
        return None
    if dict(s)[end] > l0:  # it left the plateau upwards (a spike), not by learning
        return None
    return end - e0, end


def _since(series: list[tuple[int, float]], level: float) -> int | None:
    """The first epoch from which the series stayed at or above `level` to the end."""
    since = None
    for e, x in series:
        if x >= level:
            since = e if since is None else since
        else:
            since = None
    return since


# ----------------------------------------------------------------------------- rules


def diverged(v: RunView) -> Finding | None:
    r = _Run.of(v)
    if v.status != "diverged":
        return _blown_up(r) if v.status == "ok" and r.blew_up() else None
    losses = _clean(v.history.get("train_loss"))
    start = losses[0] if losses else None
    last = losses[-1] if losses else None
    ev: dict[str, Any] = {"diverged_epoch": v.diverged_epoch, "lr": _r(r.lr),
                          "start_loss": _r(start), "last_finite_loss": _r(last)}
    blew = (f"its training loss went from {start:.3g} to {last:.3g} and then past any bound"
            if start is not None and last is not None and last > start
            else "its loss became NaN or infinite")
    text = (f"{r.where()} training diverged in epoch {v.diverged_epoch}: {blew}. ")
    edge = _edge_evidence(r, ev)
    if edge is not None:
        lam, lim, e = edge
        if r.lr > lim:
            text += (_over_edge(r, lam, lim, e) + ". Along that direction every step "
                     "overshoots the minimum by more than the distance it had, so the error "
                     "grows geometrically until the run is stopped. This is divergence, not a "
                     "wrong gradient.")
        else:
            peak = max(r.series(r.edge.quantity), key=lambda p: p[1])
            ev.update(sharpness_max=_r(peak[1]), sharpness_max_epoch=peak[0])
            text += (f"lr {r.lr:g} was below the stability limit {r.edge.formula} = {lim:.3g} "
                     f"at epoch {e}, so the instability came later: the curvature grew during "
                     f"training (to {peak[1]:.3g} at epoch {peak[0]}, limit "
                     f"{_g(r.edge.lr(peak[1]))}) until the steps overshot.")
    else:
        text += ("The steps were too large for the curvature of the loss, so each update "
                 "overshot the minimum by more than the last; the run was stopped there.")
    return Finding("diverged", ev, text.strip(),
                   summary=f"diverged in epoch {v.diverged_epoch}")


def _edge_evidence(r: _Run, ev: dict[str, Any]) -> tuple[float, float, int] | None:
    """The sharpness and stability lr at init (added to `ev`); None where not measured."""
    lam, lim, e = _stability(r)
    if lam is None or lim is None or r.lr is None:
        return None
    ev.update(sharpness_init=_r(lam), stability_lr=_r(lim), lr_over_stability=_r(r.lr / lim))
    return lam, lim, e


def _over_edge(r: _Run, lam: float, lim: float, e: int) -> str:
    """'At epoch e <quantity> was λ, so <optimizer> is stable only for lr below ...'."""
    return (f"At epoch {e} {r.edge.what} was {lam:.3g}, so {_opt(r)} is stable only for lr "
            f"below {r.edge.rule(lam, lim)}; lr {r.lr:g} is {r.lr / lim:.3g}x that")


def _blown_up(r: _Run) -> Finding:
    """A run whose loss blew up and stayed up without reaching the engine's stop threshold."""
    ls = r.losses()
    tail = sorted(ls[len(ls) // 2:])
    med = tail[len(tail) // 2]
    ev: dict[str, Any] = {"start_loss": _r(ls[0]), "final_train_loss": _r(ls[-1]),
                          "median_loss_last_half": _r(med), "blowup": _r(ls[-1] / ls[0]),
                          "lr": _r(r.lr)}
    text = (f"{r.where()} training diverged: the training loss went from {ls[0]:.3g} to "
            f"{ls[-1]:.3g} ({ls[-1] / ls[0]:.2g}x its start) and stayed up (median "
            f"{med:.3g} over the second half), bounded only because the units saturated. ")
    edge = _edge_evidence(r, ev)
    if edge is not None and r.lr > edge[1]:
        text += _over_edge(r, *edge) + ": every step overshoots along the sharpest direction. "
    text += "A smaller lr (below the stability limit) trains."
    return Finding("diverged", ev, text.strip(), summary=f"loss up {ls[-1] / ls[0]:.2g}x")


def dead_relu(v: RunView) -> Finding | None:
    r = _Run.of(v)
    layers = r.layers("dead_frac")
    if not layers:
        return None
    finals = {lay: r.last(f"dead_frac_l{lay}") for lay in layers}
    finals = {lay: x for lay, x in finals.items() if x is not None}
    if not finals:
        return None
    worst = max(finals, key=lambda lay: (finals[lay], -lay))  # ties: where the signal stops
    frac = finals[worst]
    init = r.first(f"dead_frac_l{worst}") or 0.0
    blocked = frac >= 1.0
    if frac < DEAD_LAYER_MIN or (frac - init < DEAD_RISE_MIN and not blocked):
        return None
    series = r.series(f"dead_frac_l{worst}")
    since = _since(series, min(frac, max(DEAD_LAYER_MIN, init + DEAD_RISE_MIN)))
    at_since = dict(series).get(since, frac) if since is not None else frac
    all_since = _since(series, frac)
    ev: dict[str, Any] = {"dead_layer": worst, "dead_frac_layer": _r(frac),
                          "dead_since_epoch": since, "dead_frac_layer_at_since": _r(at_since),
                          "dead_frac_layer_init": _r(init), "dead_frac": _r(r.last("dead_frac")),
                          "lr": _r(r.lr)}
    if at_since < frac:
        when = (f"{_pct(at_since)} from epoch {since} on, {_pct(frac)} from epoch {all_since}")
        ev["dead_final_since_epoch"] = all_since
    else:
        when = f"from epoch {since} on"
    text = (f"{r.where()} {_pct(frac)} of the layer-{worst} ReLUs are dead ({when}; at the "
            f"start {_pct(init)}): their pre-activation is negative for every input, so they "
            "output 0 and pass no gradient back to their weights, and nothing revives them. ")
    upd = r.series(f"update_ratio_l{worst}")
    before = [x for e, x in upd if since is not None and e <= since]
    big = max(before) if before else None
    spread0 = r.first("output_spread")
    if big is not None:
        ev["update_ratio_max_before"] = _r(big)
    e0 = r.epochs[r.start] if r.epochs else 0
    if since == e0 and init >= frac:
        text += ("They were dead from the start: the initial weights and biases put every "
                 "input on the flat, zero side of the ReLU. ")
    elif big is not None and big >= BIG_UPDATE:
        text += (f"Before they died, one epoch changed layer {worst}'s weights by up to "
                 f"{_pct(big)} of their size: steps that large throw a unit's weights and bias "
                 "to where every input lands on the flat, zero side of the ReLU. ")
    elif spread0 is not None and spread0 < FLAT_SPREAD:
        ev["output_spread_init"] = _r(spread0)
        text += (f"The weights hardly moved (at most {_pct(big or 0)} per epoch), but the signal "
                 f"reaching the deep layers is tiny (at the start the output varied by only "
                 f"{spread0:.2g} across inputs): a pre-activation there is almost just its bias, "
                 f"so the small bias steps of lr {_g(r.lr)} were enough to push each unit below "
                 "zero for every input. ")
    lam, lim, _ = _stability(r)
    if lim is not None and r.lr is not None and r.lr < lim:
        ev.update(sharpness_init=_r(lam), stability_lr=_r(lim))
        text += (f"It is not overshooting in the usual sense: at the start {r.edge.what} was "
                 f"{lam:.3g}, so steps are stable up to lr {r.edge.rule(lam, lim)}. ")
    acc = r.last("val_acc") if r.last("val_acc") is not None else r.last("train_acc")
    major = r.last("majority_share")
    top = r.last("top_class_share")
    if acc is not None:
        ev["final_acc"] = _r(acc)
    if major is not None:
        ev["majority_share"] = _r(major)
    if top is not None:
        ev["top_class_share"] = _r(top)
    if blocked:
        text += (f"With every unit of layer {worst} dead the output no longer depends on the "
                 "input at all")
        if top is not None:
            text += f": the net gives one answer for {_pct(top)} of the inputs"
        if acc is not None and major is not None:
            text += (f", and its accuracy {acc:.2f} is that of always answering one class (the "
                     f"most common class is {_pct(major)} of the data)")
        text += ". The run cannot recover: no gradient reaches the layers below, so no number "
        text += ("of epochs helps; a smaller lr avoids it." if big is not None and
                 big >= BIG_UPDATE else "of epochs helps; an initialisation that keeps the "
                 "signal alive through the layers (He for ReLU) avoids it.")
    elif not r.learned() and acc is not None:
        text += (f"The surviving units carry too little signal to fit the data (accuracy "
                 f"{acc:.2f}).")
    elif acc is not None:
        text += (f"The run still learned with the units that remain (accuracy {acc:.2f}): dead "
                 "units cost capacity, and matter when they take most of a layer.")
    spread = r.last("output_spread")
    flat = spread is not None and spread < FLAT_SPREAD
    failed = blocked or (not r.learned() and not flat)
    return Finding("dead_relu", ev, text.strip(), primary=failed,
                   summary=f"{_pct(frac)} of the layer-{worst} ReLUs dead from epoch {since}")


def saturated(v: RunView) -> Finding | None:
    r = _Run.of(v)
    layers = r.layers("sat_frac")
    out_layer = r.n_layers
    output = v.setup.get("output")
    # the output layer's saturation stalls learning only with the quadratic cost (with
    # cross-entropy the output's gradient is p - y whatever the saturation)
    cand = [lay for lay in layers if lay != out_layer or output == "quadratic" or
            (output is None and len(layers) == 1)]
    finals = {lay: r.last(f"sat_frac_l{lay}") for lay in cand}
    finals = {lay: x for lay, x in finals.items() if x is not None}
    if not finals:
        return None
    worst = max(finals, key=lambda lay: (finals[lay], -lay))
    frac = finals[worst]
    if frac < SAT_LAYER_MIN:
        return None
    init = r.first(f"sat_frac_l{worst}") or 0.0
    at_init = r.series(f"sat_frac_l{worst}", window=False)[0][1]
    since = _since(r.series(f"sat_frac_l{worst}"), SAT_LAYER_MIN)
    others = {lay: x for lay, x in finals.items() if lay != worst and x >= SAT_LAYER_MIN}
    act = v.setup.get("activation", "sigmoid") if worst != out_layer else "sigmoid"
    thr, slope, peak = (2.0, 0.071, 1.0) if act == "tanh" else (4.0, 0.018, 0.25)
    ev: dict[str, Any] = {"sat_layer": worst, "sat_frac_layer": _r(frac),
                          "sat_since_epoch": since, "sat_frac_layer_init": _r(init),
                          "sat_frac_layer_at_init": _r(at_init),
                          "sat_frac": _r(r.last("sat_frac")), "lr": _r(r.lr)}
    kind = "output" if worst == out_layer else f"layer-{worst} {act}"
    text = (f"{r.where()} {_pct(frac)} of the {kind} activations are saturated (|z| > {thr:g}, "
            f"where the {act}'s slope is below {slope} against {peak} at its centre)")
    text += f" from epoch {since} on" if since is not None else ""
    text += (f" (at the start of this phase {_pct(init)}, at initialisation {_pct(at_init)})"
             if r.phase > 0 else f" (at the start: {_pct(init)})")
    if others:
        ev.update({f"sat_frac_l{lay}": _r(x) for lay, x in others.items()})
        text += ", and so are " + ", ".join(
            f"{_pct(x)} of layer {lay}'s" if lay != out_layer else f"{_pct(x)} of the output's"
            for lay, x in sorted(others.items()))
    text += ". "
    g_all = r.series(f"grad_norm_l{worst}", window=False)
    g_now = r.last(f"grad_norm_l{worst}")
    w_all = r.series(f"weight_norm_l{worst}", window=False)
    if g_all and g_now is not None:
        ev.update(grad_norm_layer_init=_r(g_all[0][1]), grad_norm_layer=_r(g_now))
        text += (f"Backpropagation multiplies every gradient by that slope, so the gradient "
                 f"of the layer-{worst} weights is {g_now:.3g} now against {g_all[0][1]:.3g} "
                 "at initialisation: the updates are too small to pull the units back to "
                 "where they are sensitive. ")
    if w_all and len(w_all) > 1:
        ev.update(weight_norm_layer_init=_r(w_all[0][1]), weight_norm_layer=_r(w_all[-1][1]))
        if w_all[-1][1] > 2 * w_all[0][1]:
            text += (f"Layer {worst}'s weights grew from norm {w_all[0][1]:.3g} to "
                     f"{w_all[-1][1]:.3g}, which is what drove the pre-activations into the "
                     "flat tails. ")
    d = r.drop()
    acc = r.last("val_acc") if r.last("val_acc") is not None else r.last("train_acc")
    if d is not None:
        ev["loss_drop"] = _r(d)
    if acc is not None:
        ev["final_acc"] = _r(acc)
    if not r.learned():
        ls = r.losses()
        text += (f"So the loss barely moves ({ls[0]:.3g} to {ls[-1]:.3g})" if ls else
                 "So the run barely learns")
        text += (f" and accuracy stays at {acc:.2f}." if acc is not None else ".")
        text += (" A fresh initialisation trains, because its units start near the centre; "
                 "these start in the flat tails, and gradient descent cannot climb out.")
    return Finding("saturated", ev, text.strip(), primary=not r.learned(),
                   summary=f"{_pct(frac)} of the {kind} activations saturated")


def collapsed(v: RunView) -> Finding | None:
    if v.status != "ok":
        return None
    r = _Run.of(v)
    top, major = r.last("top_class_share"), r.last("majority_share")
    train_acc, val_acc = r.last("train_acc"), r.last("val_acc")
    acc = train_acc if train_acc is not None else val_acc
    loss = r.last("train_loss")
    ev: dict[str, Any] = {"lr": _r(r.lr)}
    spread_end = r.last("output_spread")
    flat_out = spread_end is not None and spread_end < FLAT_SPREAD
    primary = True
    if top is not None and major is not None:
        one_answer = top >= COLLAPSE_SHARE and acc is not None and \
            acc <= major + COLLAPSE_ACC_MARGIN
        if not one_answer and not (flat_out and not r.learned()):
            return None
        # one answer for every input: the cause when the output ignores the input (a flat
        # start) or training drove it there; a net that never moved from an init that
        # happens to favour one class is `slow`, with this as a note
        primary = flat_out or (r.drop() or 0.0) >= LEARN_MIN_DROP
        ev.update(top_class_share=_r(top), majority_share=_r(major))
        text = (f"{r.where()} the net predicts one class for {_pct(top)} of the inputs. "
                if top >= COLLAPSE_SHARE else
                f"{r.where()} the net gives every input nearly the same answer (its most "
                f"predicted class covers {_pct(top)} of the inputs only because tiny "
                "differences decide the argmax). ")
    else:  # no probes: the loss of the uniform guess
        c = v.n_classes
        if v.setup.get("output", "softmax") != "softmax" or c < 2 or loss is None \
                or acc is None:
            return None
        chance = math.log(c)
        if abs(loss - chance) > COLLAPSE_LOSS_TOL * chance or acc > 1 / c + 0.1:
            return None
        ev["chance_loss"] = _r(chance)
        text = (f"{r.where()} the training loss ended at {loss:.4g}, which is ln {c} = "
                f"{chance:.4g}, the loss of giving every class the same probability whatever "
                "the input. ")
    if train_acc is not None:
        ev["train_acc"] = _r(train_acc)
    if val_acc is not None:
        ev["val_acc"] = _r(val_acc)
    ev["final_train_loss"] = _r(loss)
    shown = val_acc if val_acc is not None else train_acc
    which = "validation" if val_acc is not None else "training"
    if shown is not None and major is not None and shown <= major + COLLAPSE_ACC_MARGIN:
        text += (f"Its {which} accuracy {shown:.2f} is what always answering one class scores "
                 f"(the most common class is {_pct(major)} of the data). ")
    elif shown is not None and major is not None:
        text += (f"Its {which} accuracy {shown:.2f} (always answering the most common class "
                 f"scores {major:.2f}) comes from output differences too small to matter: "
                 "the probabilities it gives are nearly the same for every input. ")
    elif shown is not None and v.n_classes:
        text += (f"Its {which} accuracy {shown:.2f} is no better than guessing among "
                 f"{v.n_classes} classes (1/{v.n_classes} = {1 / v.n_classes:.2f}). Record the "
                 "probes (the default) to see why. ")
    spread0 = r.first("output_spread")
    spread = r.last("output_spread")
    if spread is not None:
        ev.update(output_spread_init=_r(spread0), output_spread=_r(spread))
    if spread is not None and spread < FLAT_SPREAD:
        text += (f"The output hardly depends on the input: across inputs the output values vary "
                 f"by only {spread:.2g} (std; {_g(spread0)} at the start), so the softmax gives "
                 "every input nearly the same probabilities, and all the net can do is match "
                 "the class frequencies with its output biases")
        c = v.n_classes
        text += (f" (loss {loss:.4g}; ln {c} = {math.log(c):.4g} is the loss of a uniform "
                 "guess). " if c and loss is not None else ". ")
        text += _flat_start(r, ev)
    elif spread is not None:
        text += ("The output still varies with the input, but the differences never favour "
                 "another class: the net settled on the majority answer.")
    return Finding("collapsed", ev, text.strip(), primary=primary,
                   summary=f"predicts one class for {_pct(top)} of inputs" if top is not None
                   else "predicts one class")


def _flat_start(r: _Run, ev: dict[str, Any]) -> str:
    """Why a net whose output ignores its input does not learn: small weights shrink the
    signal layer by layer, every weight gradient is a product of such small factors, and the
    per-epoch update ratio shows how little moves. Adds its numbers to `ev`."""
    v = r.v
    text = ""
    norms = [r.series(f"weight_norm_l{lay}", window=False) for lay in range(1, r.n_layers + 1)]
    norms0 = [s[0][1] for s in norms if s]
    init = v.setup.get("init")
    if norms0 and len(norms0) > 1:
        ev["weight_norms_init"] = [_r(x, 3) for x in norms0]
        text += (f"The signal is lost on the way in: with init {init or 'as given'} the "
                 f"{len(norms0)} weight layers start with norms of only "
                 + ", ".join(f"{x:.2g}" for x in norms0)
                 + ", so each layer passes on only a fraction of what it receives. ")
    g = [r.series(f"grad_norm_l{lay}", window=False) for lay in range(1, r.n_layers + 1)]
    g0 = [s[0][1] for s in g if s]
    if g0:
        ev["grad_norms_init"] = [_r(x, 3) for x in g0]
        text += (f"For the same reason every weight gradient is tiny (at the start "
                 f"{min(g0):.2g} to {max(g0):.2g} per layer): near such a flat start each "
                 "weight's gradient is a product of other small weights and signals. ")
    upd = [x for _, x in r.series("update_ratio_l1")]
    if upd:
        med = sorted(upd)[len(upd) // 2]
        n = (r.epochs[-1] - r.epochs[r.start]) if r.epochs else len(upd)
        ev.update(update_ratio_l1_median=_r(med))
        text += (f"At lr {_g(r.lr)} each epoch changed the first layer's weights by a median "
                 f"{med:.2g} of their size, about {_pct(med * n)} over all {n} epochs: far too "
                 "little to leave the flat start in the epochs given. ")
    text += ("A larger lr leaves such a flat start sooner (or kills the deep units, see "
             "dead_relu), and an initialisation scaled to the layer width (He for ReLU, Glorot "
             "for tanh) avoids it.")
    return text


def oscillating(v: RunView) -> Finding | None:
    r = _Run.of(v)
    losses = r.losses()
    tail = losses[len(losses) // 2:]
    if len(tail) < 6:
        return None
    med = sorted(tail)[len(tail) // 2]
    ups = [b - a for a, b in zip(tail, tail[1:]) if b - a > OSCILLATION_MIN_REL * max(med, 1e-12)]
    share = len(ups) / (len(tail) - 1)
    rise = r.late_rise()
    if share < OSCILLATION_MIN_SHARE and rise is None:
        return None
    ev: dict[str, Any] = {"rises_share": round(share, 3), "median_loss": _r(med),
                          "largest_rise": _r(max(ups, default=0.0)), "lr": _r(r.lr)}
    if share >= OSCILLATION_MIN_SHARE:
        text = (f"{r.where()} the training loss kept jumping up between epochs ({share:.0%} of "
                f"the epoch-to-epoch changes in the second half were rises of more than "
                f"{OSCILLATION_MIN_REL:.0%} of its median {med:.3g}, the largest "
                f"{max(ups):.3g}): the steps bounce across the valley instead of settling. ")
        summary = f"loss rises in {share:.0%} of late epochs"
    else:
        lo, end, k = rise  # type: ignore[misc]
        ev.update(late_rise=_r(end / lo - 1), late_rise_from=_r(lo), late_rise_epochs=k)
        text = (f"{r.where()} the training loss rose at the end instead of levelling off: from "
                f"{lo:.3g} to {end:.3g} ({_pct(end / lo - 1)} up) within the last {k} epochs. "
                "The steps are pushing the weights out of the valley they had reached. ")
        summary = f"loss up {_pct(end / lo - 1)} in the last {k} epochs"
    s = r.series(r.edge.quantity)
    if s and r.lr is not None:
        lam, lim, e = _stability(r, -1)
        if lim is not None:
            ev.update(sharpness_last=_r(lam), stability_lr_last=_r(lim))
            text += (f"At epoch {e} {r.edge.what} was {lam:.3g}, so the stability limit "
                     f"is {r.edge.rule(lam, lim)}; lr {r.lr:g} is {r.lr / lim:.2g}x that")
            if r.lr > lim:
                text += ": the steps overshoot along the sharpest direction. "
            elif v.setup.get("batch_size") == 0:  # full batch: no minibatch noise
                text += (", below the limit when it was measured; the curvature changes "
                         "between measurements" + (
                             " (and an adaptive optimizer's step scale shrinks as its "
                             "gradients do, which raises the preconditioned sharpness)"
                             if r.edge.quantity == "precond_sharpness" else "")
                         + ", so the run crossed the edge in between. ")
            else:
                bs = v.setup.get("batch_size")
                text += (", below the limit, so the bouncing comes from the minibatch noise: "
                         + (f"each step follows the gradient of only {bs} samples, " if bs else
                            "each step follows one minibatch's gradient, ")
                         + "and at this lr those steps are long. ")
    text += "A smaller lr, or a decaying schedule, lets it settle."
    return Finding("oscillating", ev, text.strip(), summary=summary)


def overfitting(v: RunView) -> Finding | None:
    """The one definition of overfitting (the report's overfitting table reads this label): a
    run that fitted its training set (`_Run.fitted`: it never counts for a run that did not
    learn) and either (a) whose validation loss rose (see OVERFIT_MIN_EPOCHS) while its training
    loss kept falling, with a train-val accuracy gap, or (b) whose validation accuracy is no
    better than the majority-class baseline while its training accuracy is (it memorised)."""
    if v.status != "ok":
        return None
    r = _Run.of(v)
    if not r.fitted():
        return None
    ta, va = r.last("train_acc"), r.last("val_acc")
    if ta is None or va is None or ta - va < OVERFIT_ACC_GAP:
        return None
    val = r.series("val_loss")
    tr = dict(r.series("train_loss"))
    if len(val) < 2:
        return None
    best_e, best = min(val, key=lambda p: p[1])
    last_e, last = val[-1]
    rose = (last_e - best_e >= OVERFIT_MIN_EPOCHS and best > 0 and
            last >= best * (1 + OVERFIT_RISE) and best_e in tr and last_e in tr and
            tr[last_e] < tr[best_e])
    if not rose:
        if r.beats(va):
            return None
        base = r.baseline()
        ev0 = {"train_acc": _r(ta), "val_acc": _r(va), "acc_gap": _r(ta - va),
               "baseline_acc": _r(base), "final_val_loss": _r(last), "lr": _r(r.lr)}
        text = (f"{r.where()} the net fits its training set (train accuracy {ta:.2f}) but its "
                f"validation accuracy {va:.2f} is no better than always answering the most "
                f"common class ({base:.2f}): it memorised the training samples and learned "
                "nothing that carries over to new ones. More data, a smaller net or "
                "regularisation (weight decay) would generalise better; if the labels carry no "
                "signal, nothing will.")
        return Finding("overfitting", ev0, text, summary=f"train acc {ta:.2f}, val {va:.2f}")
    ev = {"best_val_epoch": best_e, "best_val_loss": _r(best), "final_val_loss": _r(last),
          "val_loss_rise": _r(last / best - 1), "train_loss_at_best": _r(tr[best_e]),
          "final_train_loss": _r(tr[last_e]), "train_acc": _r(ta), "val_acc": _r(va),
          "acc_gap": _r(ta - va), "lr": _r(r.lr)}
    text = (f"{r.where()} the validation loss bottomed out at {best:.3g} in epoch {best_e} and "
            f"then rose {_pct(last / best - 1)} over the remaining {last_e - best_e} epochs, "
            f"while the training loss kept falling ({tr[best_e]:.3g} to {tr[last_e]:.3g}): the "
            f"net is memorising its training set (train accuracy {ta:.2f} against validation "
            f"{va:.2f}). Stopping at epoch {best_e} (early stopping), more data or "
            "regularisation (weight decay) would generalise better.")
    return Finding("overfitting", ev, text, summary=f"val loss up {_pct(last / best - 1)} "
                   f"since epoch {best_e}")


def slow(v: RunView) -> Finding | None:
    if v.status != "ok":
        return None
    r = _Run.of(v)
    losses = r.losses()
    if len(losses) < 3:
        return None
    k = max(1, int(round(SLOW_LAST_FRACTION * (len(losses) - 1))))
    before, end = losses[-1 - k], losses[-1]
    if len(losses) >= 2 * k + 2 and k >= 2:
        # medians of the last k + 1 epochs and of the k + 1 before them: a bouncing loss's
        # endpoints can fall by chance, its medians do not (tuned on calibration seeds)
        def med(xs: list[float]) -> float:
            return sorted(xs)[len(xs) // 2]

        before, end = med(losses[-2 * k - 2:-k - 1]), med(losses[-k - 1:])
    tail = (before - end) / max(abs(before), 1e-12)
    d = r.drop() or 0.0
    ev: dict[str, Any] = {"loss_drop_last_epochs": _r(tail), "epochs_window": k,
                          "loss_drop": _r(d), "final_train_loss": _r(end), "lr": _r(r.lr)}
    if tail > SLOW_MIN_DROP and (before - end) > SLOW_MIN_SHARE_OF_START * abs(losses[0]):
        ev["still_improving"] = True
        text = (f"{r.where()} the loss was still falling when training stopped ({_pct(tail)} "
                f"lower over the last {k} epochs, {losses[0]:.3g} to {end:.3g} in all). ")
        text += _plateau_text(r, ev)
        text += "It needs more epochs or a larger learning rate."
        text += _spike_text(r, ev)
        return Finding("slow", ev, text, summary=f"still improving ({_pct(tail)} over the last "
                       f"{k} epochs)")
    if r.learned() or r.fitted() or r.late_rise() is not None:
        return None
    if d >= LEARN_MIN_DROP:  # the loss fell, but the accuracy stayed at the baseline
        acc, base = r.acc(), r.baseline()
        ev.update(final_acc=_r(acc), baseline_acc=_r(base))
        text = (f"{r.where()} the loss fell from {losses[0]:.4g} to {end:.4g} ({_pct(d)} lower) "
                f"but the accuracy {_g(acc)} is no better than always answering the most "
                f"common class ({_g(base)}): the net has not learned to tell the classes apart. "
                "Longer training or a larger lr may get it there; if the labels carry no "
                "signal (random labels), nothing will.")
        return Finding("slow", ev, text, summary=f"accuracy {_g(acc)} at the baseline")
    text = (f"{r.where()} training made almost no progress: the loss went from {losses[0]:.4g} "
            f"to {end:.4g} ({_pct(d)} lower) in {len(losses) - 1} epochs. ")
    upd = [x for _, x in r.series("update_ratio_l1")]
    if upd:
        med = sorted(upd)[len(upd) // 2]
        ev["update_ratio_l1_median"] = _r(med)
        text += (f"Each epoch changed the first layer's weights by a median {med:.2g} of their "
                 "size. ")
    text += "The steps are too small to get anywhere in this many epochs: raise the lr."
    return Finding("slow", ev, text, summary=f"loss only {_pct(d)} lower")


def _plateau_text(r: _Run, ev: dict[str, Any]) -> str:
    p = _plateau(r)
    if p is None:
        return ""
    ev.update(plateau_epochs=p[0], plateau_end_epoch=p[1])
    return (f"It first sat on a plateau near its starting loss for {p[0]} epochs (to epoch "
            f"{p[1]}): a flat start, where the gradients stay tiny until the weights have grown "
            "enough for the signal to reach the output; how long that takes depends on the "
            "seed. ")


def _spike_text(r: _Run, ev: dict[str, Any]) -> str:
    """Seed 001's question, 'is the loss spike a wrong gradient or divergence?', answered from
    the sharpness and update probes when the loss rose above SPIKE_FACTOR x its start and the
    run ended below its start. Adds its numbers to `ev`."""
    s_loss = r.series("train_loss")
    if len(s_loss) < 3:
        return ""
    i = max(range(len(s_loss)), key=lambda j: s_loss[j][1])
    l0, (e_spike, peak), end = s_loss[0][1], s_loss[i], s_loss[-1][1]
    if i == 0 or peak <= SPIKE_FACTOR * l0 or end >= l0:
        return ""
    ev.update(spike_epoch=e_spike, spike_loss=_r(peak))
    text = (f" On the way the loss spiked to {peak:.3g} in epoch {e_spike} ({peak / l0:.2g}x its "
            "start) and recovered.")
    lam, lim, e = _stability(r)
    lr = r.lr
    limit, q = r.edge.lr, r.edge.quantity

    gradcheck = (" A wrong gradient would not heal itself like this (`lrlab gradcheck` checks a "
                 "hand-written one).")
    if lam is not None:
        ev.update(sharpness_init=_r(lam), stability_lr=_r(lim))
    if lim is not None and lr is not None and lr > lim:
        text += (f" That is not a wrong gradient: at the start {r.edge.what} was {lam:.3g}, "
                 f"so steps are stable only for lr below {r.edge.rule(lam, lim)}, and lr "
                 f"{lr:g} is {lr / lim:.2g}x that, so the first steps overshot along that "
                 "direction. ")
        later = [(ep, x) for ep, x in r.series(q) if ep > e_spike]
        flat = [(ep, x) for ep, x in later if (m := limit(x)) is None or m > lr]
        if flat:
            e2, lam2 = flat[0]
            ev.update(sharpness_after=_r(lam2), sharpness_after_epoch=e2)
            text += (f"That threw the weights to a flatter region (sharpness {lam2:.3g} at "
                     f"epoch {e2}, limit {_g(limit(lam2))}) where the same "
                     "lr is stable, so the run recovered (a 'catapult').")
        elif later:
            e2, lam2 = later[0]
            ev.update(sharpness_after=_r(lam2), sharpness_after_epoch=e2)
            text += (f"The loss came down again although the curvature measured later stays "
                     f"above the limit (sharpness {lam2:.3g} at epoch {e2}): the quadratic "
                     "picture only holds near one point, and the overshoot moved the weights "
                     "far from the start.")
        return text + gradcheck
    over = [(ep, x) for ep, x in r.series(q)
            if lr is not None and ep <= e_spike and (m := limit(x)) is not None and m < lr]
    steps = [(ep, x, lay) for lay in r.layers("update_ratio")
             for ep, x in r.series(f"update_ratio_l{lay}") if ep <= e_spike]
    big = max(steps, key=lambda t: t[1]) if steps else None
    if over:
        e2, lam2 = over[-1]
        ev.update(sharpness_over_epoch=e2, sharpness_over=_r(lam2))
        text += (f" The curvature had grown during training (sharpness {lam2:.3g} at epoch {e2}, "
                 f"so the stability limit was {_g(limit(lam2))}, below lr {lr:g}): the run was at "
                 "the edge of stability, where such spikes happen and heal themselves.")
    elif big is not None and big[1] >= BIG_UPDATE:
        ev.update(update_ratio_max_before_spike=_r(big[1]), update_ratio_max_layer=big[2])
        text += (f" The steps before it were large: in epoch {big[0]} the update changed layer "
                 f"{big[2]}'s weights by {_pct(big[1])} of their size")
        last = [(ep, x) for ep, x in r.series(q) if ep <= e_spike]
        lim_b = limit(last[-1][1]) if last else None
        if last and lim_b is not None:
            ev.update(sharpness_before_spike=_r(last[-1][1]), sharpness_before_epoch=last[-1][0])
            text += (f", while the curvature measured last before it was small (sharpness "
                     f"{last[-1][1]:.3g} at epoch {last[-1][0]}, limit {lim_b:.3g}): the loss "
                     "was steep but nearly straight there, and a step that long left the region "
                     "where that held and landed on the far side of the valley")
        text += ". The net then found its way down again."
    else:
        text += " Neither the curvature nor the step sizes measured before it explain it: " \
            "minibatch noise, or curvature that grew between the measurements."
    return text + gradcheck


def converged(v: RunView) -> Finding | None:
    if v.status != "ok":
        return None
    r = _Run.of(v)
    losses = r.losses()
    if len(losses) < 2 or not r.learned() or r.late_rise() is not None:
        return None
    val_acc = r.last("val_acc")
    acc = r.acc()
    base = r.baseline()
    ev: dict[str, Any] = {"start_loss": _r(losses[0]), "final_train_loss": _r(losses[-1]),
                          "loss_drop": _r(r.drop()), "lr": _r(r.lr)}
    if r.last("val_loss") is not None:
        ev["final_val_loss"] = _r(r.last("val_loss"))
    if acc is not None:
        ev["final_acc"] = _r(acc)
    if acc is not None and base is not None:
        ev["baseline_acc"] = _r(base)
    which = "validation accuracy" if val_acc is not None else "accuracy"
    text = (f"{r.where()} the loss fell from {losses[0]:.3g} to {losses[-1]:.3g} and levelled "
            "off" + (f"; {which} {acc:.3f}" if acc is not None else "")
            + (f" (always answering the most common class scores {base:.2f})."
               if acc is not None and base is not None else "."))
    text += (" " + _plateau_text(r, ev)).rstrip()
    text += _spike_text(r, ev)
    return Finding("converged", ev, text, summary="converged")


FAILURES = ("diverged", "dead_relu", "saturated", "collapsed")
"""Primary labels that already explain why the loss did not fall."""

Rule = Callable[[RunView], Finding | None]
RULES: dict[str, Rule] = {
    "diverged": diverged,
    "dead_relu": dead_relu,
    "saturated": saturated,
    "collapsed": collapsed,
    "oscillating": oscillating,
    "overfitting": overfitting,
    "slow": slow,
    "converged": converged,
}
PRIORITY: tuple[str, ...] = ("diverged", "oscillating", "dead_relu", "saturated", "collapsed",
                             "overfitting", "slow", "converged")
"""Instability first (a diverged or bouncing run is the lr's doing, and whatever else it
shows, e.g. units saturated by its huge steps, follows from it), then causes before
symptoms: a run whose ReLUs died *and* that predicts one class is labelled by the cause
(dead_relu), with `collapsed` as a secondary label."""


def judge(v: RunView) -> Verdict:
    """Run every rule; the first finding in PRIORITY that may be primary is the label, every
    other finding a secondary label (converged is dropped beside any other primary)."""
    found = {name: f for name in PRIORITY if (f := RULES[name](v)) is not None}
    primary = next((f for f in found.values() if f.primary), None)
    if primary is None:
        r = _Run.of(v)
        ev = {"epochs": len(r.epochs), "loss_drop": _r(r.drop())}
        for f in found.values():
            ev.update(f.evidence)
        return Verdict("slow", ("slow", *found), ev, (
            f"{r.where()} too little was recorded to judge this run (loss drop "
            f"{_pct(r.drop() or 0)} over {len(r.epochs)} records)."))
    if primary.label != "converged":
        found.pop("converged", None)
    if primary.label in FAILURES:
        found.pop("overfitting", None)  # a run that never learned cannot overfit
    if "slow" in found and (primary.label == "oscillating" or (
            primary.label in FAILURES and not found["slow"].evidence.get("still_improving"))):
        found.pop("slow")  # a bouncing loss's trend, or "no progress" the primary explains
    evidence = dict(primary.evidence)  # the primary's numbers first, then the others'
    for f in found.values():
        for k, x in f.evidence.items():
            evidence.setdefault(k, x)
    others = [f.summary or f.label for f in found.values() if f is not primary]
    text = primary.explanation
    if others:
        text += " Also: " + "; ".join(others) + "."
    labels = (primary.label, *(n for n in found if n != primary.label))
    return Verdict(primary.label, labels, evidence, text)


def judge_all(views: Sequence[RunView]) -> dict[int, Verdict]:
    return {v.member: judge(v) for v in views}


# ----------------------------------------------------------------------------- recommendation



@dataclass(frozen=True)
class Recommendation:
    """`best_lr`: the choice by `metric` (None when no lr trained for most seeds);
    `lr_ranges`: every maximal run of consecutive swept lrs at which every seed converged
    (label `converged`; `overfitting` does not count), lowest first; `lr_range`: the widest of
    them (by lr ratio, then by the number of lrs; None when there is none); `at_edge`: the best
    lr is the smallest or largest one swept; `converged_share` / `learned_share`: per lr, the
    share of seeds that converged / learned (`_Run.learned`); `best_by`: the best lr by each
    of the loss and the accuracy (they may disagree; `disagree` says so)."""

    best_lr: float | None
    lr_range: tuple[float, float] | None
    metric: str
    at_edge: bool
    text: str
    converged_share: dict[float, float] = field(default_factory=dict)
    learned_share: dict[float, float] = field(default_factory=dict)
    lr_ranges: list[tuple[float, float]] = field(default_factory=list)
    best_by: dict[str, float | None] = field(default_factory=dict)
    disagree: bool = False


def _learned(v: RunView) -> bool:
    if v.status != "ok":
        return False
    return _Run.of(v).learned()


def converged_ranges(lrs: Sequence[float], share: Mapping[float, float]
                     ) -> list[tuple[float, float]]:
    """The maximal runs of consecutive lrs (in the sorted swept order) whose converged share
    is 1: (lowest, highest) each, lowest first."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    prev: float | None = None
    for lr in sorted(lrs):
        if share.get(lr, 0.0) >= 1.0:
            start = lr if start is None else start
        elif start is not None:
            out.append((start, prev))  # type: ignore[arg-type]
            start = None
        prev = lr
    if start is not None:
        out.append((start, prev))  # type: ignore[arg-type]
    return out


def _widest(ranges: Sequence[tuple[float, float]], lrs: Sequence[float]
            ) -> tuple[float, float] | None:
    if not ranges:
        return None
    return max(ranges, key=lambda r: (r[1] / r[0] if r[0] > 0 else math.inf,
                                      sum(r[0] <= x <= r[1] for x in lrs)))


def _fmt_range(r: tuple[float, float]) -> str:
    return f"lr {r[0]:g}" if r[0] == r[1] else f"lr in [{r[0]:g}, {r[1]:g}]"


def recommend(views: Sequence[RunView], verdicts: Mapping[int, Verdict],
              select: str = "val_loss") -> Recommendation:
    """Validation-based selection over a group of runs that differ only in lr (and seed).

    The best lr has the best median final value of `select` over its seeds (`val_loss`: the
    lowest validation loss; `val_acc`: the highest validation accuracy; the training loss or
    accuracy without a validation set; a diverged seed counts as infinitely bad), among the
    lrs at which most seeds learned (a median over seeds that mostly never moved compares
    constant guesses, not learning rates). The best lr by the other metric is reported too,
    and the text says when the two disagree. The ranges are the runs of consecutive swept lrs
    where every seed converged. A best lr at the smallest or largest lr swept gets a warning:
    the optimum may lie outside the range.
    """
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}; got {select!r}")
    by_lr: dict[float, list[RunView]] = {}
    for v in views:
        lr = v.swept.get("lr")
        if _finite(lr):
            by_lr.setdefault(float(lr), []).append(v)
    if not by_lr:
        return Recommendation(None, None, "", False, "No learning rate axis was swept.")
    has_val = any(_clean(v.history.get("val_loss")) for v in views)
    pre = "val" if has_val else "train"
    what = "validation" if has_val else "training"
    loss_key, acc_key = f"{pre}_loss", f"{pre}_acc"
    has_acc = any(_clean(v.history.get(acc_key)) for v in views)
    metric = loss_key if select == "val_loss" or not has_acc else acc_key

    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])

    losses, accs, conv, learned = {}, {}, {}, {}
    for lr, vs in by_lr.items():
        losses[lr] = median([(_clean(v.history.get(loss_key)) or [math.inf])[-1]
                             if v.status == "ok" else math.inf for v in vs])
        accs[lr] = median([(_clean(v.history.get(acc_key)) or [0.0])[-1]
                           if v.status == "ok" else 0.0 for v in vs])
        conv[lr] = sum(verdicts[v.member].label == "converged" for v in vs) / len(vs)
        learned[lr] = sum(_learned(v) for v in vs) / len(vs)
    lrs = sorted(by_lr)
    n = len(by_lr[lrs[0]])
    seeds = f"{n} seed{'s' if n > 1 else ''}"

    def frac(share: float, k: int) -> str:
        return f"{round(share * k)}/{k}"

    ranges = converged_ranges(lrs, conv)
    rng = _widest(ranges, lrs)
    ok = [lr for lr in lrs if learned[lr] > 0.5 and math.isfinite(losses[lr])]
    # ties go to the smaller lr (the more conservative choice)
    by_loss = min(ok, key=lambda lr: (losses[lr], lr)) if ok else None
    by_acc = max(ok, key=lambda lr: (accs[lr], -lr)) if ok and has_acc else None
    best = by_acc if metric == acc_key else by_loss
    best_by = {loss_key: by_loss, acc_key: by_acc} if has_acc else {loss_key: by_loss}
    disagree = by_loss is not None and by_acc is not None and by_loss != by_acc
    if best is not None:
        k = len(by_lr[best])
        crit = (f"the lowest median final {what} loss" if metric == loss_key
                else f"the highest median final {what} accuracy")
        text = (f"Best lr {best:g} by {crit} over {seeds} ({what} loss {losses[best]:.4g}"
                + (f", accuracy {accs[best]:.3f}" if has_acc else "")
                + f"; {frac(learned[best], k)} seeds learned, {frac(conv[best], k)} converged).")
        if disagree:
            other = by_acc if metric == loss_key else by_loss
            oname = f"{what} accuracy" if metric == loss_key else f"{what} loss"
            text += (f" By {oname} the best lr is {other:g} instead ({what} loss "
                     f"{losses[other]:.4g}, accuracy {accs[other]:.3f}): the two metrics "
                     "disagree; `--select val_acc` or `--select val_loss` chooses by the "
                     "other.")
        at_edge = len(lrs) > 1 and best in (lrs[0], lrs[-1])
    else:
        at_edge = False
        tried = [lr for lr in lrs if learned[lr] > 0]
        text = f"No lr trained for most of its {seeds}."
        if tried:
            text += " Seeds that learned: " + ", ".join(
                f"lr {lr:g} {frac(learned[lr], len(by_lr[lr]))}" for lr in tried) + "."
            top = max(tried, key=lambda lr: (learned[lr], -losses[lr]))
            at_edge = len(lrs) > 1 and top in (lrs[0], lrs[-1])
            if at_edge:
                side = "smallest" if top == lrs[0] else "largest"
                text += (f" The most successful lr ({top:g}) is the {side} one swept: extend "
                         "the sweep in that direction.")
    if ranges:
        text += " Every seed converged for " + " and ".join(map(_fmt_range, ranges)) + "."
        if best is not None and not any(a <= best <= b for a, b in ranges):
            text += f" The best lr {best:g} is not among them: not every seed converged there."
    else:
        most = [lr for lr in lrs if conv[lr] > 0.5]
        if most:
            text += (" No lr converged for every seed; most seeds converged at lr "
                     + ", ".join(f"{lr:g}" for lr in most) + ".")
        elif best is not None:
            text += " No lr converged for most seeds within the epochs given."
    if best is not None and at_edge:
        side = "smallest" if best == lrs[0] else "largest"
        text += (f" Warning: the best lr is the {side} one swept; the optimum may lie outside "
                 "the range, so extend the sweep.")
    stuck = sum(verdicts[v.member].label in ("collapsed", "dead_relu") for v in views)
    if stuck * 2 >= len(views):
        text += (f" {stuck} of {len(views)} runs ended predicting one class or with a dead "
                 "layer: here the initialisation (or input scaling) matters more than the lr "
                 "(`lrlab explain` says why).")
    return Recommendation(best, rng, metric, at_edge, text, conv, learned, ranges, best_by,
                          disagree)
