"""Figures and a self-contained HTML report, built from the store alone (no retraining).

`report` only draws (STYLE 11): verdicts and the recommendation are read from the store; the
measurements (steps to a target loss, throughput, overfitting gap) are arithmetic on the
stored histories, and the decision regions use the stored final weights. Every user-provided
string is HTML-escaped, and the page's Content-Security-Policy lets only this module's own
table-sorting script run and nothing load from anywhere (figures are embedded `data:` PNGs).
Each figure is also written next to the report as PNG, with a CSV of the numbers it plots.

Sections, in order (their HTML ids in `SECTIONS`): answer, lr vs outcome, curves, verdicts,
probes, decision regions, measurements, reproduce. `build_compare` makes one page over
several experiments on shared axes.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import re
import shlex
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lrlab.errors import LrlabError  # noqa: E402
from lrlab.export import records  # noqa: E402
from lrlab.store import DB_NAME, Store  # noqa: E402
from lrlab.verdicts import Edge, edge_of  # noqa: E402

SECTIONS: tuple[tuple[str, str], ...] = (
    ("answer", "Answer"),
    ("lr-outcome", "Learning rate vs outcome"),
    ("curves", "Loss curves"),
    ("verdicts", "Verdicts"),
    ("probes", "Probes"),
    ("decision-regions", "Decision regions"),
    ("measurements", "Measurements"),
    ("reproduce", "Reproduce"),
)
COMPARE_SECTIONS: tuple[tuple[str, str], ...] = (
    ("answer", "Answers"),
    ("lr-outcome", "Learning rate vs outcome"),
    ("curves", "Best configurations"),
    ("verdicts", "Verdicts"),
    ("measurements", "Measurements"),
    ("reproduce", "Reproduce"),
)

VERDICT_COLORS = {
    "converged": "#2e7d32", "slow": "#b88700", "diverged": "#c62828", "oscillating": "#ef6c00",
    "collapsed": "#6a1b9a", "dead_relu": "#37474f", "saturated": "#00838f",
    "overfitting": "#ad1457",
}
OTHER_COLOR = "#757575"
TRAIN_COLOR, VAL_COLOR = "#1565c0", "#e65100"

TARGET_FACTOR = 1.1
"""Steps to target: the target training loss is TARGET_FACTOR x the median final training loss
of the best configuration (lowest such median) in the experiment."""
MAX_REGION_PANELS = 40
"""Decision regions: at most this many panels (whole lines, in sweep order)."""
REGION_GRID = 100
"""Decision regions: grid points per axis over the raw input plane."""
MAX_CURVE_PANELS = 30
"""More configurations than this: the curves are drawn one panel per line, lr as colour."""
SEED_LINES = 12
"""Curves: up to this many seeds per configuration are drawn one by one (thin), more as a band."""
PNG_DPI = 100
FIG_WIDTH = 11.5  # inches: 1150 px at PNG_DPI, the page's content width

RC = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9,
      "legend.fontsize": 7.5, "xtick.labelsize": 8, "ytick.labelsize": 8,
      "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": PNG_DPI}
"""matplotlib settings for every figure (user strings pass through `_t`, so a `$` in them is
text, never mathtext)."""


# ----------------------------------------------------------------------------- grouping


def fmt_value(v: Any) -> str:
    """A swept value as people write it: 0.1, 10-10-4 (layer lists), standardize."""
    if isinstance(v, (list, tuple)):
        return "-".join(map(str, v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def config_key(member: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A run configuration: every swept value but the seed."""
    return tuple((k, json.dumps(v)) for k, v in member.items() if k != "seed")


def config_label(member: dict[str, Any]) -> str:
    """'lr=0.1, preprocess=none': every swept value but the seed."""
    parts = [f"{k}={fmt_value(v)}" for k, v in member.items() if k != "seed"]
    return ", ".join(parts) or "all runs"


def line_key(member: dict[str, Any]) -> str:
    """What separates lines on an lr axis: every swept value but lr and seed."""
    parts = [f"{k}={fmt_value(v)}" for k, v in member.items() if k not in ("lr", "seed")]
    return ", ".join(parts) or "all runs"


def group_key(member: dict[str, Any]) -> str:
    """The runner's name for a recommendation group ('all' when only lr and seed vary)."""
    key = line_key(member)
    return "all" if key == "all runs" else key


def edge_of_rec(r: dict[str, Any]) -> Edge:
    """The stability edge of a record's optimizer (`verdicts.edge_of`): the settings
    `load_experiment` attached under `optimizer_setup` (plain SGD when unknown)."""
    return edge_of(r.get("optimizer_setup") or {})


def lr_of(member: dict[str, Any]) -> float | None:
    lr = member.get("lr")
    return float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None


def configs(recs: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Records grouped by configuration (seeds together): lines in the order they were swept,
    learning rates ascending within a line."""
    line_order: dict[str, int] = {}
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in recs:
        line_order.setdefault(line_key(r["member"]), len(line_order))
        groups.setdefault(config_key(r["member"]), []).append(r)
    order = {k: i for i, k in enumerate(groups)}

    def key(item: tuple[Any, list[dict[str, Any]]]) -> tuple[int, float, int]:
        k, g = item
        lr = lr_of(g[0]["member"])
        return line_order[line_key(g[0]["member"])], lr if lr is not None else -1.0, order[k]

    return [g for _, g in sorted(groups.items(), key=key)]


def lines_of(recs: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Records split by line (every swept value but lr and seed), in sweep order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        out.setdefault(line_key(r["member"]), []).append(r)
    return list(out.items())


def label_of(r: dict[str, Any]) -> str:
    return r["verdict"]["label"] if r.get("verdict") else r["status"]


def final(r: dict[str, Any], key: str) -> float | None:
    """A finished run's final value; None for a diverged run (its last value is pre-blow-up)."""
    return r["final"].get(key) if r["status"] == "ok" else None


def _median(vals: Iterable[float | None]) -> float | None:
    v = [x for x in vals if x is not None and math.isfinite(x)]
    return float(np.median(v)) if v else None


def _col(hist: dict[str, list[Any]], key: str) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in hist.get(key) or []], dtype=float)


