"""Drawing the range test: loss against lr as PNG, and a small self-contained report.html.

Only draws: every number comes from a `FindResult`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from lrlab.finder import FindResult, cell, describe, fmt


def write_html(r: FindResult, path: Path, png_b64: str) -> Path:
    """A small self-contained page: the recommendation, the plot, the suggestions, the check
    table."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(k)}</td><td>{fmt(s.lr)}</td><td>{e(describe(k))}</td>"
                   f"<td>{e(', '.join(f'{a}={fmt(b)}' for a, b in s.evidence.items()))}</td>"
                   "</tr>" for k, s in r.suggestions.items())
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>lrlab find"
             "</title><style>body{font:15px system-ui,sans-serif;max-width:60em;margin:2em auto}"
             "td,th{padding:2px 10px;text-align:left}img{max-width:100%}"
             ".muted{color:#666}</style></head><body><h1>lrlab find</h1>",
             f"<pre>{e(chr(10).join(r.summary()))}</pre>",
             f"<img alt='loss against learning rate' src='data:image/png;base64,{png_b64}'>",
             "<h2>Suggestions</h2><table><tr><th>rule</th><th>lr</th><th>what</th>"
             f"<th>evidence</th></tr>{rows}</table>",
             f"<p>Diverges at {fmt(r.diverge_lr)} (per seed: "
             f"{e(', '.join(fmt(c.diverge_lr) for c in r.per_seed))}).</p>"]
    if r.check:
        rec = r.recommended
        ev = rec.evidence
        metrics = ev.get("metrics") or [r.check.metric]
        parts.insert(1, f"<p style='font-size:1.3em'><b>{e(r.headline())}</b></p>"
                        f"<p>{e(rec.rule)}: {e(rec.text)}</p>")
        parts.append(f"<h2>Check</h2><p>{r.check.epochs} epochs per run at each candidate "
                     "(each suggestion x0.3, x1, x3, rounded to the 1-2-5 series), every seed; "
                     "median and seed range. A candidate wins only when its worst seed beats "
                     "another's best; otherwise it is a tie, and the tie goes to the lowest "
                     "lr.</p><table><tr><th>lr</th>"
                     + "".join(f"<th>{e(m)}</th>" for m in metrics)
                     + "<th>from</th><th>diverged</th><th></th></tr>")
        for c in ev.get("candidates", []):
            status = ("recommended" if c["lr"] == rec.lr else
                      "tie" if c["lr"] in ev.get("tied_with", []) else
                      "beaten by " + ", ".join(c["beaten_by"]) if c["beaten_by"] else "")
            cells = "".join(f"<td>{e(cell(c[m]))}</td>" for m in metrics)
            bold = " style='font-weight:bold'" if c["lr"] == rec.lr else ""
            parts.append(f"<tr{bold}><td>{fmt(c['lr'])}</td>{cells}<td>"
                         f"{e(', '.join(c['from']))}</td><td>{c['diverged']}/{c['seeds']}</td>"
                         f"<td>{e(status)}</td></tr>")
        parts.append("</table><ul>" + "".join(
            f"<li>{e(k)}: {e(v)}</li>" for k, v in r.check.verdicts().items()) + "</ul>")
    else:
        parts.insert(1, "<p><b>Unchecked</b>: the suggestions below are readings of the "
                        "curve, not verified by training.</p>")
    parts.append(f"<p class='muted'>settings: {e(json.dumps(r.to_json()['settings']))}</p>"
                 "</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


COLORS = {"steepest": "#2e7d32", "valley": "#1565c0", "min10": "#6a1b9a"}


def plot_png(r: FindResult, path: Path) -> str:
    """Loss against lr (log axis): median, seed band, suggestions, divergence. Returns base64."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = r.curve
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if len(c.lr):
        top = float(np.max(c.loss))
        best = float(np.min(c.loss))
        ax.fill_between(c.lr, c.lo, np.minimum(c.hi, 1e300), color="#90caf9", alpha=0.45,
                        lw=0, label=f"seed range ({len(r.per_seed)} seeds)")
        ax.plot(c.lr, c.loss, color="#0d47a1", lw=1.8, label="median smoothed loss")
        lo = float(np.min(c.lo))
        hi = c.hi[np.isfinite(c.hi)]
        top = min(max(top, float(np.max(hi)) if len(hi) else top), r.settings.diverge_th * best)
        pad = 0.05 * (top - lo + 1e-12)
        ax.set_ylim(lo - pad, top + pad)
    for name, s in r.suggestions.items():
        if s.lr is not None:
            ax.axvline(s.lr, color=COLORS.get(name, "#555"), ls="--", lw=1.2,
                       label=f"{name}: {s.lr:.3g}")
    rec = r.recommended
    if rec.lr is not None:
        ax.axvline(rec.lr, color="#000", ls="-", lw=2.0, label=f"use: {rec.lr:g} ({rec.rule})")
    if r.diverge_lr is not None:
        ax.axvline(r.diverge_lr, color="#c62828", ls=":", lw=1.5,
                   label=f"diverges: {r.diverge_lr:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    ax.set_title(f"lr range test: {r.optimizer}, {len(r.per_seed)} seeds")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode("ascii")
