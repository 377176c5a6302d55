"""Export records from a stored experiment: JSON Lines (one object per member) or CSV.

The record shape is a promise to scripts: `member` (swept values),
`status`, `diverged_epoch`, `final`, `verdict`, `history`. No NaN or Inf is ever written:
a non-finite value is `null`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from lrlab.store import Store

FINAL_KEYS = ("train_loss", "val_loss", "train_acc", "val_acc")
HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr")


def _last_finite(col: list[Any] | None) -> float | None:
    for x in reversed(col or []):
        if x is not None and math.isfinite(x):
            return x
    return None


def records(directory: str | Path) -> list[dict[str, Any]]:
    """One dict per finished member, in member order."""
    store = Store.open(directory)
    try:
        with store.snapshot():  # one state, even while a sweep commits cohorts
            hists = store.histories()
            verdicts = store.verdicts()
            rows = store.members()
        out = []
        for m in rows:
            if m["status"] is None:
                continue
            hist = hists.get(m["id"], {"epoch": []})
            history = {k: hist.get(k, [None] * len(hist["epoch"])) for k in HISTORY_KEYS}
            history.update({k: v for k, v in hist.items() if k not in history})
            out.append({
                "id": m["id"],
                "member": m["swept"],
                "status": m["status"],
                "diverged_epoch": m["diverged_epoch"],
                "final": {k: _last_finite(hist.get(k)) for k in FINAL_KEYS},
                "verdict": verdicts.get(m["id"]),
                "seconds": m["seconds"],
                "history": history,
            })
        return out
    finally:
        store.close()


def to_jsonl(directory: str | Path) -> str:
    return "".join(json.dumps(r, allow_nan=False) + "\n" for r in records(directory))


def to_csv(directory: str | Path) -> str:
    """One row per member per epoch: swept values, status, verdict label and metrics."""
    recs = records(directory)
    swept = list(dict.fromkeys(k for r in recs for k in r["member"]))
    metrics = list(dict.fromkeys(k for r in recs for k in r["history"] if k != "epoch"))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["member_id", *swept, "status", "diverged_epoch", "verdict", "epoch", *metrics])
    for r in recs:
        h = r["history"]
        label = r["verdict"]["label"] if r["verdict"] else ""
        for i, ep in enumerate(h["epoch"]):
            vals = [h.get(k, [None] * (i + 1))[i] if i < len(h.get(k, [])) else None
                    for k in metrics]
            w.writerow([r["id"], *[json.dumps(r["member"].get(k)) if isinstance(
                r["member"].get(k), list) else r["member"].get(k, "") for k in swept],
                r["status"], r["diverged_epoch"] if r["diverged_epoch"] is not None else "",
                label, ep, *["" if v is None else v for v in vals]])
    return buf.getvalue()
