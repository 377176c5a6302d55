"""The range test: a 5-seed cohort against 5 plain finds, and suggestion spread vs torch-lr-finder.

Part 1 (cost). The iris 4-50-12-3 ReLU net (Adam, exponential ramp 1e-7 -> 10 over 100
steps, batch 32): one 5-seed `lrlab` find against five sequential finds written as a plain
loop (`nn.Sequential` + `torch.optim.Adam` + the same ramp, EMA and divergence stop). Both
lrlab paths are timed: its own MLP (stacked weights) and the user-module path
(`find_lr(nn.Module, DataLoader)`, torch.func). Interleaved, medians of the repeats, ratios.

Part 2 (stability). torch-lr-finder (an optional bench dependency: `pip install --no-deps
torch-lr-finder`) on the same net and data for 10 seeds, against `lrlab find` 10 times with
disjoint seed sets (first_seed = 0, 5, 10, ...). Printed: the standard deviation of
log10(suggestion) over the 10 finds and the time of one find. torch-lr-finder suggests the
steepest gradient, so lrlab's `steepest` is the like-for-like row; valley and min10 are shown
too, and lrlab with 1 seed separates the effect of the seeds from that of the rules.

    .venv/bin/python bench/bench_finder.py [--repeats 3] [--finds 10]

Target (issue 6): lrlab's spread at most 1/3 of torch-lr-finder's, at no more than 1.5x the
time of one torch-lr-finder run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import time

import numpy as np
import torch
from torch import nn

from lrlab import data, finder, finder_nets
from lrlab import spec as spec_mod

os.environ.setdefault("TQDM_DISABLE", "1")  # torch-lr-finder's progress bar
SPEC = {"data": {"source": "iris", "split": "random", "validation_split": 0.25, "data_seed": 42},
        "model": {"hidden": [50, 12], "activation": "relu", "init": "pytorch"},
        "train": {"optimizer": "adam", "batch_size": 32}}
S = finder.Settings()  # 1e-7 -> 10, 100 steps, exp, smooth 0.98, diverge 4x
BATCH = 32


def iris() -> tuple[torch.Tensor, torch.Tensor]:
    ds = data.load(spec_mod.resolve(SPEC).data)
    return torch.from_numpy(np.array(ds.X_train)), torch.from_numpy(np.array(ds.y_train))


def net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 50), nn.ReLU(), nn.Linear(50, 12), nn.ReLU(),
                         nn.Linear(12, 3))


def plain_find(x: torch.Tensor, y: torch.Tensor, seed: int) -> list[float]:
    """One seed's range test as people write it: a loop over batches with a ramped lr."""
    torch.manual_seed(seed)
    model = net()
    opt = torch.optim.Adam(model.parameters(), lr=S.start_lr)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(y))
    pos, avg, best, out = 0, 0.0, math.inf, []
    for i, lr in enumerate(finder.ramp(S)):
        if pos + BATCH > len(y):
            order, pos = torch.randperm(len(y)), 0
        idx = order[pos:pos + BATCH]
        pos += BATCH
        for g in opt.param_groups:
            g["lr"] = float(lr)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        v = loss.item()
        avg = S.smooth * avg + (1 - S.smooth) * v
        sm = avg / (1 - S.smooth ** (i + 1))
        out.append(sm)
        if sm > S.diverge_th * best:
            break
        best = min(best, sm)
    return out


