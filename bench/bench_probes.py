"""What recording probes costs: the seed-000 blobs sweep with probes on vs off.

The sweep: blobs, 2-10-10-10-10-4 ReLU, init N(0, 0.05), SGD lr in {0.5, 0.4, 0.1, 0.01,
0.001} x 8 seeds = 40 members, 200 epochs, batch 64, validation split 0.2 (one cohort). Both
variants run in this process, interleaved (off, on, off, on, ...), and the medians of the
repeats are compared, because the machine is shared and absolute times are noise. Timed:
`runner.sweep` without the HTML report (training, probes, store writes, verdicts), and the
engine alone (`engine.run_cohort`).

    .venv/bin/python bench/bench_probes.py [--repeats 3]

Target (issue 5): probes add at most 25% to the sweep's time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lrlab import data, engine, probes, runner, spec

DOC = {
    "name": "bench-probes",
    "data": {"source": "blobs", "n": 1000, "classes": 4, "validation_split": 0.2},
    "model": {"hidden": [10, 10, 10, 10], "activation": "relu", "output": "softmax",
              "init": "normal:0.05"},
    "train": {"optimizer": "sgd", "batch_size": 64, "epochs": 200},
    "sweep": {"lr": [0.5, 0.4, 0.1, 0.01, 0.001], "seeds": 8},
}


def sweep_seconds(probes_on: bool, root: Path, i: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one sweep without the HTML report."""
    doc = {**DOC, "run": {"probes": probes_on}}
    t0, c0 = time.perf_counter(), time.process_time()
    runner.sweep(doc, root / f"{'on' if probes_on else 'off'}-{i}", report=False)
    return time.perf_counter() - t0, time.process_time() - c0


def engine_seconds(probes_on: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of the engine alone on the sweep's one cohort."""
    s = spec.resolve({**DOC, "run": {"probes": probes_on}})
    ms = spec.members(s)
    ds = data.load(ms[0].data)
    hooks = probes.hooks(s) if probes_on else []
    t0, c0 = time.perf_counter(), time.process_time()
    with runner.threads_for(spec.Cohort(0, tuple(ms)), ds, s.run.threads):
        engine.run_cohort(spec.Cohort(0, tuple(ms)), ds, s.run, hooks)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    times: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sweep_seconds(False, root, -1)  # warm-up: imports, data, allocator
        for i in range(args.repeats):
            for on in (False, True):
                tag = "on" if on else "off"
                times.setdefault(f"engine {tag}", []).append(engine_seconds(on))
                times.setdefault(f"sweep {tag}", []).append(sweep_seconds(on, root, i))
    med = {(k, j): statistics.median(t[j] for t in v) for k, v in times.items() for j in (0, 1)}
    for k, v in times.items():
        print(f"{k:11s} wall median {med[k, 0]:7.3f} s, CPU median {med[k, 1]:7.3f} s;  "
              "wall runs: " + " ".join(f"{t[0]:.3f}" for t in v))
    for what in ("engine", "sweep"):
        print(f"{what}: probes on / off = {med[what + ' on', 0] / med[what + ' off', 0]:.3f} "
              f"(wall), {med[what + ' on', 1] / med[what + ' off', 1]:.3f} (CPU)")
    print("target (issue 5): sweep ratio <= 1.25 (the sweep is timed without the HTML report)")


if __name__ == "__main__":
    main()
