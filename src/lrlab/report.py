"""Figures and a self-contained HTML report, built from the store alone (no retraining).

`report` only draws (STYLE 11): verdicts and recommendations are read from the store. Every
user-provided string is HTML-escaped. Figures are embedded as base64 PNG and also written
next to the report, each with a CSV of the numbers it plots.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lrlab.export import records  # noqa: E402
from lrlab.store import Store  # noqa: E402

VERDICT_COLORS = {
    "converged": "#2e7d32", "slow": "#f9a825", "diverged": "#c62828", "oscillating": "#ef6c00",
    "collapsed": "#6a1b9a", "dead_relu": "#37474f", "saturated": "#00838f",
    "overfitting": "#ad1457",
}


# ----------------------------------------------------------------------------- grouping


def config_key(member: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A run configuration: every swept value but the seed."""
    return tuple((k, json.dumps(v)) for k, v in member.items() if k != "seed")


def config_label(member: dict[str, Any]) -> str:
    parts = []
    for k, v in member.items():
        if k == "seed":
            continue
        v = "-".join(map(str, v)) if isinstance(v, list) else (f"{v:g}" if isinstance(v, float)
                                                                else v)
        parts.append(f"{k}={v}")
    return ", ".join(parts) or "all runs"


def line_key(member: dict[str, Any]) -> str:
    """What distinguishes lines on an lr axis: every swept value but lr and seed."""
    return config_label({k: v for k, v in member.items() if k != "lr"}) if any(
        k not in ("lr", "seed") for k in member) else "all runs"


def configs(recs: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault(config_key(r["member"]), []).append(r)
    out = list(groups.values())
    out.sort(key=lambda g: (line_key(g[0]["member"]), -(g[0]["member"].get("lr") or 0)))
    return out


def _arr(col: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in col], dtype=float)


# ----------------------------------------------------------------------------- figures


def fig_curves(recs: Sequence[dict[str, Any]]) -> tuple[plt.Figure, list[list[Any]]]:
    """A grid of train/val loss per configuration: mean over seeds with a min-max band."""
    groups = configs(recs)
    n = len(groups)
    cols = min(4, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), sharex=True,
                             sharey=True, squeeze=False)
    table: list[list[Any]] = [["config", "epoch", "train_mean", "train_lo", "train_hi",
                               "val_mean", "val_lo", "val_hi"]]
    all_vals = []
    for ax, g in zip(axes.flat, groups):
        label = config_label(g[0]["member"])
        length = max(len(r["history"]["epoch"]) for r in g)
        ep = np.arange(length)
        stats = {}
        for key, color in (("train_loss", "#1565c0"), ("val_loss", "#e65100")):
            m = np.full((len(g), length), np.nan)
            for i, r in enumerate(g):
                col = _arr(r["history"].get(key) or [])
                m[i, : len(col)] = col
            if np.all(np.isnan(m)):
                continue
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean, lo, hi = np.nanmean(m, 0), np.nanmin(m, 0), np.nanmax(m, 0)
            stats[key] = (mean, lo, hi)
            all_vals.append(m[np.isfinite(m)])
            ax.plot(ep, mean, color=color, lw=1.4, label=key.replace("_", " "))
            if len(g) > 1:
                ax.fill_between(ep, lo, hi, color=color, alpha=0.2, lw=0)
        for r in g:
            if r["status"] == "diverged":
                col = _arr(r["history"]["train_loss"])
                last = np.where(np.isfinite(col))[0]
                if len(last):
                    ax.plot(last[-1], col[last[-1]], "x", color="#c62828", ms=8, mew=2)
        n_div = sum(r["status"] == "diverged" for r in g)
        title = label + (f"\n{n_div}/{len(g)} diverged (x)" if n_div else "")
        ax.set_title(title, fontsize=8)
        for i in range(length):
            row = [label, i]
            for key in ("train_loss", "val_loss"):
                row += [float(s[i]) if key in stats and np.isfinite(s[i]) else ""
                        for s in stats.get(key, (np.full(length, np.nan),) * 3)]
            table.append(row)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    vals = np.concatenate(all_vals) if all_vals else np.array([1.0])
    vals = vals[vals > 0]
    if len(vals) and vals.max() / max(vals.min(), 1e-12) > 50:
        axes.flat[0].set_yscale("log")
    axes.flat[0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("loss")
    fig.tight_layout()
    return fig, table


def fig_lr_outcome(recs: Sequence[dict[str, Any]], verdict_of: dict[int, str]
                   ) -> tuple[plt.Figure, list[list[Any]]] | None:
    """Final val loss and accuracy against lr (log axis): median and seed range per line."""
    if not any(isinstance(r["member"].get("lr"), (int, float)) for r in recs):
        return None
    has_val = any(r["final"]["val_loss"] is not None for r in recs)
    lk, ak = ("val_loss", "val_acc") if has_val else ("train_loss", "train_acc")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    table: list[list[Any]] = [["line", "lr", "seed", lk, ak, "verdict"]]
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        lines.setdefault(line_key(r["member"]), []).append(r)
    for name, rs in lines.items():
        by_lr: dict[float, list[dict[str, Any]]] = {}
        for r in rs:
            by_lr.setdefault(float(r["member"]["lr"]), []).append(r)
        lrs = sorted(by_lr)
        for ax, key in ((ax1, lk), (ax2, ak)):
            med, lo, hi = [], [], []
            for lr in lrs:
                v = [r["final"][key] if r["status"] == "ok" else None for r in by_lr[lr]]
                v = [x for x in v if x is not None]
                med.append(np.median(v) if v else np.nan)
                lo.append(min(v) if v else np.nan)
                hi.append(max(v) if v else np.nan)
            (line,) = ax.plot(lrs, med, "-", lw=1.2, label=name, alpha=0.8)
            ax.fill_between(lrs, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
            for lr in lrs:
                for r in by_lr[lr]:
                    y = r["final"][key]
                    lab = verdict_of.get(r["id"], "")
                    if r["status"] != "ok" or y is None:
                        y = ax.get_ylim()[1] if key == lk else 0.0
                    ax.scatter([lr], [y], s=14, color=VERDICT_COLORS.get(lab, "#777"),
                               zorder=3, edgecolors="none")
        for lr in lrs:
            for r in by_lr[lr]:
                table.append([name, lr, r["member"].get("seed"), r["final"][lk], r["final"][ak],
                              verdict_of.get(r["id"], "")])
    for ax, key in ((ax1, lk), (ax2, ak)):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final " + key.replace("_", " "))
        ax.grid(alpha=0.3, which="both")
    if any(r["final"][lk] is not None and r["final"][lk] > 0 for r in recs):
        vals = [r["final"][lk] for r in recs if r["final"][lk]]
        if max(vals) / max(min(vals), 1e-12) > 50:
            ax1.set_yscale("log")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=lab)
               for lab, c in VERDICT_COLORS.items() if lab in verdict_of.values()]
    if len(lines) > 1:
        ax1.legend(fontsize=7)
    if handles:
        ax2.legend(handles=handles, fontsize=7, title="verdict", title_fontsize=7)
    fig.tight_layout()
    return fig, table


