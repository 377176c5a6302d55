"""Per-cell shares of real Keras (from keras_runs.py's JSON lines) and of lrlab on the same
cells, written to one JSON file that tests/test_fidelity_shares.py reads.

    python bench/fidelity/summarize.py bench/fidelity/data bench/fidelity/keras_shares.json
        [--lrlab-seeds 128]

A cell is one configuration of a recipe (seed 000: blobs-deep-relu raw at lr 0.4 and
standardized at lr 0.5; seed 004: iris-keras at each of its four lrs) and a threshold on the
final validation accuracy; its share is the fraction of seeds that end above the threshold.
Keras under keras.utils.set_random_seed maps to lrlab's shuffle = "once" (one order per run,
reused every epoch), Keras without a global seed to shuffle = "epoch" (see the trace).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from lrlab import data, engine, recipes, spec

MAPPING = {"global_seed": "once", "no_global_seed": "epoch"}


def cells() -> list[dict[str, Any]]:
    """The cells: a name, the lrlab spec (TOML-shaped, no sweep), the threshold."""
    out = []
    for pre, lr in (("none", 0.4), ("standardize", 0.5)):
        doc = recipes.load("blobs-deep-relu")
        doc.pop("sweep", None)
        doc["data"]["preprocess"] = pre
        doc["train"]["lr"] = lr
        doc["train"].pop("shuffle", None)
        doc["run"] = {"probes": False}
        out.append({"name": f"blobs-deep-relu preprocess={pre} lr={lr}", "suite": "blobs",
                    "keras_match": {"preprocess": pre, "lr": lr}, "above": 0.5,
                    "lrlab_spec": doc})
    for lr in (0.2, 0.1, 0.03, 0.01):
        doc = recipes.load("iris-keras")
        doc.pop("sweep", None)
        doc["train"]["lr"] = lr
        doc["train"].pop("shuffle", None)
        doc["run"] = {"probes": False}
        out.append({"name": f"iris-keras lr={lr}", "suite": "iris", "keras_match": {"lr": lr},
                    "above": 0.9, "lrlab_spec": doc})
    return out


def stats(vals: list[float], above: float) -> dict[str, Any]:
    k = sum(v > above for v in vals)
    return {"seeds": len(vals), "above": k, "share": round(k / len(vals), 4) if vals else None,
            "median_val_acc": round(statistics.median(vals), 4) if vals else None}


def lrlab_val_accs(doc: dict[str, Any], seeds: int) -> dict[str, list[float]]:
    """Final validation accuracy per member, shuffle epoch and once, seeds 0..seeds-1."""
    s = spec.resolve(recipes.merge(doc, {"sweep": {"shuffle": ["epoch", "once"],
                                                   "seeds": seeds}}))
    out: dict[str, list[float]] = {"epoch": [], "once": []}
    for c in spec.cohorts(s):
        for r in engine.run_cohort(c, data.load(c.first.data), s.run):
            out[r.member.train.shuffle].append(r.history["val_acc"][-1])
    return out


def replay_check(path: Path) -> dict[str, Any]:
    """Keras' own initial weights and batch orders fed to a float32 torch loop (the loop
    tests/test_engine.py holds lrlab's engine to): the largest weight difference from Keras'
    weights after each epoch."""
    import numpy as np
    import torch

    f = np.load(path)
    order, epochs = f["order"], f["order"].shape[0]
    x, y = torch.tensor(f["X"]), torch.tensor(f["y"])
    ws = [torch.tensor(f[f"w0_{i}"], requires_grad=True) for i in range(10)]
    opt = torch.optim.SGD(ws, lr=float(f["lr"]))

    def forward(xb: torch.Tensor) -> torch.Tensor:
        h = xb
        for i in range(5):
            h = h @ ws[2 * i] + ws[2 * i + 1]
            h = torch.relu(h) if i < 4 else h
        return h

    diffs = []
    for e in range(epochs):
        o = torch.from_numpy(order[e])
        for lo in range(0, len(o), 64):
            idx = o[lo:lo + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(forward(x[idx]), y[idx]).backward()
            opt.step()
        diffs.append(max(float(np.abs(w.detach().numpy() - f[f"w{e + 1}_{i}"]).max())
                         for i, w in enumerate(ws)))
    return {"epochs": epochs, "orders_repeat": bool((order == order[0]).all()),
            "max_abs_weight_diff": max(diffs),
            "max_abs_weight": max(float(np.abs(f[f"w{epochs}_{i}"]).max()) for i in range(10))}


def keras_records(folder: Path) -> list[dict[str, Any]]:
    """Every Keras run, once per (cell, seed) key (a resumed or parallel run may repeat one:
    the first record counts)."""
    recs: dict[str, dict[str, Any]] = {}
    for f in sorted(folder.glob("keras_*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                recs.setdefault(r["key"], r)
    return list(recs.values())


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--lrlab-seeds", type=int, default=128)
    ap.add_argument("--lrlab-from", type=Path, default=None,
                    help="reuse the lrlab shares of an earlier output (same cells and seeds)")
    a = ap.parse_args(argv)
    earlier: dict[str, Any] = {}
    if a.lrlab_from:
        old = json.loads(a.lrlab_from.read_text())
        if old["lrlab_seeds"] == a.lrlab_seeds:
            earlier = {c["name"]: c["lrlab"] for c in old["cells"]}
    trace = json.loads((a.folder / "keras_trace.json").read_text())
    recs = keras_records(a.folder)
    runs = trace["runs"]
    result: dict[str, Any] = {
        "keras": trace["keras"], "tensorflow": trace["tensorflow"],
        "backend": "tensorflow (CPU)",
        "trace": {
            "seeded_orders_repeat_every_epoch": all(r["epochs_identical"] for r in runs
                                                    if r["global_seed"]),
            "unseeded_orders_repeat_every_epoch": any(r["epochs_identical"] for r in runs
                                                      if not r["global_seed"]),
            "trains_on_first_80_percent": all(r["rows_trained"] for r in runs),
            "direct_fit_equals_validation_split_fit": trace.get("equivalence"),
        },
        "replay": (replay_check(a.folder / "keras_replay.npz")
                   if (a.folder / "keras_replay.npz").is_file() else None),
        "mapping": MAPPING,
        "metric": "share of seeds whose final validation accuracy is above the cell's threshold",
        "lrlab_seeds": a.lrlab_seeds,
        "cells": [],
    }
    for cell in cells():
        keras: dict[str, Any] = {}
        for key, flag in (("global_seed", True), ("no_global_seed", False)):
            vals = [r["val_acc"] for r in recs if r["suite"] == cell["suite"]
                    and r["global_seed"] is flag
                    and all(r[k] == v for k, v in cell["keras_match"].items())]
            keras[key] = stats(vals, cell["above"])
        t0 = time.perf_counter()
        lrlab = earlier.get(cell["name"]) or {
            mode: stats(v, cell["above"])
            for mode, v in lrlab_val_accs(cell["lrlab_spec"], a.lrlab_seeds).items()}
        result["cells"].append({**{k: v for k, v in cell.items() if k != "keras_match"},
                                "keras": keras, "lrlab": lrlab})
        print(f"{cell['name']}: keras seeded {keras['global_seed']['share']} "
              f"(n={keras['global_seed']['seeds']}), unseeded "
              f"{keras['no_global_seed']['share']} (n={keras['no_global_seed']['seeds']}); "
              f"lrlab once {lrlab['once']['share']}, epoch {lrlab['epoch']['share']} "
              f"(n={a.lrlab_seeds}, {time.perf_counter() - t0:.0f} s)", flush=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


def table(result: dict[str, Any]) -> str:
    """The README table: per cell, share (above/seeds) and median val acc of each setting."""
    def cell(st: dict[str, Any]) -> str:
        if not st["seeds"]:
            return "-"
        return f"{st['share']:.2f} ({st['above']}/{st['seeds']}), median {st['median_val_acc']:.2f}"

    rows = ["| cell | threshold | Keras, global seed | lrlab once | Keras, no global seed | "
            "lrlab epoch |", "| --- | --- | --- | --- | --- | --- |"]
    for c in result["cells"]:
        rows.append(f"| {c['name']} | > {c['above']} | {cell(c['keras']['global_seed'])} | "
                    f"{cell(c['lrlab']['once'])} | {cell(c['keras']['no_global_seed'])} | "
                    f"{cell(c['lrlab']['epoch'])} |")
    return "\n".join(rows)


def z_two_proportions(k1: int, n1: int, k2: int, n2: int) -> float:
    """The pooled two-proportion z statistic (0 when both shares are 0 or 1)."""
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return 0.0 if se == 0 else (k1 / n1 - k2 / n2) / se


if __name__ == "__main__":
    main(sys.argv[1:])