def loader(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH,
                                       shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def timed(fn, *args, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def part1(repeats: int) -> None:
    x, y = iris()
    seeds = (0, 1, 2, 3, 4)
    finder_nets.find_spec(SPEC, S, seeds)  # warm-up: data, imports, first kernels
    times: dict[str, list[float]] = {"plain loop, 5 x 1 seed": [], "lrlab MLP, 5 seeds": [],
                                     "lrlab nn.Module, 5 seeds": []}
    for _ in range(repeats):
        times["plain loop, 5 x 1 seed"].append(
            timed(lambda: [plain_find(x, y, s) for s in seeds])[0])
        times["lrlab MLP, 5 seeds"].append(timed(finder_nets.find_spec, SPEC, S, seeds)[0])
        times["lrlab nn.Module, 5 seeds"].append(timed(
            finder.find_lr, net(), loader(x, y, 0), nn.CrossEntropyLoss(), optimizer="adam",
            seeds=5)[0])
    base = statistics.median(times["plain loop, 5 x 1 seed"])
    print(f"\n## 5-seed find vs 5 plain finds (iris 4-50-12-3, Adam, 100 steps; median of "
          f"{repeats}, interleaved; {torch.get_num_threads()} thread(s))")
    print(f"{'variant':<28} {'seconds':>9} {'speed-up vs plain':>18}")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"{k:<28} {m:>9.4f} {base / m:>17.2f}x")


def spread(lrs: list[float | None]) -> tuple[float, float, int]:
    """(std of log10, median lr, count of finds with no suggestion)."""
    ok = [math.log10(v) for v in lrs if v]
    sd = statistics.pstdev(ok) if len(ok) > 1 else math.nan
    return sd, 10 ** statistics.median(ok) if ok else math.nan, len(lrs) - len(ok)


def part2(finds: int) -> None:
    try:
        os.environ["TQDM_DISABLE"] = "1"
        from torch_lr_finder import LRFinder
    except ImportError:
        print("\n## spread vs torch-lr-finder: skipped (torch-lr-finder is not installed; "
              "`.venv/bin/pip install --no-deps torch-lr-finder`)")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = iris()

    def tlf(seed: int) -> float:
        torch.manual_seed(seed)
        model = net()
        opt = torch.optim.Adam(model.parameters(), lr=S.start_lr)
        fig, ax = plt.subplots()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            lf = LRFinder(model, opt, nn.CrossEntropyLoss())
            lf.range_test(loader(x, y, seed), end_lr=S.end_lr, num_iter=S.num_iter)
            _, lr = lf.plot(ax=ax, suggest_lr=True)  # its own rule: steepest gradient
            lf.reset()
        plt.close(fig)
        return float(lr)

    tlf(100)
    finder_nets.find_spec(SPEC, S, (100,))  # warm-up
    rows: dict[str, list[float | None]] = {k: [] for k in (
        "torch-lr-finder steepest", "lrlab 1 seed steepest", "lrlab 5 seeds steepest",
        "lrlab 5 seeds valley", "lrlab 5 seeds min10", "lrlab nn.Module 5 seeds steepest",
        "lrlab nn.Module 5 seeds valley")}
    secs: dict[str, list[float]] = {"torch-lr-finder": [], "lrlab 1 seed": [],
                                    "lrlab 5 seeds": [], "lrlab nn.Module 5 seeds": []}
    for i in range(finds):
        t, lr = timed(tlf, i)
        rows["torch-lr-finder steepest"].append(lr)
        secs["torch-lr-finder"].append(t)
        t, r1 = timed(finder_nets.find_spec, SPEC, S, (i,))
        rows["lrlab 1 seed steepest"].append(r1.suggestions["steepest"].lr)
        secs["lrlab 1 seed"].append(t)
        seeds = tuple(range(5 * i, 5 * i + 5))
        t, r5 = timed(finder_nets.find_spec, SPEC, S, seeds)
        for k in ("steepest", "valley", "min10"):
            rows[f"lrlab 5 seeds {k}"].append(r5.suggestions[k].lr)
        secs["lrlab 5 seeds"].append(t)
        t, rm = timed(finder.find_lr, net(), loader(x, y, i), nn.CrossEntropyLoss(),
                      optimizer="adam", seeds=5, first_seed=5 * i)
        for k in ("steepest", "valley"):
            rows[f"lrlab nn.Module 5 seeds {k}"].append(rm.suggestions[k].lr)
        secs["lrlab nn.Module 5 seeds"].append(t)
    ref = spread(rows["torch-lr-finder steepest"])[0]
    print(f"\n## suggestion spread over {finds} finds (iris 4-50-12-3, Adam, 1e-7 -> 10, 100 "
          "steps; lrlab seed sets disjoint)")
    print(f"{'finder / rule':<34} {'std log10':>9} {'vs tlf':>7} {'median lr':>10} "
          f"{'none':>5}")
    for k, v in rows.items():
        sd, med, none = spread(v)
        print(f"{k:<34} {sd:>9.3f} {sd / ref:>7.2f} {med:>10.3g} {none:>5}")
    t_ref = statistics.median(secs["torch-lr-finder"])
    print(f"\n{'time of one find':<34} {'seconds':>9} {'vs tlf':>7}")
    for k, v in secs.items():
        m = statistics.median(v)
        print(f"{k:<34} {m:>9.4f} {m / t_ref:>7.2f}")
    sd5 = spread(rows["lrlab 5 seeds steepest"])[0]
    t5 = statistics.median(secs["lrlab 5 seeds"])
    print(f"\ntarget: lrlab 5-seed steepest spread <= 1/3 of torch-lr-finder's "
          f"({sd5 / ref:.2f}), time <= 1.5x ({t5 / t_ref:.2f}x): "
          f"{'met' if sd5 <= ref / 3 and t5 <= 1.5 * t_ref else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--finds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    part1(args.repeats)
    part2(args.finds)


if __name__ == "__main__":
    main()