# ----------------------------------------------------------------------------- html


def _png(fig: plt.Figure, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode("ascii")


def _csv(table: list[list[Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(table)


def verdict_rows(recs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration: seeds aggregated ("6/8 converged, 2/8 collapsed")."""
    out = []
    for g in configs(recs):
        counts: dict[str, int] = {}
        for r in g:
            lab = r["verdict"]["label"] if r["verdict"] else r["status"]
            counts[lab] = counts.get(lab, 0) + 1
        summary = ", ".join(f"{c}/{len(g)} {lab}" for lab, c in
                            sorted(counts.items(), key=lambda kv: -kv[1]))
        top = max(counts, key=lambda k: counts[k])
        example = next((r for r in g if r["verdict"] and r["verdict"]["label"] == top), g[0])
        finals = {k: [r["final"][k] for r in g if r["final"][k] is not None and
                      r["status"] == "ok"] for k in ("train_loss", "val_loss", "val_acc",
                                                     "train_acc")}
        out.append({
            "config": config_label(g[0]["member"]), "member": g[0]["member"], "seeds": len(g),
            "summary": summary, "label": top,
            "explanation": example["verdict"]["explanation"] if example["verdict"] else "",
            "evidence": example["verdict"]["evidence"] if example["verdict"] else {},
            **{f"median_{k}": (float(np.median(v)) if v else None) for k, v in finals.items()},
        })
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.88em;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4;cursor:pointer} img{max-width:100%}
.answer{background:#f1f8e9;border-left:4px solid #2e7d32;padding:.6em 1em}
.warn{background:#fff3e0;border-left:4px solid #ef6c00;padding:.4em 1em}
.label{display:inline-block;padding:0 .4em;border-radius:3px;color:#fff;font-size:.85em}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em} .muted{color:#777}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, i){
  th.addEventListener('click', function(){
    var t = th.closest('table'), b = t.tBodies[0], rows = Array.from(b.rows);
    var asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
    rows.sort(function(a, c){
      var x = a.cells[i].dataset.v || a.cells[i].textContent,
          y = c.cells[i].dataset.v || c.cells[i].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? r : -r;
    });
    rows.forEach(function(r){ b.appendChild(r); });
  });
});
"""


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return html.escape(str(x))


def build(directory: str | Path) -> Path:
    """Write report.html, the PNG figures and their CSVs into the experiment folder."""
    d = Path(directory)
    store = Store.open(d)
    try:
        meta = store.meta()
    finally:
        store.close()
    recs = records(d)
    verdict_of = {r["id"]: r["verdict"]["label"] for r in recs if r["verdict"]}
    e = html.escape
    name = meta.get("name", d.name)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>lrlab: {e(name)}</title><style>{CSS}</style></head><body>",
             f"<h1>lrlab: {e(name)}</h1>",
             f"<p class='muted'>{len(recs)} runs · data {e(_data_name(meta))} · "
             f"created {e(meta.get('created', ''))}</p>"]

    recs_json = json.loads(meta.get("recommendation", "[]"))
    parts.append("<h2 id='answer'>Answer</h2>")
    for r in recs_json:
        cls = "warn" if r.get("at_edge") else "answer"
        head = f"<b>{e(r['group'])}</b>: " if len(recs_json) > 1 else ""
        parts.append(f"<p class='{cls}'>{head}{e(r['text'])}</p>")
    if not recs_json:
        parts.append("<p>No finished runs.</p>")

    if recs:
        out = fig_lr_outcome(recs, verdict_of)
        if out:
            fig, table = out
            b64 = _png(fig, d / "lr_outcome.png")
            _csv(table, d / "lr_outcome.csv")
            parts.append("<h2 id='lr-outcome'>Learning rate vs outcome</h2>"
                         "<p>Final loss and accuracy per learning rate: the line is the median "
                         "over seeds, the band their range, dots coloured by verdict.</p>"
                         f"<img alt='final loss and accuracy against learning rate' "
                         f"src='data:image/png;base64,{b64}'>")
        fig, table = fig_curves(recs)
        b64 = _png(fig, d / "curves.png")
        _csv(table, d / "curves.csv")
        parts.append("<h2 id='curves'>Loss curves</h2><p>Training (blue) and validation "
                     "(orange) loss per configuration, mean over seeds with the seed range as "
                     "a band; a red x marks where a diverged run was stopped.</p>"
                     f"<img alt='loss curves per configuration' "
                     f"src='data:image/png;base64,{b64}'>")

    rows = verdict_rows(recs)
    parts.append("<h2 id='verdicts'>Verdicts</h2><table class='sortable'><thead><tr>"
                 "<th>configuration</th><th>seeds</th><th>verdicts</th><th>median val loss</th>"
                 "<th>median val acc</th><th>explanation (typical run)</th><th>evidence</th>"
                 "</tr></thead><tbody>")
    for row in rows:
        color = VERDICT_COLORS.get(row["label"], "#777")
        ev = "; ".join(f"{e(str(k))}={_fmt(v)}" for k, v in row["evidence"].items())
        parts.append(
            f"<tr><td>{e(row['config'])}</td><td>{row['seeds']}</td>"
            f"<td><span class='label' style='background:{color}'>{e(row['label'])}</span> "
            f"{e(row['summary'])}</td><td data-v='{row['median_val_loss'] or ''}'>"
            f"{_fmt(row['median_val_loss'])}</td><td data-v='{row['median_val_acc'] or ''}'>"
            f"{_fmt(row['median_val_acc'])}</td><td>{e(row['explanation'])}</td>"
            f"<td class='muted'>{ev}</td></tr>")
    parts.append("</tbody></table>")

    parts.append("<h2 id='reproduce'>Reproduce</h2>")
    if meta.get("command"):
        parts.append(f"<p>Command:</p><pre>{e(meta['command'])}</pre>")
    parts.append(f"<p>Spec (<code>spec.toml</code>):</p><pre>{e(meta.get('spec_toml', ''))}"
                 "</pre>")
    parts.append(f"<p class='muted'>lrlab {e(meta.get('lrlab_version', ''))}, torch "
                 f"{e(meta.get('torch_version', ''))}, Python "
                 f"{e(meta.get('python_version', ''))}, device {e(meta.get('device', ''))}, "
                 f"{e(meta.get('platform', ''))}; training took "
                 f"{e(meta.get('train_seconds', '?'))} s.</p>")
    parts.append(f"<script>{SORT_JS}</script></body></html>")
    path = d / "report.html"
    tmp = d / "report.html.tmp"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path


def _data_name(meta: dict[str, str]) -> str:
    try:
        return json.loads(meta["spec_json"])["data"]["source"]
    except (KeyError, ValueError):
        return "?"
