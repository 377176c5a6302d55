"""The Ray backend's overhead against a local run, for a 24-member sweep, in one process.

Each repeat starts a fresh local Ray instance and runs, interleaved: the sweep locally, on Ray
(the first Ray sweep pays for starting workers that import torch), locally again, and on Ray
with warm workers. The local runs happen while the idle Ray instance is up, so both ways see
the same machine. Starting and stopping the instance is timed separately. The sweeps write their
store (no report). Two compositions: one cohort of 24 (Ray can only add overhead) and four
cohorts of 6 (Ray runs two at once on two CPUs; a local run runs them one after another).
The driver uses one torch thread, as each Ray task does. Medians of the repeats; ratios
against local.

    .venv/bin/python bench/bench_ray.py [--repeats 3] [--epochs 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # stay on 127.0.0.1
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


SETTLE = 5.0


def spec(cap: int, epochs: int, backend: str) -> dict:
    return {"name": "bench-ray", "data": {"source": "blobs", "n": 1000},
            "model": {"hidden": [10, 10, 10, 10], "init": "normal:0.05"},
            "train": {"epochs": epochs, "batch_size": 64},
            "sweep": {"lr": [0.5, 0.1, 0.01], "seeds": 8},
            "run": {"max_members_per_cohort": cap, "probes": False, "backend": backend}}


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=100)
    args = ap.parse_args()

    import torch

    from lrlab import distributed, runner

    torch.set_num_threads(1)  # as a Ray worker has (one CPU per task): compare like with like

    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    n = [0]

    def run(cap: int, backend: str) -> None:
        n[0] += 1
        out = root / f"r{n[0]}"
        runner.sweep(spec(cap, args.epochs, backend), out, report=False)
        shutil.rmtree(out)

    results: dict[str, dict[str, list[float]]] = {}
    for cap in (24, 6):
        rows = results.setdefault(f"{24 // cap} cohort(s) of {cap}", {})
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with distributed.session(None, num_cpus=2):  # local runs too, in the same state
                t_up = time.perf_counter() - t0
                rows.setdefault("local", []).append(timed(run, cap, "local"))
                rows.setdefault("ray, first sweep", []).append(timed(run, cap, "ray"))
                rows.setdefault("local", []).append(timed(run, cap, "local"))
                rows.setdefault("ray, warm workers", []).append(timed(run, cap, "ray"))
                t1 = time.perf_counter()
            t_down = time.perf_counter() - t1
            rows.setdefault("ray start + stop", []).append(t_up + t_down)
            time.sleep(SETTLE)  # Ray's processes exit after shutdown returns
    shutil.rmtree(root, ignore_errors=True)

    print(f"24-member blobs sweep, 2-10-10-10-10-4, {args.epochs} epochs, batch 64, store "
          f"written, no report; medians of {args.repeats} interleaved repeats", file=sys.stderr)
    print("| composition | way | seconds | vs local |")
    print("| --- | --- | --- | --- |")
    for comp, rows in results.items():
        local = statistics.median(rows["local"])
        for way, ts in rows.items():
            med = statistics.median(ts)
            print(f"| {comp} | {way} | {med:.2f} | {med / local:.2f}x |")


if __name__ == "__main__":
    main()