def _nanstat(fn: Callable[..., np.ndarray], m: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(m, axis=0)


def _matrix(runs: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """[runs, epochs] of one history metric, NaN-padded."""
    cols = [_col(r["history"], key) for r in runs]
    length = max((len(c) for c in cols), default=0)
    m = np.full((len(cols), length), np.nan)
    for i, c in enumerate(cols):
        m[i, : len(c)] = c
    return m


# ----------------------------------------------------------------------------- the experiment


@dataclass
class Experiment:
    """What a report reads: the store's meta, records and cohorts, the spec and its data."""

    directory: Path
    meta: dict[str, str]
    recs: list[dict[str, Any]]
    cohort_of: dict[int, int]
    spec: Any = None  # lrlab.spec.Spec, None when the stored spec no longer resolves
    peak_rss_mb: dict[int, float] = field(default_factory=dict)  # member -> its cohort's peak
    spec_error: str = ""
    _members: dict[int, Any] = field(default_factory=dict)
    _data: dict[Any, Any] = field(default_factory=dict)
    data_errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.directory.name

    def member(self, member_id: int) -> Any:
        """The spec's Member for a stored member id (None without a spec)."""
        if self.spec is not None and not self._members:
            from lrlab import spec as spec_mod

            self._members = {m.index: m for m in spec_mod.members(self.spec)}
        return self._members.get(member_id)

    def dataset(self, member_id: int) -> Any:
        """The member's Dataset (lrlab.data.load, memoised); None when it cannot be loaded."""
        m = self.member(member_id)
        if m is None:
            return None
        if m.data not in self._data:
            from lrlab import data as data_mod

            try:
                self._data[m.data] = data_mod.load(m.data)
            except (LrlabError, OSError) as exc:
                self._data[m.data] = None
                self.data_errors.append(f"data {m.data.source!r} could not be loaded: {exc}")
        return self._data[m.data]

    def weights(self, member_id: int) -> list[np.ndarray] | None:
        store = Store.open(self.directory)
        try:
            return store.weights(member_id)
        finally:
            store.close()


def load_experiment(directory: str | Path) -> Experiment:
    """Read an experiment folder (LrlabError when it holds no lrlab store)."""
    d = Path(directory)
    store = Store.open(d)
    try:
        meta = store.meta()
        rows = store.members()
    finally:
        store.close()
    cohort_of = {m["id"]: m["cohort"] for m in rows}
    exp = Experiment(d, meta, records(d), cohort_of)
    exp.peak_rss_mb = {m["id"]: float(m["peak_rss_mb"]) for m in rows
                       if m.get("peak_rss_mb") is not None}  # recorded by newer runners
    try:
        from lrlab import spec as spec_mod

        exp.spec = spec_mod.resolve(json.loads(meta["spec_json"]))
    except (KeyError, ValueError) as exc:  # LrlabError is a ValueError
        exp.spec_error = f"the stored spec could not be read: {exc}"
    for r in exp.recs:  # the optimizer settings that set each run's stability edge
        m = exp.member(r["id"])
        if m is not None:
            t = m.phases[-1] if m.phases else m.train
            r["optimizer_setup"] = {"optimizer": t.optimizer, "momentum": t.momentum,
                                    "nesterov": t.nesterov, "beta1": t.beta1}
    return exp


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Cell:
    """A table cell: plain text (escaped when rendered; written to CSV), an optional sort key
    and optional markup built by this module from escaped parts."""

    text: str
    sort: float | str | None = None
    markup: str | None = None


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    numeric: set[int] = field(default_factory=set)  # right-aligned columns

    def to_csv(self, path: Path) -> None:
        _csv([self.columns, *[[c.text for c in row] for row in self.rows]], path)


def cell(v: Any, digits: int = 4) -> Cell:
    if v is None:
        return Cell("–", None)
    if isinstance(v, bool):
        return Cell(str(v).lower(), str(v))
    if isinstance(v, (int, float)):
        return Cell(f"{v:.{digits}g}" if isinstance(v, float) else str(v), float(v))
    return Cell(fmt_value(v), fmt_value(v))


def verdict_rows(recs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration, seeds aggregated ("6/8 converged, 2/8 collapsed"), with the
    explanation and evidence of one run for every label that occurs."""
    out = []
    for g in configs(recs):
        counts = Counter(label_of(r) for r in g)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        summary = ", ".join(f"{c}/{len(g)} {lab}" for lab, c in ordered)
        by_label = []
        for lab, c in ordered:
            ex = next(r for r in g if label_of(r) == lab)
            v = ex["verdict"] or {}
            by_label.append({"label": lab, "count": c, "seed": ex["member"].get("seed"),
                             "explanation": v.get("explanation", ""),
                             "evidence": v.get("evidence", {}),
                             "labels": v.get("labels", [lab])})
        top = by_label[0]
        out.append({
            "config": config_label(g[0]["member"]), "member": g[0]["member"], "seeds": len(g),
            "summary": summary, "label": top["label"], "counts": dict(ordered),
            "by_label": by_label, "explanation": top["explanation"],
            "evidence": top["evidence"], "ids": [r["id"] for r in g],
            **{f"median_{k}": _median(final(r, k) for r in g)
               for k in ("train_loss", "val_loss", "train_acc", "val_acc")},
        })
    return out


def _axes_of(recs: Sequence[dict[str, Any]], drop: Sequence[str] = ("seed",)) -> list[str]:
    return list(dict.fromkeys(k for r in recs for k in r["member"] if k not in drop))


def verdict_table(recs: Sequence[dict[str, Any]], experiment: str | None = None) -> Table:
    """The Verdicts section's table (also the compare page's, with an experiment column)."""
    axes = _axes_of(recs)
    cols = (["experiment"] if experiment is not None else []) + axes + [
        "seeds", "verdicts", "median final train loss", "median final val loss",
        "median final val acc", "explanation (one run per label) and evidence"]
    t = Table(cols, [])
    off = 1 if experiment is not None else 0
    t.numeric = {off + len(axes), off + len(axes) + 2, off + len(axes) + 3, off + len(axes) + 4}
    for row in verdict_rows(recs):
        cells = [Cell(experiment, experiment)] if experiment is not None else []
        cells += [cell(row["member"].get(k)) for k in axes]
        chips = " ".join(_chip(b["label"], f"{b['count']}/{row['seeds']}")
                         for b in row["by_label"])
        cells += [cell(row["seeds"]),
                  Cell(row["summary"], row["label"], chips),
                  cell(row["median_train_loss"]), cell(row["median_val_loss"]),
                  cell(row["median_val_acc"], 3)]
        parts_text, parts_html = [], []
        for b in row["by_label"]:
            ev = "; ".join(f"{k}={_num_text(v)}" for k, v in b["evidence"].items())
            head = f"{b['label']} ({b['count']}/{row['seeds']}, e.g. seed {b['seed']})"
            parts_text.append(f"{head}: {b['explanation']} [{ev}]")
            parts_html.append(f"<p><b>{_e(head)}</b>: {_e(b['explanation'])}"
                              + (f"<br><span class='ev'>{_e(ev)}</span>" if ev else "") + "</p>")
        cells.append(Cell(" | ".join(parts_text), None, "".join(parts_html)))
        t.rows.append(cells)
    return t


def _num_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_num_text(x) for x in v) + "]"
    return str(v)


# ----------------------------------------------------------------------------- measurements


@dataclass
class RunFacts:
    """Per-run numbers behind the Measurements tables."""

    seconds: float | None
    samples: float | None  # training samples processed (n_train x epochs trained)
    steps_at_epoch: list[int] | None  # cumulative optimizer steps at each recorded epoch
    gap: float | None  # final train acc - val acc
    overfit: bool | None  # the verdict has the `overfitting` label (None: no validation set)


def _steps_per_epoch(exp: Experiment, r: dict[str, Any]) -> list[int] | None:
    """Optimizer steps in each epoch 1..E, from the data size and every phase's batch size."""
    m = exp.member(r["id"])
    ds = exp.dataset(r["id"]) if m is not None else None
    epochs = len(r["history"]["epoch"]) - 1
    if m is not None and ds is not None:
        n = int(ds.X_train.shape[0])
        per: list[int] = []
        for t in (m.train, *m.phases):
            b = n if t.batch_size <= 0 or t.batch_size >= n else t.batch_size
            per += [math.ceil(n / b)] * t.epochs
        return per[:epochs]
    if exp.spec is None or epochs <= 0:
        return None
    store = Store.open(exp.directory)  # fallback: the recorded per-step lrs, spread evenly
    try:
        steps = len(store.series(r["id"]).get("lr", []))
    finally:
        store.close()
    return [steps // epochs] * epochs if steps else None


def overfit_flag(r: dict[str, Any]) -> bool | None:
    """Whether the run's verdict says `overfitting` (the one definition, in lrlab.verdicts:
    a run that never learned is never overfitting); None without a validation set."""
    va = _col(r["history"], "val_loss")
    if not len(va) or np.all(np.isnan(va)):
        return None
    return "overfitting" in ((r.get("verdict") or {}).get("labels") or ())


def run_facts(exp: Experiment, r: dict[str, Any]) -> RunFacts:
    per = _steps_per_epoch(exp, r)
    ds = exp.dataset(r["id"])
    epochs = len(r["history"]["epoch"]) - 1
    samples = float(ds.X_train.shape[0] * epochs) if ds is not None else None
    cum = [0, *np.cumsum(per).astype(int).tolist()] if per is not None else None
    tr, va = final(r, "train_acc"), final(r, "val_acc")
    return RunFacts(r.get("seconds"), samples, cum,
                    tr - va if tr is not None and va is not None else None,
                    overfit_flag(r))


def loss_target(recs: Sequence[dict[str, Any]]) -> tuple[float, str] | None:
    """TARGET_FACTOR x the lowest per-configuration median final training loss, and which
    configuration that is."""
    best: tuple[float, str] | None = None
    for g in configs(recs):
        med = _median(final(r, "train_loss") for r in g)
        if med is not None and (best is None or med < best[0]):
            best = (med, config_label(g[0]["member"]))
    return (TARGET_FACTOR * best[0], best[1]) if best else None


def steps_to(r: dict[str, Any], facts: RunFacts, target: float) -> int | None:
    """Optimizer steps until the (full-set, end-of-epoch) training loss first reached target."""
    if facts.steps_at_epoch is None:
        return None
    tr = _col(r["history"], "train_loss")
    for i, v in enumerate(tr[: len(facts.steps_at_epoch)]):
        if np.isfinite(v) and v <= target:
            return facts.steps_at_epoch[i]
    return None


MAX_MEASURE_COLUMNS = 6
"""More lines than this: the measurement tables get one row per line and one column per lr."""


@dataclass
class Measurements:
    """The seed-002 tables, measured: rows are learning rates, columns are lines (every other
    swept value, e.g. the architecture when `hidden` is an axis)."""

    accuracy: Table
    wall: Table
    steps: Table
    throughput: Table
    overfit: Table
    target: tuple[float, str] | None
    long: list[list[Any]]  # one row per configuration, numbers only (measurements.csv)
    cohorts: list[tuple[int, int, float, float | None]]  # cohort, members, seconds, samples/s
    memory: list[tuple[str, float]]


def measurements(exp: Experiment) -> Measurements:
    recs = exp.recs
    facts = {r["id"]: run_facts(exp, r) for r in recs}
    target = loss_target(recs)
    lines = [name for name, _ in lines_of(recs)]
    has_lr = any(lr_of(r["member"]) is not None for r in recs)
    row_keys = sorted({lr_of(r["member"]) for r in recs if lr_of(r["member"]) is not None}) \
        if has_lr else [None]
    cells: dict[tuple[float | None, str], list[dict[str, Any]]] = {}
    for r in recs:
        cells.setdefault((lr_of(r["member"]), line_key(r["member"])), []).append(r)

    transpose = has_lr and len(lines) > MAX_MEASURE_COLUMNS
    axes = _axes_of(recs, drop=("seed", "lr"))
    line_member = {line_key(r["member"]): r["member"] for r in recs}

    def grid(fn: Callable[[list[dict[str, Any]]], Cell]) -> Table:
        if transpose:  # many lines: one row per line (a column per axis), one column per lr
            t = Table([*axes, *[f"lr={fmt_value(lr)}" for lr in row_keys]], [],
                      numeric=set(range(len(axes), len(axes) + len(row_keys))))
            for line in lines:
                t.rows.append([cell(line_member[line].get(k)) for k in axes] + [
                    fn(rs) if (rs := cells.get((lr, line))) else Cell("–") for lr in row_keys])
            return t
        head = "learning rate" if has_lr else ""
        t = Table([head, *lines], [], numeric=set(range(1, len(lines) + 1)))
        for lr in row_keys:
            row = [cell(lr) if lr is not None else Cell("all", "all")]
            for line in lines:
                rs = cells.get((lr, line))
                row.append(fn(rs) if rs else Cell("–"))
            t.rows.append(row)
        return t

    def spread(vals: list[float], fmt: str) -> tuple[str, float | None]:
        if not vals:
            return "–", None
        med = float(np.median(vals))
        if len(vals) == 1 or min(vals) == max(vals):
            return format(med, fmt), med
        return f"{format(med, fmt)} ({format(min(vals), fmt)}–{format(max(vals), fmt)})", med

    def acc(rs: list[dict[str, Any]]) -> Cell:
        key = "val_acc" if any(final(r, "val_acc") is not None for r in rs) else "train_acc"
        vals = [v for r in rs if (v := final(r, key)) is not None]
        text, med = spread(vals, ".3f")
        div = sum(r["status"] == "diverged" for r in rs)
        if div:
            text += f"; {div}/{len(rs)} diverged"
        return Cell(text, med)

    def wall(rs: list[dict[str, Any]]) -> Cell:
        text, med = spread([s for r in rs if (s := facts[r["id"]].seconds) is not None], ".3g")
        return Cell(text + (" s" if med is not None else ""), med)

    def steps(rs: list[dict[str, Any]]) -> Cell:
        if target is None:
            return Cell("–")
        got = [s for r in rs if (s := steps_to(r, facts[r["id"]], target[0])) is not None]
        if not got:
            return Cell(f"not reached (0/{len(rs)})", math.inf)
        return Cell(f"{np.median(got):.0f} ({len(got)}/{len(rs)} reach)", float(np.median(got)))

    def thr(rs: list[dict[str, Any]]) -> Cell:
        vals = [f.samples / f.seconds for r in rs if (f := facts[r["id"]]).samples is not None
                and f.seconds]
        text, med = spread(vals, ".3g")
        return Cell(text, med)

    def over(rs: list[dict[str, Any]]) -> Cell:
        gaps = [g for r in rs if (g := facts[r["id"]].gap) is not None]
        flags = [f for r in rs if (f := facts[r["id"]].overfit) is not None]
        gap = f"gap {np.median(gaps):+.3f}" if gaps else "gap –"
        yes = sum(flags)
        verdict = f"yes {yes}/{len(flags)}" if yes else ("no" if flags else "no val set")
        return Cell(f"{gap} · {verdict}", float(np.median(gaps)) if gaps else None)

    long = [["config", *_axes_of(recs), "seeds", "diverged", "val_acc_median", "val_acc_min",
             "val_acc_max", "seconds_median", "steps_to_target_median", "reached_target",
             "samples_per_s_median", "gap_median", "overfit_yes", "target_loss"]]
    for g in configs(recs):
        accs = [v for r in g if (v := final(r, "val_acc")) is not None]
        secs = [s for r in g if (s := facts[r["id"]].seconds) is not None]
        got = [s for r in g if target and (s := steps_to(r, facts[r["id"]], target[0]))
               is not None]
        thrs = [f.samples / f.seconds for r in g if (f := facts[r["id"]]).samples is not None
                and f.seconds]
        gaps = [x for r in g if (x := facts[r["id"]].gap) is not None]
        long.append([config_label(g[0]["member"]),
                     *[fmt_value(g[0]["member"].get(k, "")) for k in _axes_of(recs)], len(g),
                     sum(r["status"] == "diverged" for r in g),
                     _median(accs), min(accs) if accs else None, max(accs) if accs else None,
                     _median(secs), _median(got), len(got), _median(thrs), _median(gaps),
                     sum(bool(facts[r["id"]].overfit) for r in g),
                     target[0] if target else None])
    by_cohort: dict[int, list[dict[str, Any]]] = {}
    for r in recs:
        by_cohort.setdefault(exp.cohort_of.get(r["id"], -1), []).append(r)
    cohorts = []
    for c, rs in sorted(by_cohort.items()):
        secs = sum(facts[r["id"]].seconds or 0.0 for r in rs)
        samples = [facts[r["id"]].samples for r in rs]
        rate = sum(samples) / secs if secs and all(s is not None for s in samples) else None
        cohorts.append((c, len(rs), secs, rate))
    return Measurements(grid(acc), grid(wall), grid(steps), grid(thr), grid(over), target,
                        long, cohorts, peak_memory(exp))


def peak_memory(exp: Experiment) -> list[tuple[str, float]]:
    """Peak memory in bytes wherever the runner recorded it: the peak resident memory of the
    process while each cohort ran (members' `peak_rss_mb`), a meta key with 'peak' and 'mem'
    in its name (a number, or JSON {cohort: bytes}), or a per-member metric of that kind."""
    out: list[tuple[str, float]] = []
    by_cohort: dict[int, list[dict[str, Any]]] = {}
    for r in exp.recs:
        if r["id"] in exp.peak_rss_mb:
            by_cohort.setdefault(exp.cohort_of.get(r["id"], -1), []).append(r)
    for c, rs in sorted(by_cohort.items()):
        lines = list(dict.fromkeys(line_key(r["member"]) for r in rs))
        lrs = sorted({lr for r in rs if (lr := lr_of(r["member"])) is not None})
        what = "; ".join(lines[:3]) + (" …" if len(lines) > 3 else "")
        if lrs:
            what += f", lr {lrs[0]:g}" + (f"–{lrs[-1]:g}" if len(lrs) > 1 else "")
        peak = max(exp.peak_rss_mb[r["id"]] for r in rs)
        out.append((f"cohort {c} ({len(rs)} runs: {what})", peak * 2**20))
    for k, v in sorted(exp.meta.items()):
        if "peak" in k and "mem" in k:
            try:
                val = json.loads(v)
            except ValueError:
                continue
            if isinstance(val, dict):
                out += [(f"{k} {kk}", float(vv)) for kk, vv in val.items()
                        if isinstance(vv, (int, float))]
            elif isinstance(val, (int, float)):
                out.append((k, float(val)))
    names = {n for r in exp.recs for n in r["history"] if "peak" in n and "mem" in n}
    for n in sorted(names):
        for g in configs(exp.recs):
            vals = [np.nanmax(c) for r in g if len(c := _col(r["history"], n))
                    and np.isfinite(c).any()]
            if vals:
                out.append((f"{n}, {config_label(g[0]['member'])}", float(np.median(vals))))
    return out


# ----------------------------------------------------------------------------- figures


@dataclass
class Figure:
    fig: Any  # matplotlib Figure
    table: list[list[Any]]  # its numbers, first row the header
    notes: list[str] = field(default_factory=list)


def _t(s: Any) -> str:
    """A user string as literal matplotlib text (a `$` would otherwise start mathtext)."""
    return str(s).replace("$", r"\$")


def _log_y(ax: Any) -> None:
    """A log y axis with plain numbers (0.5, 1, 2) instead of 5×10^-1."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _lr_ticks(ax: Any, lrs: Sequence[float]) -> None:
    ax.set_xscale("log")
    ticks = sorted(set(lrs))
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    ax.minorticks_off()
    close = any(b / a < 2.2 for a, b in zip(ticks, ticks[1:]) if a > 0)
    if len(ticks) > 7 or close:
        ax.tick_params(axis="x", labelrotation=45)


def max_sharpness(runs: Sequence[dict[str, Any]], init: bool = False) -> float | None:
    """The largest measured sharpness over these runs during training (epochs >= 1; every
    seed of a configuration starts from the same init whatever its lr), or at initialisation
    (epoch 0) with init=True. The sharpness is the one that sets each run's stability edge
    (`edge_of_rec`): the top Hessian eigenvalue, or the preconditioned one for adaptive
    optimizers (not measured at epoch 0, before their first step)."""
    vals = []
    for r in runs:
        c = _col(r["history"], edge_of_rec(r).quantity)
        c = c[:1] if init else c[1:]
        if np.isfinite(c).any():
            vals.append(float(np.nanmax(c)))
    return max(vals) if vals else None


def stability_lr(runs: Sequence[dict[str, Any]], sharp: float | None) -> float | None:
    """The largest stable lr at sharpness `sharp` for these runs' optimizer (c / sharp)."""
    return edge_of_rec(runs[0]).lr(sharp) if runs else None


def sharpness_table(lines: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Table | None:
    """Per lr: sharpness at init and its maximum during training, the lr at which the
    optimizer turns unstable at that curvature (2/λ for plain gradient descent, see
    `verdicts.Edge`), and lr over that limit (above 1: past it)."""
    rows = []
    rules = set()
    for name, rs in lines:
        by_lr: dict[float, list[dict[str, Any]]] = {}
        for r in rs:
            if (lr := lr_of(r["member"])) is not None:
                by_lr.setdefault(lr, []).append(r)
        for lr in sorted(by_lr):
            s0, s1 = max_sharpness(by_lr[lr], init=True), max_sharpness(by_lr[lr])
            if s0 is None and s1 is None:
                continue
            lim = stability_lr(by_lr[lr], s1)
            rule = edge_of_rec(by_lr[lr][0]).formula
            rules.add(rule)
            rows.append([Cell(name, name), cell(lr), Cell(rule, rule), cell(s0, 3), cell(s1, 3),
                         cell(lim, 3), cell(lr / lim if lim else None, 3)])
    if not rows:
        return None
    one = len(rules) == 1
    head = f"{next(iter(rules))} (stability lr)" if one else "stability lr"
    cols = ["line", "lr", "edge", "sharpness λ at init", "max λ during training", head,
            "lr ÷ stability lr (> 1: unstable)"]
    if one:  # one rule for every row: in the header, not a column
        cols, rows = cols[:2] + cols[3:], [row[:2] + row[3:] for row in rows]
    if len(lines) == 1:
        cols, rows = cols[1:], [row[1:] for row in rows]
    return Table(cols, rows, numeric=set(range(len(cols) - 5, len(cols))))


MAX_LINES = 8
"""More lines than this on one lr axis are split into panels by their first swept value."""

Lines = Sequence[tuple[str, Sequence[dict[str, Any]]]]
MAX_STABILITY_LINES = 2
"""2/λ marks are drawn on a panel with at most this many lines (else only tabled)."""


def facet_lines(lines: Lines) -> list[tuple[str, list[tuple[str, Sequence[dict[str, Any]]]]]]:
    """Split many lines into panels by the first swept axis (other than lr and seed) that has
    fewer values than there are lines; each panel's lines are named by the other axes."""
    if len(lines) <= MAX_LINES:
        return [("", list(lines))]
    runs = [r for _, rs in lines for r in rs]
    axes = _axes_of(runs, drop=("seed", "lr"))
    for ax in axes:
        values = list(dict.fromkeys(fmt_value(r["member"].get(ax)) for r in runs))
        if 2 <= len(values) < len(lines):
            panels: dict[str, list[tuple[str, Sequence[dict[str, Any]]]]] = {
                f"{ax}={v}": [] for v in values}
            for _, rs in lines:
                m = rs[0]["member"]
                sub = ", ".join(f"{k}={fmt_value(m[k])}" for k in axes if k != ax and k in m)
                panels[f"{ax}={fmt_value(m.get(ax))}"].append((sub or "all runs", rs))
            return list(panels.items())
    return [("", list(lines))]


def _draw_outcome(ax1: Any, ax2: Any, lines: Lines, lk: str, ak: str, top: float,
                  color_of: dict[str, str], lr_span: tuple[float, float], seen: dict[str, Any],
                  table: list[list[Any]], panel: str) -> None:
    """One panel pair: median + band per line, a dot per run coloured by verdict, 2/λ marks."""
    lo_x, hi_x = lr_span[0] / 3, lr_span[1] * 3
    for name, rs in lines:
        color = color_of[name]
        by_lr: dict[float, list[dict[str, Any]]] = {}
        for r in rs:
            if (lr := lr_of(r["member"])) is not None:
                by_lr.setdefault(lr, []).append(r)
        lrs = sorted(by_lr)
        if not lrs:
            continue
        for ax, key in ((ax1, lk), (ax2, ak)):
            stats = []
            for lr in lrs:
                v = [x for r in by_lr[lr] if (x := final(r, key)) is not None]
                stats.append((np.median(v), min(v), max(v)) if v else (np.nan,) * 3)
            med, lo, hi = (np.array(s) for s in zip(*stats))
            ax.plot(lrs, med, "-", color=color, lw=1.6, label=_t(name), zorder=2)
            ax.fill_between(lrs, lo, hi, color=color, alpha=0.15, lw=0, zorder=1)
        for lr in lrs:
            group = by_lr[lr]
            sharp = max_sharpness(group)
            stab = stability_lr(group, sharp)
            for s, r in enumerate(group):
                x = lr * 10 ** ((s - (len(group) - 1) / 2) * 0.012)  # spread seeds a little
                lab = label_of(r)
                seen["labels"].add(lab)
                c = VERDICT_COLORS.get(lab, OTHER_COLOR)
                for ax, key in ((ax1, lk), (ax2, ak)):
                    y = final(r, key)
                    if y is None:
                        seen["diverged"] = True
                        ax.scatter([x], [top if key == lk else 0.0], marker="x", s=26, color=c,
                                   zorder=4, clip_on=False)
                    else:
                        ax.scatter([x], [y], s=18, color=c, zorder=4, edgecolors="white",
                                   linewidths=0.4)
                table.append([(panel + ": " if panel else "") + name, lr,
                              r["member"].get("seed"), r["status"], lab, final(r, lk),
                              final(r, ak), sharp, stab])
            if stab is not None and len(lines) <= MAX_STABILITY_LINES:
                seen["stab"] = True
                if lo_x <= stab <= hi_x:
                    for ax in (ax1, ax2):
                        ax.axvline(stab, color=color, ls=":", lw=1.1, alpha=0.8, zorder=1)
                    ax2.plot([stab], [1.0], marker="v", color=color, ms=6, clip_on=False,
                             transform=ax2.get_xaxis_transform(), zorder=5)
                    ax1.text(stab, 0.99, f" {edge_of_rec(group[0]).formula} at lr {lr:g}",
                             rotation=90, fontsize=6.5,
                             va="top", ha="right", color=color,
                             transform=ax1.get_xaxis_transform())


def fig_lr_outcome(lines: Lines, facet: bool = True) -> Figure | None:
    """Final loss and accuracy against lr (log axis): median over seeds with the seed range as a
    band, one dot per run coloured by its verdict, and 2/sharpness where it was measured. Many
    lines are split into panels (`facet_lines`), loss above accuracy."""
    runs = [r for _, rs in lines for r in rs if lr_of(r["member"]) is not None]
    if not runs:
        return None
    has_val = any(r["final"].get("val_loss") is not None for r in runs)
    lk, ak = ("val_loss", "val_acc") if has_val else ("train_loss", "train_acc")
    panels = facet_lines(lines) if facet else [("", list(lines))]
    n = len(panels)
    cols = min(n, 4)
    blocks = math.ceil(n / cols)
    if n == 1:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(FIG_WIDTH, 4.0))
        pairs = [(ax1, ax2)]
    else:
        fig, axes = plt.subplots(2 * blocks, cols, figsize=(FIG_WIDTH, 5.2 * blocks + 0.6),
                                 squeeze=False, sharex=True)
        pairs = [(axes[2 * (i // cols)][i % cols], axes[2 * (i // cols) + 1][i % cols])
                 for i in range(n)]
        for i in range(n, blocks * cols):
            axes[2 * (i // cols)][i % cols].set_visible(False)
            axes[2 * (i // cols) + 1][i % cols].set_visible(False)
    finite = [v for r in runs if (v := final(r, lk)) is not None]
    log_loss = bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 30
    top = (max(finite) * (1.6 if log_loss else 1.08)) if finite else 1.0
    all_lrs = sorted({lr_of(r["member"]) for r in runs})  # type: ignore[type-var]
    names = list(dict.fromkeys(name for _, ls in panels for name, _ in ls))
    color_of = {name: f"C{i % 10}" for i, name in enumerate(names)}
    table: list[list[Any]] = [["line", "lr", "seed", "status", "verdict", lk, ak,
                               "max_sharpness_at_lr", "stability_lr"]]
    seen: dict[str, Any] = {"labels": set(), "diverged": False, "stab": False}
    for (panel, ls), (ax1, ax2) in zip(panels, pairs):
        _draw_outcome(ax1, ax2, ls, lk, ak, top, color_of, (all_lrs[0], all_lrs[-1]), seen,
                      table, panel)
        for ax, key in ((ax1, lk), (ax2, ak)):
            _lr_ticks(ax, all_lrs)
            if len(all_lrs) > 1:
                ax.set_xlim(all_lrs[0] / 1.5, all_lrs[-1] * 1.5)
            ax.set_ylabel("final " + key.replace("_", " "))
            ax.grid(alpha=0.3)
        ax2.set_xlabel("learning rate (log scale)")
        ax1.set_xlabel("learning rate (log scale)" if n == 1 else "")
        if panel:
            ax1.set_title(_t(panel), fontsize=9)
        if log_loss:
            _log_y(ax1)
        if finite:
            ax1.set_ylim(top=top)
        ax2.set_ylim(-0.02, 1.04)
    if n > 1:  # one loss scale and one accuracy scale across panels
        lows = [a.get_ylim()[0] for a, _ in pairs]
        for a, _ in pairs:
            a.set_ylim(min(lows), top)
    labels = seen["labels"]
    handles = [plt.Line2D([], [], marker="o", ls="", color=VERDICT_COLORS.get(lab, OTHER_COLOR),
                          label=lab) for lab in [*VERDICT_COLORS, *sorted(labels)]
               if lab in labels]
    handles = list({h.get_label(): h for h in handles}.values())
    if seen["diverged"]:
        handles.append(plt.Line2D([], [], marker="x", ls="", color="#444",
                                  label="no final value (at axis edge)"))
    if seen["stab"]:
        handles.append(plt.Line2D([], [], ls=":", color="#444", label="stability lr"))
    line_handles = [plt.Line2D([], [], color=color_of[nm], lw=2, label=_t(nm)) for nm in names]
    if n == 1:
        pairs[0][1].legend(handles=handles, title="verdict", loc="best", title_fontsize=7.5)
        if len(names) > 1:
            pairs[0][0].legend(handles=line_handles, loc="best")
        fig.tight_layout()
    else:
        fig.legend(handles=line_handles + handles, loc="upper center", frameon=False,
                   ncol=min(5, len(line_handles) + len(handles)), bbox_to_anchor=(0.5, 1.0))
        rows_legend = math.ceil((len(line_handles) + len(handles)) / 5)
        fig.tight_layout(rect=(0, 0, 1, 1 - (0.2 * rows_legend + 0.1) / (5.2 * blocks + 0.6)))
    return Figure(fig, table)


def _grid_positions(lines: Sequence[tuple[str, Sequence[Any]]], max_cols: int = 5
                    ) -> tuple[int, int, list[list[tuple[int, int]]]]:
    """Panel positions: one row per line when each line fits in a row, else wrapped; a single
    line of 4 to 6 panels as two rows (seed 004's 2x2 grid)."""
    widest = max(len(items) for _, items in lines)
    if len(lines) == 1 and 4 <= widest <= 6:
        cols = math.ceil(widest / 2)
        return 2, cols, [[(j // cols, j % cols) for j in range(widest)]]
    if widest <= max_cols + 1 and len(lines) <= 6:
        cols = widest
        pos = [[(i, j) for j in range(len(items))] for i, (_, items) in enumerate(lines)]
        return len(lines), cols, pos
    cols = max_cols
    pos, row = [], 0
    for _, items in lines:
        pos.append([(row + j // cols, j % cols) for j in range(len(items))])
        row += math.ceil(len(items) / cols)
    return row, cols, pos


def fig_curves(recs: Sequence[dict[str, Any]]) -> Figure:
    """Train and val loss per configuration (grid: rows = lines, columns = learning rates),
    shared axes: the median over finished seeds with their range as a band; a diverged run is
    drawn in red up to the epoch it blew up, marked with an x."""
    groups = configs(recs)
    if len(groups) > MAX_CURVE_PANELS:
        return fig_curves_by_line(recs)
    by_line: dict[str, list[list[dict[str, Any]]]] = {}
    for g in groups:
        by_line.setdefault(line_key(g[0]["member"]), []).append(g)
    lines = list(by_line.items())
    rows, cols, pos = _grid_positions(lines)
    w = min(FIG_WIDTH, (3.8 if cols <= 3 else 2.9) * cols + 0.8)
    fig, axes = plt.subplots(rows, cols, figsize=(w, 2.35 * rows + 0.5), sharex=True,
                             sharey=True, squeeze=False)
    used = set()
    table: list[list[Any]] = [["config", "seed", "status", "epoch", "train_loss", "val_loss"]]
    positive = []
    for (line, gs), ps in zip(lines, pos):
        for g, (i, j) in zip(gs, ps):
            ax = axes[i][j]
            used.add((i, j))
            ok = [r for r in g if r["status"] == "ok"]
            for key, color in (("train_loss", TRAIN_COLOR), ("val_loss", VAL_COLOR)):
                m = _matrix(ok, key)
                if not m.size or np.all(np.isnan(m)):
                    continue
                ep = np.arange(m.shape[1])
                med = _nanstat(np.nanmedian, m)
                if 1 < len(ok) <= SEED_LINES:  # each seed thin: bimodal outcomes stay visible
                    for row in m:
                        ax.plot(ep, row, color=color, lw=0.5, alpha=0.35)
                elif len(ok) > 1:
                    ax.fill_between(ep, _nanstat(np.nanmin, m), _nanstat(np.nanmax, m),
                                    color=color, alpha=0.18, lw=0)
                ax.plot(ep, med, color=color, lw=1.6, label=key.replace("_", " "))
                positive.append(m[np.isfinite(m) & (m > 0)])
            for r in g:
                if r["status"] != "diverged":
                    continue
                c = _col(r["history"], "train_loss")
                good = np.where(np.isfinite(c))[0]
                if len(good):
                    ax.plot(good, c[good], color="#c62828", lw=0.8, alpha=0.7)
                    ax.plot(good[-1], c[good[-1]], "x", color="#c62828", ms=7, mew=2)
                    positive.append(c[good][c[good] > 0])
            counts = Counter(label_of(r) for r in g)
            summary = ", ".join(f"{n}/{len(g)} {lab}" for lab, n in counts.most_common(2))
            lr = lr_of(g[0]["member"])
            head = f"lr={lr:g}" if lr is not None else config_label(g[0]["member"])
            ax.set_title(_t(f"{head}\n{summary}"), fontsize=8.5)
            if j == 0:
                ax.set_ylabel(_t((line + "\n" if len(lines) > 1 else "") + "loss"), fontsize=8)
            for r in g:
                h = r["history"]
                tl, vl = h.get("train_loss") or [], h.get("val_loss") or []
                for k, ep in enumerate(h["epoch"]):
                    table.append([config_label(r["member"]), r["member"].get("seed"),
                                  r["status"], ep, tl[k] if k < len(tl) else None,
                                  vl[k] if k < len(vl) else None])
    for i in range(rows):
        for j in range(cols):
            if (i, j) not in used:
                axes[i][j].set_visible(False)
    vals = np.concatenate(positive) if positive else np.array([1.0])
    if len(vals) and vals.max() / max(vals.min(), 1e-12) > 30:
        _log_y(axes[0][0])
    for ax in axes.flat:
        ax.grid(alpha=0.25)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for j in range(cols):
        bottom = max((i for i in range(rows) if (i, j) in used), default=rows - 1)
        axes[bottom][j].set_xlabel("epoch")
        axes[bottom][j].xaxis.set_tick_params(labelbottom=True)
    handles = [plt.Line2D([], [], color=TRAIN_COLOR, label="train loss (median)"),
               plt.Line2D([], [], color=VAL_COLOR, label="val loss (median)")]
    if any(r["status"] == "diverged" for r in recs):
        handles.append(plt.Line2D([], [], color="#c62828", marker="x", label="diverged run"))
    fig.legend(handles=handles, loc="upper center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.35 * rows + 0.5)))
    return Figure(fig, table)


MAX_PROBE_LINES = 3
"""More lines than this: the probes show the best lr of each line instead of every lr."""


def _config_score(g: Sequence[dict[str, Any]]) -> float:
    """Median final val loss (train loss without a val set) of a configuration's finished
    seeds; inf when none finished."""
    key = "val_loss" if any(r["final"].get("val_loss") is not None for r in g) else "train_loss"
    med = _median(final(r, key) for r in g)
    return med if med is not None else math.inf


def best_config(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The configuration (its seeds) with the lowest `_config_score` among these runs."""
    return min(configs(runs), key=_config_score)


def _values_only(member: dict[str, Any]) -> str:
    """'adam · cosine · 64-32': a line's swept values without their keys (compact titles)."""
    return " · ".join(fmt_value(v) for k, v in member.items() if k not in ("lr", "seed")) \
        or "all runs"


MAX_SCHEDULE_LINES = 24


def fig_lr_schedule(exp: Experiment) -> Figure | None:
    """The lr applied at every optimizer step (first seed of each configuration), drawn when
    any run's lr changes during training (a schedule, a decay or a later phase)."""
    store = Store.open(exp.directory)
    try:
        firsts = [g[0] for g in configs(exp.recs)][:MAX_SCHEDULE_LINES]
        steps = {r["id"]: store.series(r["id"]).get("lr", []) for r in firsts}
    finally:
        store.close()
    if not any(len(set(v)) > 1 for v in steps.values()):
        return None
    fig, ax = plt.subplots(figsize=(8.5, 3.2))
    table: list[list[Any]] = [["configuration", "step", "lr"]]
    for r in firsts:
        lrs = steps[r["id"]]
        if not lrs:
            continue
        label = config_label({k: v for k, v in r["member"].items() if k != "seed"})
        ax.plot(np.arange(len(lrs)), lrs, lw=1.1, label=_t(label))
        table += [[label, i, v] for i, v in enumerate(lrs)]
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("applied lr")
    _log_y(ax)
    if len(firsts) <= 12:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return Figure(fig, table)


def fig_curves_by_line(recs: Sequence[dict[str, Any]], max_panels: int = 40) -> Figure:
    """Many configurations: one panel per line, one colour per lr (median over the finished
    seeds; train solid, val dashed), shared axes."""
    lines = lines_of(recs)[:max_panels]
    cols = min(5, len(lines))
    rows = math.ceil(len(lines) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(min(FIG_WIDTH, 2.3 * cols + 0.6),
                                                  2.1 * rows + 0.6), sharex=True, sharey=True,
                             squeeze=False)
    all_lrs = sorted({lr for r in recs if (lr := lr_of(r["member"])) is not None})
    cmap = plt.get_cmap("plasma")
    table: list[list[Any]] = [["config", "seed", "status", "epoch", "train_loss", "val_loss"]]
    positive = []
    for ax, (_line, runs) in zip(axes.flat, lines):
        for k, g in enumerate(configs(runs)):
            lr = lr_of(g[0]["member"])
            color = (cmap(0.85 * (1 - all_lrs.index(lr) / max(len(all_lrs) - 1, 1)))
                     if lr is not None else f"C{k % 10}")
            ok = [r for r in g if r["status"] == "ok"]
            for key, ls in (("train_loss", "-"), ("val_loss", "--")):
                m = _matrix(ok, key)
                if m.size and np.isfinite(m).any():
                    med = _nanstat(np.nanmedian, m)
                    ax.plot(np.arange(len(med)), med, ls, color=color, lw=1.1)
                    positive.append(med[np.isfinite(med) & (med > 0)])
            for r in g:
                h = r["history"]
                tl, vl = h.get("train_loss") or [], h.get("val_loss") or []
                table += [[config_label(r["member"]), r["member"].get("seed"), r["status"], ep,
                           tl[i] if i < len(tl) else None, vl[i] if i < len(vl) else None]
                          for i, ep in enumerate(h["epoch"])]
        ax.set_title(_t(_values_only(runs[0]["member"])), fontsize=7.5)
        ax.grid(alpha=0.25)
    for ax in list(axes.flat)[len(lines):]:
        ax.set_visible(False)
    vals = np.concatenate(positive) if positive else np.array([1.0])
    if len(vals) and vals.max() / max(vals.min(), 1e-12) > 30:
        _log_y(axes[0][0])
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    handles = [plt.Line2D([], [], color=cmap(0.85 * (1 - i / max(len(all_lrs) - 1, 1))),
                          label=f"lr={lr:g}") for i, lr in enumerate(all_lrs)]
    handles += [plt.Line2D([], [], color="#444", ls="-", label="train (median)"),
                plt.Line2D([], [], color="#444", ls="--", label="val (median)")]
    keys = _axes_of(recs, drop=("seed", "lr"))
    handles.append(plt.Line2D([], [], ls="", label="panels: " + _t(" · ".join(keys))))
    fig.legend(handles=handles, loc="upper center", frameon=False, ncol=min(len(handles), 7),
               bbox_to_anchor=(0.5, 1.0))
    legend_rows = math.ceil(len(handles) / 7)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.22 * legend_rows + 0.15) / (2.1 * rows + 0.6)))
    return Figure(fig, table)


PROBE_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("dead_frac", "dead ReLU fraction", False),
    ("sat_frac", "saturated unit fraction", False),
    ("grad_norm", "gradient norm", True),
    ("update_ratio", "update/weight ratio (layer mean)", True),
    ("top_class_share", "share of the most-predicted class", False),
    ("lr_sharpness", "lr ÷ stability lr (unstable above 1)", True),
)


def probe_series(hist: dict[str, list[Any]], name: str, lr: float | None = None,
                 edge: Edge | None = None) -> np.ndarray:
    """One probe over epochs: the whole-net value, or the mean over its per-layer values;
    `lr_sharpness` is the applied lr over the optimizer's stability lr at the measured
    sharpness, lr x λ / c (`verdicts.Edge`; plain gradient descent by default: lr x λ / 2)."""
    if name == "lr_sharpness":
        edge = edge or edge_of({})
        sharp = _col(hist, edge.quantity) / edge.c
        applied = _col(hist, "lr")
        if not len(sharp):
            return sharp
        if len(applied) != len(sharp) or not np.isfinite(applied).any():
            applied = np.full(len(sharp), lr if lr is not None else np.nan)
        return sharp * applied
    if name in hist and name != "update_ratio":
        return _col(hist, name)
    layered = sorted((k for k in hist if re.fullmatch(rf"{name}_l\d+", k)),
                     key=lambda k: int(k.rsplit("_l", 1)[1]))
    if not layered:
        return np.array([])
    m = np.vstack([_col(hist, k) for k in layered])
    return _nanstat(np.nanmean, m)


def fig_probes(recs: Sequence[dict[str, Any]]) -> tuple[Figure | None, list[str]]:
    """Probe measurements over epochs, one line per lr (median over seeds): a block of panels
    (one per probe) for each line. Returns the figure (None without probes) and notes on
    probes left out."""
    panels = []
    notes = []
    for name, title, log in PROBE_PANELS:
        vals = [probe_series(r["history"], name, lr_of(r["member"]), edge_of_rec(r))
                for r in recs]
        finite = np.concatenate([v[np.isfinite(v)] for v in vals]) if vals else np.array([])
        if not finite.size:
            continue
        if not np.any(finite != 0):
            notes.append(f"{title}: 0 throughout")
            continue
        panels.append((name, title, log and bool(np.all(finite[finite != 0] > 0))))
    if not panels:
        return None, notes
    lines = lines_of(recs)
    if len(lines) <= MAX_PROBE_LINES:  # a block of panels per line, one curve per lr
        blocks = [(line, configs(runs), False) for line, runs in lines]
    else:  # one block: the best lr of each line (the best 10 lines)
        best = sorted((best_config(runs) for _, runs in lines), key=_config_score)[:10]
        blocks = [("best lr of each line", best, True)]
        notes.append(f"{len(lines)} lines (combinations of the other swept values): drawn is "
                     f"the best lr of each of the {len(best)} lines with the lowest median "
                     "final loss; every configuration's verdict is in the Verdicts table")
    cols = len(panels) if len(panels) <= 3 else math.ceil(len(panels) / 2)
    per_line = math.ceil(len(panels) / cols)
    rows = per_line * len(blocks)
    fig, axes = plt.subplots(rows, cols, figsize=(min(FIG_WIDTH, 3.7 * cols + 0.4),
                                                  2.45 * rows + 0.45), squeeze=False)
    all_lrs = sorted({lr for r in recs if (lr := lr_of(r["member"])) is not None})
    cmap = plt.get_cmap("plasma")

    def lr_color(lr: float | None, k: int) -> Any:
        if lr is None or len(all_lrs) < 2:
            return f"C{k % 10}"
        return cmap(0.85 * (1 - all_lrs.index(lr) / (len(all_lrs) - 1)))  # darker = larger lr

    table: list[list[Any]] = [["line", "config", "probe", "epoch", "median", "min", "max"]]
    handles: dict[str, Any] = {}
    for li, (line, groups, by_line) in enumerate(blocks):
        runs = [r for g in groups for r in g]
        for pi, (name, title, log) in enumerate(panels):
            ax = axes[li * per_line + pi // cols][pi % cols]
            for k, g in enumerate(groups):
                lr = lr_of(g[0]["member"])
                series = [probe_series(r["history"], name, lr, edge_of_rec(r)) for r in g]
                m = np.full((len(g), max(len(v) for v in series)), np.nan)
                for i, v in enumerate(series):
                    m[i, : len(v)] = v
                if not m.size or np.all(np.isnan(m)):
                    continue
                label = config_label(g[0]["member"]) if by_line or lr is None else f"lr={lr:g}"
                med = _nanstat(np.nanmedian, m)
                ep = np.arange(m.shape[1])
                color = f"C{k % 10}" if by_line else lr_color(lr, k)
                ok = np.isfinite(med)
                style = "o-" if name == "lr_sharpness" else "-"  # sampled epochs only
                (h,) = ax.plot(ep[ok], med[ok], style, color=color, ms=3, lw=1.3,
                               label=_t(label))
                handles.setdefault(label, h)
                lo, hi = _nanstat(np.nanmin, m), _nanstat(np.nanmax, m)
                table += [[line_key(g[0]["member"]), config_label(g[0]["member"]), name, e,
                           med[e], lo[e], hi[e]]
                          for e in range(m.shape[1]) if np.isfinite(med[e])]
            if name == "top_class_share":
                maj = _nanstat(np.nanmedian, _matrix(runs, "majority_share"))
                if maj.size and np.isfinite(maj).any():
                    ax.axhline(float(np.nanmedian(maj)), color="#888", ls="--", lw=1)
                ax.set_ylim(0, 1.05)
            if name == "lr_sharpness":
                ax.axhline(1.0, color="#c62828", ls=":", lw=1.2)
            if name in ("dead_frac", "sat_frac"):
                ax.set_ylim(bottom=0)
            ax.set_title(_t(title if len(lines) == 1 else f"{line}: {title}"), fontsize=8.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if by_line:
                ax.set_title(_t(title), fontsize=8.5)
            ax.set_xlabel("epoch")
            if log:
                _log_y(ax)
            ax.grid(alpha=0.25)
        for pi in range(len(panels), per_line * cols):
            axes[li * per_line + pi // cols][pi % cols].set_visible(False)
    ncol = min(len(handles), 8 if not blocks[0][2] else 3)
    fig.legend(handles=list(handles.values()), loc="upper center", frameon=False,
               ncol=ncol, bbox_to_anchor=(0.5, 1.0))
    legend_rows = math.ceil(len(handles) / max(ncol, 1))
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.2 * legend_rows + 0.2) / (2.45 * rows + 0.45)))
    if any(n == "lr_sharpness" for n, _, _ in panels):
        notes.append("lr ÷ stability lr: the applied lr over the largest lr that is stable at "
                     "the sharpness measured at that epoch (2/λ for plain gradient descent, "
                     "(2 + 2m)/λ with heavy-ball momentum m, 38/λ_P for Adam with β1 = 0.9 on "
                     "the preconditioned sharpness λ_P, 2/λ_P for RMSprop and Adagrad); above "
                     "the dotted line at 1 the steps overshoot along the sharpest direction")
    if any(n == "top_class_share" for n, _, _ in panels):
        notes.append("share of the most-predicted class: dashed grey line = the share of the "
                     "most common class in the data; 1.0 means one class is predicted for "
                     "everything")
    return Figure(fig, table), notes


def probe_layer_table(recs: Sequence[dict[str, Any]]) -> Table | None:
    """Per layer at the end of training (median over seeds): dead / saturated fractions and
    update ratios, where measured."""
    names = sorted({k for r in recs for k in r["history"]
                    if re.fullmatch(r"(dead_frac|sat_frac|update_ratio|grad_norm)_l\d+", k)},
                   key=lambda k: (k.rsplit("_l", 1)[0], int(k.rsplit("_l", 1)[1])))
    if not names:
        return None
    axes = _axes_of(recs)
    t = Table([*axes, *[n.replace("_l", " l") for n in names]], [],
              numeric=set(range(len(axes), len(axes) + len(names))))
    for g in configs(recs):
        row = [cell(g[0]["member"].get(k)) for k in axes]
        for n in names:
            last = []
            for r in g:
                c = _col(r["history"], n)
                f = c[np.isfinite(c)]
                if f.size:
                    last.append(float(f[-1]))
            row.append(cell(_median(last), 3))
        t.rows.append(row)
    return t


def fig_regions(exp: Experiment) -> tuple[Figure | None, str]:
    """Decision regions of the first seed per configuration on the raw 2-D input plane, with
    the training points on top (rows = lines, columns = learning rates). Returns the figure or
    None and a sentence on why it was not drawn."""
    import torch

    from lrlab import nets

    groups = configs(exp.recs)
    if not groups:
        return None, "No finished runs."
    if exp.spec is None:
        return None, f"Not drawn: {exp.spec_error}"
    first = [g[0] for g in groups]
    ds0 = exp.dataset(first[0]["id"])
    if ds0 is None:
        return None, "Not drawn: " + "; ".join(dict.fromkeys(exp.data_errors))
    if ds0.X_train_raw.shape[1] != 2:
        return None, (f"Not drawn: decision regions are drawn for 2-D inputs, and this data has "
                      f"{ds0.X_train_raw.shape[1]} input features.")
    by_line: dict[str, list[dict[str, Any]]] = {}
    for r in first:
        by_line.setdefault(line_key(r["member"]), []).append(r)
    lines, shown = [], 0
    for line, rs in by_line.items():  # at most MAX_REGION_PANELS panels (whole lines)
        if lines and shown + len(rs) > MAX_REGION_PANELS:
            break
        lines.append((line, rs))
        shown += len(rs)
    rows, cols, pos = _grid_positions(lines)
    size = min(2.6, (FIG_WIDTH - 0.5) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 0.5, size * rows + 0.3),
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    table: list[list[Any]] = [["config", "seed", "x2", "then: x1 grid values (row 'x1') or the "
                               "predicted class at each x1"]]
    used = set()
    skipped = []
    for (line, rs), ps in zip(lines, pos):
        for r, (i, j) in zip(rs, ps):
            ax = axes[i][j]
            used.add((i, j))
            m = exp.member(r["id"])
            ds = exp.dataset(r["id"])
            w = exp.weights(r["id"])
            lr = lr_of(r["member"])
            head = f"lr={lr:g}" if lr is not None else config_label(r["member"])
            acc = final(r, "val_acc")
            ax.set_title(_t(f"{head}, seed {r['member'].get('seed', 0)}\n{label_of(r)}"
                            + (f", val acc {acc:.2f}" if acc is not None else "")), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 and len(lines) > 1:
                ax.set_ylabel(_t(line), fontsize=8)
            if m is None or ds is None or not w:
                skipped.append(config_label(r["member"]))
                continue
            raw = np.concatenate([ds.X_train_raw, ds.X_val_raw])
            lo, hi = raw.min(0), raw.max(0)
            pad = 0.08 * np.maximum(hi - lo, 1e-9)
            g1 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], REGION_GRID)
            g2 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], REGION_GRID)
            xx, yy = np.meshgrid(g1, g2)
            grid_raw = np.column_stack([xx.ravel(), yy.ravel()])
            arch = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes)
            params = [torch.as_tensor(np.asarray(a, dtype=np.float64)).reshape(
                1, *(a.shape if a.ndim == 2 else (1, a.shape[-1]))) for a in w]
            x = torch.as_tensor(ds.transform(grid_raw), dtype=torch.float64)
            with np.errstate(all="ignore"):
                pred = nets.predict(params, x, arch)[0].numpy()
            finite = all(np.isfinite(a).all() for a in w)
            img = cmap(pred.reshape(xx.shape) % 10)
            img[..., 3] = 0.33 if finite else 0.12
            ax.imshow(img, origin="lower", extent=(g1[0], g1[-1], g2[0], g2[-1]),
                      aspect="auto", interpolation="nearest")
            ax.scatter(ds.X_train_raw[:, 0], ds.X_train_raw[:, 1], c=cmap(ds.y_train % 10),
                       s=7, edgecolors="black", linewidths=0.3)
            if not finite:
                ax.text(0.5, 0.5, "weights not finite", transform=ax.transAxes, ha="center",
                        color="#c62828")
            lab = config_label(r["member"])
            seed = r["member"].get("seed", 0)
            table.append([lab, seed, "x1", *map(float, g1)])
            classes = pred.reshape(xx.shape)
            table += [[lab, seed, float(y), *map(int, row)] for y, row in zip(g2, classes)]
    for i in range(rows):
        for j in range(cols):
            if (i, j) not in used:
                axes[i][j].set_visible(False)
    fig.tight_layout()
    note = ("" if not skipped else
            "No stored weights for: " + "; ".join(skipped) + ".")
    if len(lines) < len(by_line):
        note += (f" Drawn: the first {len(lines)} of {len(by_line)} lines (combinations of the "
                 "other swept values).")
    return Figure(fig, table), note


def fig_best_curves(exps: Sequence[Experiment]) -> Figure | None:
    """Compare page: the loss curves (median over seeds) of each experiment's recommended
    configuration per group, on one pair of axes."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(FIG_WIDTH, 3.8), sharex=True, sharey=True)
    table: list[list[Any]] = [["experiment", "config", "epoch", "train_median", "val_median"]]
    drawn = 0
    positive = []
    for exp in exps:
        for _rec, g in _recommended_groups(exp):
            if g is None:
                continue
            label = f"{exp.name}: {config_label(g[0]['member'])}"
            ok = [r for r in g if r["status"] == "ok"]
            tr, va = _matrix(ok, "train_loss"), _matrix(ok, "val_loss")
            color = f"C{drawn % 10}"
            tmed = _nanstat(np.nanmedian, tr) if tr.size else np.array([])
            vmed = _nanstat(np.nanmedian, va) if va.size else np.array([])
            if tmed.size:
                ax1.plot(np.arange(len(tmed)), tmed, color=color, lw=1.5, label=_t(label))
                positive.append(tmed[np.isfinite(tmed) & (tmed > 0)])
            if vmed.size and np.isfinite(vmed).any():
                ax2.plot(np.arange(len(vmed)), vmed, color=color, lw=1.5, label=_t(label))
                positive.append(vmed[np.isfinite(vmed) & (vmed > 0)])
            for e in range(max(len(tmed), len(vmed))):
                table.append([exp.name, config_label(g[0]["member"]), e,
                              float(tmed[e]) if e < len(tmed) else None,
                              float(vmed[e]) if e < len(vmed) else None])
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    vals = np.concatenate(positive) if positive else np.array([1.0])
    if len(vals) and vals.max() / max(vals.min(), 1e-12) > 30:
        _log_y(ax1)
    for ax, title in ((ax1, "train loss"), (ax2, "val loss")):
        ax.set_title(title + " at each experiment's best lr (median over seeds)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.25)
    ax1.set_ylabel("loss")
    ax1.legend(loc="best")
    fig.tight_layout()
    return Figure(fig, table)


# ----------------------------------------------------------------------------- html pieces


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _chip(label: str, extra: str = "", best: bool = False, title: str = "",
          lead: str = "") -> str:
    """A coloured verdict label; `lead` and `extra` are text around it (all escaped)."""
    color = VERDICT_COLORS.get(label, OTHER_COLOR)
    cls = "chip best" if best else "chip"
    t = f" title='{_e(title)}'" if title else ""
    return (f"<span class='{cls}' style='background:{color}'{t}>{_e(lead)}{_e(label)}"
            + (f" {_e(extra)}" if extra else "") + "</span>")


def render_table(t: Table, sortable: bool = True, cls: str = "") -> str:
    head = "".join(f"<th{' class=sort' if sortable else ''}>{_e(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        tds = []
        for i, c in enumerate(row):
            attrs = " class=num" if i in t.numeric else ""
            if c.sort is not None:
                s = c.sort if isinstance(c.sort, str) else ("Infinity" if c.sort == math.inf
                                                            else repr(float(c.sort)))
                attrs += f" data-v='{_e(s)}'"
            tds.append(f"<td{attrs}>{c.markup if c.markup is not None else _e(c.text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    classes = " ".join(x for x in ("sortable" if sortable else "", cls) if x)
    return (f"<div class=scroll><table class='{classes}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _png(fig: Any, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI, metadata={"Software": None})
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode("ascii")


def _csv_value(v: Any) -> Any:
    """Floats to 7 significant digits; a text cell that a spreadsheet would run as a formula
    (starting with = + @, or - and not a number) gets a leading apostrophe."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.7g}"
    if isinstance(v, str) and v[:1] in ("=", "+", "@", "-") and not re.fullmatch(
            r"-?[\d.]+(e[+-]?\d+)?", v):
        return "'" + v
    return v


def _csv(table: Sequence[Sequence[Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        for row in table:
            w.writerow([_csv_value(v) for v in row])


def _figure(f: Figure, d: Path, stem: str, alt: str, caption: str) -> str:
    """Write stem.png and stem.csv into d; return the <figure> with the PNG embedded."""
    b64 = _png(f.fig, d / f"{stem}.png")
    _csv(f.table, d / f"{stem}.csv")
    return (f"<figure><img alt='{_e(alt)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{caption} <span class=files>Files: <a href='{stem}.png'>{stem}.png"
            f"</a>, <a href='{stem}.csv'>{stem}.csv</a> (the numbers drawn).</span>"
            "</figcaption></figure>")


def _notes(notes: Sequence[str]) -> str:
    return ("<ul class=notes>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
            if notes else "")


CSS = """
:root{--fg:#1d2330;--muted:#5f6b7a;--line:#dde2e8;--bg2:#f5f7f9}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);max-width:1200px;margin:0 auto;padding:0 20px 48px}
header h1{font-size:1.55em;margin:.8em 0 .1em;overflow-wrap:anywhere}
.sub{color:var(--muted);margin:.1em 0 .6em;font-size:.93em}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:.45em 0;
z-index:2;font-size:.9em}
nav a{margin-right:1em;color:#1a5fb4;text-decoration:none;white-space:nowrap}
h2{font-size:1.25em;margin:1.8em 0 .5em;padding-bottom:.2em;border-bottom:1px solid var(--line);
scroll-margin-top:2.6em}
h3{font-size:1.02em;margin:1.2em 0 .4em}
.answer{background:#f1f8e9;border-left:5px solid #2e7d32;padding:.7em 1.1em;margin:.8em 0;
border-radius:0 4px 4px 0}
.answer.none{background:var(--bg2);border-left-color:#9e9e9e}
.headline{font-size:1.3em;margin:.1em 0 .35em;overflow-wrap:anywhere}
.group{font-size:.85em;color:var(--muted);text-transform:none;margin:0}
.warn{background:#fff3e0;border-left:5px solid #ef6c00;padding:.45em 1em;margin:.5em 0;
border-radius:0 4px 4px 0}
.chip{display:inline-block;padding:.05em .5em;margin:.12em .25em .12em 0;border-radius:3px;
color:#fff;font-size:.82em;white-space:nowrap}
.chip.best{outline:2px solid #111;outline-offset:1px}
.scroll{overflow-x:auto;margin:.4em 0}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid var(--line);padding:4px 7px;text-align:left;vertical-align:top}
th{background:var(--bg2);font-weight:600}
th.sort{cursor:pointer;user-select:none} th.sort:after{content:" \\2195";color:#aab}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td p{margin:0 0 .35em} .ev{color:var(--muted);font-size:.92em}
figure{margin:.6em 0 1em} img{max-width:100%;height:auto;display:block}
figcaption{color:var(--muted);font-size:.9em;margin-top:.3em} .files{white-space:nowrap}
pre{background:var(--bg2);padding:.8em;overflow:auto;font-size:.85em;border-radius:4px}
code{background:var(--bg2);padding:0 .25em;border-radius:3px}
.muted{color:var(--muted)} ul.notes{color:var(--muted);font-size:.9em;margin:.3em 0}
details summary{cursor:pointer;color:#1a5fb4}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, i) {
    th.title = 'click to sort';
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-asc') !== '1';
      th.setAttribute('data-asc', asc ? '1' : '0');
      function key(row) {
        var c = row.cells[i];
        return c ? (c.hasAttribute('data-v') ? c.getAttribute('data-v') : c.textContent) : '';
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
        var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? r : -r;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
_SORT_HASH = base64.b64encode(hashlib.sha256(SORT_JS.encode("utf-8")).digest()).decode()
CSP = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       f"script-src 'sha256-{_SORT_HASH}'; base-uri 'none'; form-action 'none'")
"""Only the sorting script may run (by hash); images only from data: URIs; no fetches."""


def _page(title: str, header: str, sections: Sequence[tuple[str, str]],
          body: dict[str, str]) -> str:
    nav = "".join(f"<a href='#{sid}'>{_e(name)}</a>" for sid, name in sections)
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
             "<meta name='viewport' content='width=device-width,initial-scale=1'>",
             "<link rel='icon' href='data:,'>",
             f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
             f"<header>{header}</header><nav>{nav}</nav><main>"]
    for sid, name in sections:
        parts.append(f"<section id='{sid}'><h2>{_e(name)}</h2>{body.get(sid, '')}</section>")
    parts.append(f"</main><script>{SORT_JS}</script></body></html>\n")
    return "\n".join(parts)


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- sections


def _recommended_groups(exp: Experiment
                        ) -> list[tuple[dict[str, Any], list[dict[str, Any]] | None]]:
    """Each stored recommendation with the configuration (seeds) of its best lr."""
    recs_json = _recommendations(exp)
    out = []
    for rec in recs_json:
        best = rec.get("best_lr")
        match = None
        for g in configs(exp.recs):
            lr = lr_of(g[0]["member"])
            if (group_key(g[0]["member"]) == rec.get("group") or len(recs_json) == 1) and \
                    best is not None and lr is not None and math.isclose(lr, best, rel_tol=1e-9):
                match = g
        out.append((rec, match))
    return out


def _recommendations(exp: Experiment) -> list[dict[str, Any]]:
    try:
        val = json.loads(exp.meta.get("recommendation", "[]"))
    except ValueError:
        return []
    return [r for r in val if isinstance(r, dict)] if isinstance(val, list) else []


def _answer_block(exp: Experiment, rec: dict[str, Any], runs: Sequence[dict[str, Any]],
                  show_group: bool, prefix: str = "") -> str:
    best, rng = rec.get("best_lr"), rec.get("lr_range")
    text = str(rec.get("text", ""))
    warn = ""
    if rec.get("at_edge"):
        head, sep, tail = text.partition("Warning:")
        text = head.strip()
        tail = tail.strip()
        tail = tail[:1].upper() + tail[1:]
        lrs = sorted({lr for r in runs if (lr := lr_of(r["member"])) is not None})
        side = ("smallest" if best is not None and lrs and math.isclose(best, lrs[0])
                else "largest")
        warn = (tail.strip() if sep else
                f"The best lr is the {side} one swept; the optimum may lie outside the range, "
                "so extend the sweep.")
        nxt = (f" Try lrs beyond {lrs[0]:g} (e.g. {lrs[0] / 10:g})." if side == "smallest"
               and lrs else f" Try lrs beyond {lrs[-1]:g} (e.g. {lrs[-1] * 3:g})." if lrs
               else "")
        warn = f"<p class=warn><b>Edge of the sweep.</b> {_e(warn + nxt)}</p>"
    if best is not None:
        headline = f"Use lr <b>{_e(fmt_value(float(best)))}</b>"
        if rng:
            headline += (f" <span class=muted>· every seed converged for lr in "
                         f"[{_e(fmt_value(float(rng[0])))}, {_e(fmt_value(float(rng[1])))}]"
                         "</span>")
        else:
            headline += " <span class=muted>· no lr had every seed converge</span>"
    else:
        headline = "No learning rate to recommend"
    rows = verdict_rows(runs)
    per_lr = []
    chips = []
    for row in rows:
        lr = lr_of(row["member"])
        name = f"lr {lr:g}" if lr is not None else row["config"]
        bits = [row["summary"]]
        if row["median_val_loss"] is not None:
            bits.append(f"val loss {row['median_val_loss']:.3g}")
        if row["median_val_acc"] is not None:
            bits.append(f"val acc {row['median_val_acc']:.3f}")
        elif row["median_train_loss"] is not None:
            bits.append(f"train loss {row['median_train_loss']:.3g}")
        per_lr.append(f"{name}: " + ", ".join(bits))
        is_best = best is not None and lr is not None and math.isclose(lr, float(best),
                                                                      rel_tol=1e-9)
        share = f"{row['counts'][row['label']]}/{row['seeds']}"
        chips.append(_chip(row["label"], share, is_best, title=f"{name}: {row['summary']}",
                           lead=f"{name} · "))
    n_seeds = max((row["seeds"] for row in rows), default=0)
    evidence = (text + " " if text else "") + (
        f"Per learning rate (median over {n_seeds} seed{'s' if n_seeds != 1 else ''}): "
        + "; ".join(per_lr) + "." if per_lr else "")
    group = (f"<p class=group>{_e(prefix)}{_e(rec.get('group', ''))}</p>"
             if show_group or prefix else "")
    cls = "answer" if best is not None else "answer none"
    return (f"<div class='{cls}'>{group}<p class=headline>{headline}</p>"
            f"<p>{_e(evidence)}</p><div class=chips>{''.join(chips)}</div>{warn}</div>")


MAX_ANSWER_BLOCKS = 4
"""More recommendation groups than this are answered with one ranked table."""


def _answer_summary(exp: Experiment, recs_json: list[dict[str, Any]]) -> str:
    """Many groups (e.g. optimizer x schedule x architecture): the overall winner, then every
    group's own recommendation ranked by its median final metric at its best lr."""
    axes = _axes_of(exp.recs, drop=("seed", "lr"))
    has_val = any(r["final"].get("val_loss") is not None for r in exp.recs)
    key = "val_loss" if has_val else "train_loss"
    rows = []
    for rec, g in _recommended_groups(exp):
        row = verdict_rows(g)[0] if g else None
        score = row[f"median_{key}"] if row else None
        rows.append((score if score is not None else math.inf, rec, g, row))
    rows.sort(key=lambda t: t[0])
    cols = ["rank", *axes, "best lr", "every seed converged for lr in",
            f"median final {key.replace('_', ' ')}", "median final val acc",
            "verdicts at the best lr", "edge"]
    t = Table(cols, [], numeric={0, len(axes) + 1, len(axes) + 3, len(axes) + 4})
    for i, (_, rec, g, row) in enumerate(rows, 1):
        member = g[0]["member"] if g else {}
        rng = rec.get("lr_range")
        t.rows.append([cell(i), *[cell(member.get(k)) for k in axes], cell(rec.get("best_lr")),
                       Cell(f"{rng[0]:g} – {rng[1]:g}" if rng else "none",
                            float(rng[0]) if rng else None),
                       cell(row[f"median_{key}"] if row else None),
                       cell(row["median_val_acc"] if row else None, 3),
                       Cell(row["summary"], row["label"],
                            " ".join(_chip(b["label"], f"{b['count']}/{row['seeds']}")
                                     for b in row["by_label"])) if row else Cell("–"),
                       Cell("at edge" if rec.get("at_edge") else "", str(rec.get("at_edge")))])
    best_score, best, g, row = rows[0]
    if g is None or not math.isfinite(best_score):
        head = "<p class=headline>No group has a recommended learning rate.</p>"
    else:
        acc = (f", val acc {row['median_val_acc']:.3f}" if row["median_val_acc"] is not None
               else "")
        head = (f"<p class=group>best of {len(rows)} groups</p><p class=headline>Use "
                f"<b>{_e(best.get('group', ''))}</b> at lr <b>{_e(fmt_value(best['best_lr']))}"
                f"</b></p><p>{_e(best.get('text', ''))} Median final {_e(key.replace('_', ' '))}"
                f" {best_score:.4g}{_e(acc)} over {row['seeds']} seeds ({_e(row['summary'])})."
                "</p>")
    edge = sum(bool(rec.get("at_edge")) for _, rec, _, _ in rows)
    warn = (f"<p class=warn><b>Edge of the sweep.</b> In {edge} of {len(rows)} groups the best lr "
            "is the smallest or largest one swept; their optimum may lie outside the range.</p>"
            if edge else "")
    return (f"<div class=answer>{head}{warn}</div><p>Every group of runs that differ only in lr "
            "and seed has its own recommendation; ranked here by the median final "
            f"{_e(key.replace('_', ' '))} at that best lr (click a header to sort).</p>"
            + render_table(t))


def data_warnings(exp: Experiment) -> list[str]:
    """Warnings about the held-out part's classes, from the class counts the runner stored
    (recomputed from the data for a store written before they were kept)."""
    from lrlab import data as data_mod

    if data_mod.CLASS_COUNTS_KEY in exp.meta or exp.spec is None:
        return data_mod.balance_warnings(exp.meta)
    from lrlab import spec as spec_mod

    datasets = {}
    for m in spec_mod.members(exp.spec):
        if m.data not in datasets and (ds := exp.dataset(m.index)) is not None:
            datasets[m.data] = ds
    meta = {data_mod.CLASS_COUNTS_KEY: data_mod.class_counts_meta(datasets)} if datasets else {}
    return data_mod.balance_warnings(meta)


def short_answer(directory: Path) -> tuple[str, list[str]]:
    """A recipe's question and short answer: answer.txt's title line (`== NAME: question`)
    and its first paragraph (the lines up to the first blank one, warnings left out); ("", [])
    when the experiment has no answer.txt or it does not open with a short answer."""
    from lrlab.recipes import ANSWER_FILE

    path = Path(directory) / ANSWER_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return "", []
    if not lines or not lines[0].startswith("== "):
        return "", []
    para: list[str] = []
    for line in lines[1:]:
        if not line.strip():
            break
        if not line.startswith("Warning"):
            para.append(line.strip())
    if not para or any(x.startswith("experiment:") for x in para):  # no short answer first
        return "", []
    return lines[0][3:].strip(), para


def _answer_lead(exp: Experiment) -> str:
    """The top of the answer box: data warnings, then a recipe's short answer."""
    out = [f"<p class=warn><b>Validation data unlike the training data.</b> "
           f"{_e(w.removeprefix('Warning').lstrip(': '))}</p>" for w in data_warnings(exp)]
    title, para = short_answer(exp.directory)
    if para:
        out.append(f"<div class=answer><p class=group>{_e(title)}</p><p class=headline>Short "
                   "answer</p>" + "".join(f"<p>{_e(x)}</p>" for x in para)
                   + f"<p class=muted>From {_e('answer.txt')}; the details follow.</p></div>")
    return "".join(out)


def sec_answer(exp: Experiment, prefix: str = "") -> str:
    if not exp.recs:
        return "<p>No finished runs yet; <code>lrlab resume DIR</code> finishes the sweep.</p>"
    lead = _answer_lead(exp)
    return lead + _sec_answer_blocks(exp, prefix)


def _sec_answer_blocks(exp: Experiment, prefix: str = "") -> str:
    recs_json = _recommendations(exp)
    lines = dict(lines_of(exp.recs))
    parts = []
    if len(recs_json) > MAX_ANSWER_BLOCKS:
        return _answer_summary(exp, recs_json)
    for rec in recs_json:
        group = rec.get("group", "")
        runs = next((rs for name, rs in lines.items()
                     if group_key(rs[0]["member"]) == group), None)
        if runs is None:
            runs = exp.recs if len(recs_json) == 1 else []
        parts.append(_answer_block(exp, rec, runs, len(recs_json) > 1, prefix))
    if not recs_json:
        parts.append("<div class='answer none'><p>No recommendation was stored for this "
                     "experiment.</p></div>")
    parts.append("<p class=muted>Chips: the most common verdict per learning rate and how many "
                 "seeds got it (outlined: the recommended lr); the Verdicts section has every "
                 "label with its explanation.</p>")
    return "".join(parts)


def sec_lr_outcome(exp: Experiment, d: Path) -> str:
    f = fig_lr_outcome(lines_of(exp.recs))
    if f is None:
        lr = exp.spec.train.lr if exp.spec is not None else None
        return ("<p>The learning rate was not swept in this experiment"
                + (f" (every run used lr {_e(fmt_value(lr))})" if lr is not None else "")
                + ", so there is no lr axis to draw.</p>")
    val = any(r["final"].get("val_loss") is not None for r in exp.recs)
    which = "validation" if val else "training (no validation set)"
    cap = (f"Final {which} loss (left) and accuracy (right) against the learning rate, log "
           "scale. Line: median over seeds; band: their range; one dot per run, coloured by "
           "its verdict (seeds spread slightly sideways). A run that diverged has no final value "
           "and is drawn as an x on the axis edge.")
    sharp = [r for r in exp.recs if len(c := _col(r["history"], "sharpness"))
             and np.isfinite(c).any()]
    panels = facet_lines(lines_of(exp.recs))
    if sharp and max(len(ls) for _, ls in panels) > MAX_STABILITY_LINES:
        cap += (" With this many lines per panel the stability limits are not drawn; the "
                "table below lists them.")
    elif sharp:
        cap += (" Dotted vertical lines (one per lr, in its line's colour): the stability lr at "
                "the largest sharpness measured during training of the runs at that lr (2/λ for "
                "plain gradient descent with λ the top Hessian eigenvalue; (2 + 2m)/λ with "
                "heavy-ball momentum m; 38/λ_P for Adam with β1 = 0.9 and 2/λ_P for RMSprop and "
                "Adagrad, λ_P the sharpness of the preconditioned loss); an lr to the right of "
                "such a line makes the optimizer unstable at that curvature.")
    else:
        cap += " Sharpness was not measured, so no stability line is drawn."
    out = _figure(f, d, "lr_outcome", "final loss and accuracy against learning rate", _e(cap))
    return out + _sharpness_html(lines_of(exp.recs))


def _sharpness_html(lines: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> str:
    t = sharpness_table(lines)
    if t is None:
        return ""
    table = render_table(t)
    if len(t.rows) > 20:
        table = f"<details><summary>{len(t.rows)} rows</summary>{table}</details>"
    return ("<h3>Sharpness and the stability limit</h3><p class=muted>Largest sharpness over "
            "the seeds at each lr, at initialisation and during training, and the largest lr "
            "that is stable at that curvature. On a quadratic with top curvature λ, plain "
            "gradient descent diverges exactly when lr > 2/λ, heavy-ball momentum m when lr > "
            "(2 + 2m)/λ, Nesterov when lr > (2 + 2m)/((1 + 2m)λ). For Adam, RMSprop and Adagrad "
            "λ is the preconditioned sharpness λ_P (top eigenvalue of P^-1/2 H P^-1/2, P the "
            "optimizer's per-parameter step scale, e.g. sqrt(v̂) + eps), and the limit is "
            "(2 + 2β1)/((1 − β1)λ_P) for Adam (38/λ_P at β1 = 0.9), 2/λ_P for RMSprop and "
            "Adagrad; λ_P is not measured at initialisation, before the first step.</p>"
            + table)


def sec_curves(exp: Experiment, d: Path) -> str:
    if not exp.recs:
        return "<p>No finished runs.</p>"
    f = fig_curves(exp.recs)
    if len(configs(exp.recs)) > MAX_CURVE_PANELS:
        n = len(lines_of(exp.recs))
        cap = (f"{len(configs(exp.recs))} configurations: one panel per combination of the "
               "other swept values" + (f" (the first 40 of {n})" if n > 40 else "")
               + ", one colour per learning rate; solid = training loss, dashed = validation "
               "loss, each the median over the seeds that finished, evaluated on the whole set "
               "after each epoch. All panels share both axes; curves.csv has every run.")
        out = _figure(f, d, "curves", "loss curves per line and learning rate", _e(cap))
        return out + _schedule_figure(exp, d)
    cap = ("Training (blue) and validation (orange) loss per configuration, evaluated on the "
           "whole set after each epoch (epoch 0 = at initialisation). Bold line: median over the "
           f"seeds that finished; thin lines: each of those seeds (a band of their range when "
           f"there are more than {SEED_LINES}). Red: a diverged run up to the epoch where it "
           "blew up (x). All panels share both axes.")
    out = _figure(f, d, "curves", "training and validation loss curves per configuration",
                  _e(cap))
    return out + _schedule_figure(exp, d)


def _schedule_figure(exp: Experiment, d: Path) -> str:
    """The applied-lr figure, or nothing when every run kept a constant lr."""
    sched = fig_lr_schedule(exp)
    if sched is None:
        return ""
    return _figure(sched, d, "lr_schedule", "applied learning rate per optimizer step",
                   _e("The learning rate actually applied at every optimizer step (first seed "
                      "of each configuration): schedules, decay and later phases as the "
                      "optimizer saw them."))


def sec_verdicts(exp: Experiment, d: Path) -> str:
    if not exp.recs:
        return "<p>No finished runs.</p>"
    t = verdict_table(exp.recs)
    t.to_csv(d / "verdicts.csv")
    return ("<p>One row per configuration; seeds aggregated. Click a column header to sort. "
            "Each label present gets the explanation and evidence numbers of one of its runs. "
            "(<a href='verdicts.csv'>verdicts.csv</a>)</p>" + render_table(t))


def sec_probes(exp: Experiment, d: Path) -> str:
    f, notes = fig_probes(exp.recs)
    if f is None:
        return ("<p>No probe measurements were recorded for this experiment (they are taken "
                "when <code>[run].probes</code> is on and the probes module is installed).</p>"
                + _notes(notes))
    cap = ("Probe measurements over epochs, one line per learning rate (median over seeds, "
           "darker = larger lr): dead ReLU fraction (units that output 0 for every probe "
           "sample), saturated fraction (sigmoid/tanh units in their flat tails), gradient "
           "norm, update/weight ratio, the share of the most-predicted class and lr × "
           "sharpness, wherever they were measured. A median hides seeds that behave "
           "differently: `lrlab export DIR` prints every run's values.")
    html_ = _figure(f, d, "probes", "probe measurements over epochs", _e(cap)) + _notes(notes)
    t = probe_layer_table(exp.recs)
    if t is not None:
        html_ += ("<h3>Per layer at the end of training</h3><p class=muted>Median over seeds "
                  "of each probe's last measured value; layer L is the output layer.</p>"
                  + render_table(t))
    return html_


def sec_regions(exp: Experiment, d: Path) -> str:
    f, note = fig_regions(exp)
    if f is None:
        return f"<p>{_e(note)}</p>"
    cap = ("Predicted class over the raw input plane (background) for the first seed of each "
           "configuration, from its stored final weights, with the training points on top "
           "coloured by their true class. Rows: other swept values (e.g. raw vs standardized "
           "input); columns: learning rates. A single colour everywhere means the network "
           "predicts one class for every input.")
    return _figure(f, d, "decision_regions", "decision regions per learning rate",
                   _e(cap)) + (f"<p class=muted>{_e(note)}</p>" if note else "")


def sec_measurements(exp: Experiment, d: Path) -> str:
    if not exp.recs:
        return "<p>No finished runs.</p>"
    m = measurements(exp)
    _csv(m.long, d / "measurements.csv")
    lines = [name for name, _ in lines_of(exp.recs)]
    arch = any("hidden" in r["member"] for r in exp.recs)
    other = ("the architecture (hidden layer sizes) and the other swept values" if arch
             else "the other swept values" if lines != ["all runs"] else "all runs")
    has_lr = any(lr_of(r["member"]) is not None for r in exp.recs)
    if has_lr and len(lines) > MAX_MEASURE_COLUMNS:
        layout = f"Rows: {other}; columns: learning rates."
    else:
        layout = f"Rows: learning rates; columns: {other}."
    out = [f"<p>The tables the learning-rate article (seed 002) made up, measured here. "
           f"{_e(layout)} Each cell: median over seeds (range in parentheses). "
           "(<a href='measurements.csv'>measurements.csv</a>: one row per configuration.)</p>"]
    val = any(r["final"].get("val_acc") is not None for r in exp.recs)
    out.append(f"<h3>Accuracy per learning rate</h3><p class=muted>Final "
               f"{'validation' if val else 'training'} accuracy of the runs that finished; "
               "diverged runs are counted separately.</p>" + render_table(m.accuracy))
    total = exp.meta.get("train_seconds")
    out.append("<h3>Wall time</h3><p class=muted>Seconds per run. The members of a cohort "
               "train together as one batched model, so a run's time is its cohort's wall time "
               "divided by the cohort's members."
               + (f" The whole sweep trained in {_e(total)} s." if total else "") + "</p>"
               + render_table(m.wall))
    if m.target is not None:
        tgt = (f"Target: training loss ≤ {m.target[0]:.4g}, which is {TARGET_FACTOR:g} × the "
               f"median final training loss of the best configuration ({m.target[1]}). "
               "Steps are optimizer steps (minibatch updates) until the training loss, "
               "evaluated on the whole training set after each epoch, first reached the "
               "target; the cell gives the median over the seeds that reached it and how many "
               "did.")
    else:
        tgt = "No run finished, so there is no target loss."
    out.append(f"<h3>Steps to a target loss</h3><p class=muted>{_e(tgt)}</p>"
               + render_table(m.steps))
    out.append("<h3>Throughput</h3><p class=muted>Training samples processed per second per run "
               "(training-set size × epochs trained ÷ the run's share of its cohort's wall "
               "time); evaluation and probes are included in the time.</p>"
               + render_table(m.throughput))
    if m.cohorts:
        ct = Table(["cohort", "runs", "wall time (s)", "samples/s (all its runs)"],
                   [[cell(c), cell(n), cell(s, 4), cell(rate, 4)]
                    for c, n, s, rate in m.cohorts], numeric={0, 1, 2, 3})
        out.append("<details><summary>Per cohort</summary>" + render_table(ct) + "</details>")
    out.append("<h3>Overfitting</h3><p class=muted>Gap: final training accuracy minus "
               "validation accuracy (median). “yes k/n”: k of n seeds have the verdict "
               "“overfitting”: the run fitted its training set (its loss fell and its training "
               "accuracy clearly beats always answering the most common class) and then its "
               "validation loss rose while the training loss fell, or its validation accuracy "
               "stayed at that baseline. A run that never learned (diverged, collapsed, dead or "
               "saturated) is never counted.</p>" + render_table(m.overfit))
    out.append("<h3>Peak memory</h3>")
    if m.memory:
        mt = Table(["where", "peak memory (MiB)"],
                   [[Cell(k, k), cell(v / 2**20, 4)] for k, v in m.memory], numeric={1})
        out.append("<p class=muted>Peak resident memory of the process that trained each "
                   "cohort, while it ran (the members of a cohort share one process; the figure "
                   "includes Python, torch and the data, not just the network).</p>"
                   + render_table(mt))
    else:
        out.append("<p>Not recorded: this experiment's store holds no peak-memory measurement."
                   + _param_note(exp) + "</p>")
    return "".join(out)


def _param_note(exp: Experiment) -> str:
    if exp.spec is None or not exp.recs:
        return ""
    from lrlab import nets

    m = exp.member(exp.recs[0]["id"])
    ds = exp.dataset(exp.recs[0]["id"])
    if m is None or ds is None:
        return ""
    n = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes).n_params()
    width = 8 if exp.spec.run.dtype == "float64" else 4
    return (f" For scale: one run's network has {n:,} parameters ({n * width / 1024:.1f} KiB "
            f"in {_e(exp.spec.run.dtype)}).")


def sec_reproduce(exp: Experiment) -> str:
    d = exp.directory
    spec_file = d / "spec.toml"
    toml = exp.meta.get("spec_toml", "")
    rerun = f"lrlab sweep {shlex.quote(str(spec_file))} --out {shlex.quote(str(d) + '-rerun')}"
    out = ["<p>Re-run exactly this experiment (same spec, same seeds, same numbers):</p>",
           f"<pre>{_e(rerun)}</pre>"]
    if exp.meta.get("command"):
        out.append(f"<p>The command that made it:</p><pre>{_e(exp.meta['command'])}</pre>")
    out.append(f"<p>Rebuild this page from the store (no retraining):</p>"
               f"<pre>{_e('lrlab report ' + shlex.quote(str(d)))}</pre>")
    out.append(f"<p>The spec (<code>spec.toml</code>):</p><pre>{_e(toml)}</pre>")
    m = exp.meta
    dtype = exp.spec.run.dtype if exp.spec is not None else "?"
    facts = [("lrlab", m.get("lrlab_version", "?")), ("torch", m.get("torch_version", "?")),
             ("Python", m.get("python_version", "?")), ("device", m.get("device", "?")),
             ("dtype", dtype), ("platform", m.get("platform", "?")),
             ("created", m.get("created", "?")), ("finished", m.get("finished", "?")),
             ("training time", (m["train_seconds"] + " s") if m.get("train_seconds") else "?")]
    out.append("<p class=muted>" + " · ".join(f"{_e(k)} {_e(v)}" for k, v in facts) + "</p>")
    return "".join(out)


def _header(exp: Experiment) -> str:
    recs = exp.recs
    n_cfg = len(configs(recs))
    seeds = len({r["member"].get("seed") for r in recs})
    bits = [f"{len(recs)} runs ({n_cfg} configurations × {seeds} seed{'s' * (seeds != 1)})"]
    s = exp.spec
    if s is not None:
        axes = [k for k in s.axes() if k != "seed"]
        data = f"data {s.data.source}"
        ds = exp.dataset(recs[0]["id"]) if recs else None
        if ds is not None:
            data += (f" ({ds.X_train.shape[0]} train / {ds.X_val.shape[0]} {ds.val_label}, "
                     f"{ds.X_train.shape[1]} features, {ds.n_classes} classes)")
        bits.append(data)

        def v(key: str, text: str) -> str:  # a swept key's base value would mislead
            return f"{key} swept" if key in axes else text

        bits.append(", ".join([
            v("hidden", f"hidden {fmt_value(s.model.hidden) or 'none'}"),
            v("activation", s.model.activation), v("output", s.model.output),
            v("init", f"init {fmt_value(s.model.init)}")]))
        bits.append(", ".join([
            v("optimizer", s.train.optimizer),
            v("batch_size", f"batch {s.train.batch_size or 'full'}"),
            v("epochs", f"{s.train.epochs} epochs")]
            + ([v("schedule", f"schedule {s.train.schedule}")]
               if s.train.schedule != "constant" or "schedule" in axes else [])
            + ([f"{len(s.phases) + 1} phases"] if s.phases else [])))
        if axes:
            bits.append("swept: " + ", ".join(axes))
    return (f"<h1>lrlab report: {_e(exp.name)}</h1>"
            + "".join(f"<p class=sub>{_e(b)}</p>" for b in
                      [" · ".join(bits[:2]), " · ".join(bits[2:])] if b))


# ----------------------------------------------------------------------------- entry points


def build(directory: str | Path) -> Path:
    """Write report.html, the PNG figures and their CSVs into the experiment folder (never over
    a report built from more finished members: LrlabError, nothing written)."""
    from lrlab import folder

    exp = load_experiment(directory)
    d = exp.directory
    folder.check_report(d, len(exp.recs))
    with plt.rc_context(RC):
        body = {
            "answer": sec_answer(exp),
            "lr-outcome": sec_lr_outcome(exp, d) if exp.recs else "<p>No finished runs.</p>",
            "curves": sec_curves(exp, d),
            "verdicts": sec_verdicts(exp, d),
            "probes": sec_probes(exp, d),
            "decision-regions": sec_regions(exp, d),
            "measurements": sec_measurements(exp, d),
            "reproduce": sec_reproduce(exp),
        }
    page = _page(f"lrlab: {exp.name}", _header(exp), SECTIONS, body)
    return _write(d / "report.html", folder.tag_report(page, "experiment", len(exp.recs)))


def _compare_names(exps: Sequence[Experiment]) -> list[str]:
    names = [e.name for e in exps]
    if len(set(names)) < len(names):
        names = [f"{e.name} ({e.directory})" for e in exps]
    return names


def build_compare(directories: Sequence[str | Path], out: str | Path) -> Path:
    """One report over several experiments on shared axes: answers side by side, lr vs outcome
    overlaid (one line per experiment and line), each experiment's best configuration's curves,
    a combined verdict table and measurements. Written to out/report.html (+ PNG/CSV)."""
    if len(directories) < 2:
        raise LrlabError(f"`lrlab compare` needs at least 2 experiment folders; got "
                         f"{len(directories)}")
    exps = [load_experiment(p) for p in directories]
    d = Path(out)
    if (d / DB_NAME).exists():
        raise LrlabError(f"--out {str(d)!r} is an experiment folder; choose another folder for "
                         "the comparison")
    if d.exists() and not d.is_dir():
        raise LrlabError(f"--out {str(d)!r} exists and is not a folder")
    d.mkdir(parents=True, exist_ok=True)
    names = _compare_names(exps)
    for exp, name in zip(exps, names):
        exp.meta = {**exp.meta, "name": name}
    body: dict[str, str] = {}
    with plt.rc_context(RC):
        body["answer"] = "".join(f"<h3>{_e(exp.name)}</h3>" + sec_answer(exp) for exp in exps)
        lines = [(f"{exp.name}: {line}" if line != "all runs" else exp.name, rs)
                 for exp in exps for line, rs in lines_of(exp.recs)]
        f = fig_lr_outcome(lines, facet=False)
        body["lr-outcome"] = (_figure(
            f, d, "lr_outcome", "final loss and accuracy against learning rate, per experiment",
            _e("Final loss and accuracy against the learning rate, one line per experiment (and "
               "per other swept value): median over seeds with their range as a band, dots "
               "coloured by verdict, on shared axes.")) + _sharpness_html(lines)
            if f is not None else "<p>No experiment swept the learning rate.</p>")
        fb = fig_best_curves(exps)
        body["curves"] = (_figure(fb, d, "best_curves", "loss curves of each best configuration",
                                  _e("Training and validation loss (median over seeds) of "
                                     "each experiment's recommended configuration."))
                          if fb is not None else "<p>No recommended configuration to draw.</p>")
        tables = [verdict_table(exp.recs, exp.name) for exp in exps if exp.recs]
        if tables:
            cols = list(dict.fromkeys(c for t in tables for c in t.columns))
            merged = Table(cols, [])
            for t in tables:
                idx = {c: i for i, c in enumerate(t.columns)}
                merged.rows += [[row[idx[c]] if c in idx else Cell("–") for c in cols]
                                for row in t.rows]
            merged.numeric = {cols.index(c) for c in ("seeds", "median final train loss",
                                                      "median final val loss",
                                                      "median final val acc")}
            merged.to_csv(d / "verdicts.csv")
            body["verdicts"] = ("<p>Every configuration of every experiment; click a header "
                                "to sort. (<a href='verdicts.csv'>verdicts.csv</a>)</p>"
                                + render_table(merged))
        else:
            body["verdicts"] = "<p>No finished runs.</p>"
        meas = []
        for exp in exps:
            if not exp.recs:
                continue
            m = measurements(exp)
            meas.append(f"<h3>{_e(exp.name)}</h3><p class=muted>Accuracy per learning rate "
                        "(median, range over seeds)</p>" + render_table(m.accuracy)
                        + "<p class=muted>Throughput (training samples/s per run)</p>"
                        + render_table(m.throughput)
                        + "<p class=muted>Wall time per run</p>" + render_table(m.wall))
        body["measurements"] = "".join(meas) or "<p>No finished runs.</p>"
        body["reproduce"] = "".join(
            f"<h3>{_e(exp.name)}</h3><details><summary>spec, commands and versions</summary>"
            f"{sec_reproduce(exp)}</details>" for exp in exps)
    header = (f"<h1>lrlab comparison: {_e(' vs '.join(names))}</h1><p class=sub>"
              + " · ".join(f"{_e(n)}: {len(e.recs)} runs in {_e(str(e.directory))}"
                           for n, e in zip(names, exps)) + "</p>")
    page = _page("lrlab compare: " + " vs ".join(names), header, COMPARE_SECTIONS, body)
    from lrlab import folder

    return _write(d / "report.html",
                  folder.tag_report(page, "compare", sum(len(e.recs) for e in exps)))
