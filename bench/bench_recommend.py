"""One verified lr from `lrlab find`, against torch-lr-finder's suggestion, on iris.

The problem: iris, a seeded stratified split (25% validation, data_seed 42), standardized
inputs, 4-50-12-3 ReLU/softmax with Keras's default init (glorot_uniform, zero biases), plain
SGD, batch 32. A user wants an lr for 20 epochs of training.

- lrlab: 10 finds with disjoint seed sets (0-4, 5-9, ...), each a 5-seed range test (1e-7 ->
  10, 100 steps) followed by the check, which recommends one lr (`FindResult.recommended`).
  Row "check 20 epochs" is `lrlab find --epochs 20` (the check trains the horizon the user
  will train); row "check default" is plain `lrlab find` (~200 steps = 50 epochs here).
- torch-lr-finder: 10 range tests (seeds 0-9, same net, init, data, ramp), each read with its
  own rule (`plot(suggest_lr=True)`: the steepest gradient).
- Every recommended/suggested lr is then trained for 20 epochs by a plain PyTorch loop
  (`nn.Sequential` + `torch.optim.SGD`, its own seeds 1000-1004, fresh shuffles), the
  independent judge: mean validation accuracy over those seeds.

Printed per finder: the standard deviation of log10(lr) over the 10 finds, the median lr,
the mean and median over finds of the 20-epoch validation accuracy, and seconds per find;
and, as the ceiling, the best mean accuracy any lr of a 1-2-5 grid from 1e-4 to 1 reaches
under the same judge.
Targets (issue 14 part 5): lrlab's std of log10 <= 0.15 and mean accuracy >= 0.9.

    PYTHONPATH=src .venv/bin/python bench/bench_recommend.py [--finds 10] [--preprocess none]

torch-lr-finder is optional (`pip install --no-deps torch-lr-finder tqdm`, or a --target
folder on PYTHONPATH); without it its row is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lrlab import data, finder, finder_nets
from lrlab import spec as spec_mod

os.environ.setdefault("TQDM_DISABLE", "1")  # torch-lr-finder's progress bar
BATCH = 32
EPOCHS = 20
JUDGE_SEEDS = tuple(range(1000, 1005))
S = finder.Settings()  # 1e-7 -> 10, 100 steps, exp, smooth 0.98, diverge 4x


def make_spec(preprocess: str) -> dict:
    return {"data": {"source": "iris", "split": "stratified", "validation_split": 0.25,
                     "data_seed": 42, "preprocess": preprocess},
            "model": {"hidden": [50, 12], "activation": "relu", "init": "keras"},
            "train": {"optimizer": "sgd", "batch_size": BATCH}}


def arrays(spec: dict) -> tuple[torch.Tensor, ...]:
    ds = data.load(spec_mod.resolve(spec).data)
    return tuple(torch.from_numpy(np.array(a)) for a in (ds.X_train, ds.y_train, ds.X_val,
                                                          ds.y_val))


def net(seed: int) -> nn.Sequential:
    """4-50-12-3 ReLU with Keras's default init: glorot_uniform kernels, zero biases."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 50), nn.ReLU(), nn.Linear(50, 12), nn.ReLU(),
                      nn.Linear(12, 3))
    for layer in m:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return m


def train_acc(lr: float, xy: Sequence[torch.Tensor], seed: int, epochs: int = EPOCHS) -> float:
    """The judge: `epochs` epochs of plain SGD at `lr`, then validation accuracy."""
    x, y, xv, yv = xy
    model = net(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return float((model(xv).argmax(1) == yv).float().mean())


def judge(lr: float | None, xy: Sequence[torch.Tensor], epochs: int = EPOCHS) -> float:
    if lr is None:
        return math.nan
    return statistics.fmean(train_acc(lr, xy, s, epochs) for s in JUDGE_SEEDS)


def tlf_find(seed: int, xy: Sequence[torch.Tensor]) -> float | None:
    """torch-lr-finder's range test and its own suggestion (steepest gradient)."""
    import matplotlib
    from torch_lr_finder import LRFinder

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = xy[0], xy[1]
    model = net(seed)
    opt = torch.optim.SGD(model.parameters(), lr=S.start_lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH,
                                         shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    fig, ax = plt.subplots()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        lf = LRFinder(model, opt, nn.CrossEntropyLoss())
        lf.range_test(loader, end_lr=S.end_lr, num_iter=S.num_iter)
        out = lf.plot(ax=ax, suggest_lr=True)
    plt.close(fig)
    lr = out[1] if isinstance(out, tuple) else None
    return None if lr is None else float(lr)


def row(name: str, lrs: list[float | None], accs: list[float], secs: list[float]) -> str:
    ok = [math.log10(v) for v in lrs if v]
    sd = statistics.pstdev(ok) if len(ok) > 1 else math.nan
    med = 10 ** statistics.median(ok) if ok else math.nan
    a = [v for v in accs if not math.isnan(v)]
    return (f"| {name} | {sd:.3f} | {med:.3g} | {statistics.fmean(a):.3f} | "
            f"{statistics.median(a):.3f} | {min(a):.3f} | {len(lrs) - len(ok)} | "
            f"{statistics.median(secs):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finds", type=int, default=10)
    ap.add_argument("--preprocess", default="standardize", help="standardize | none")
    ap.add_argument("--no-default", action="store_true",
                    help="skip the default-horizon (~200 steps) check row")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = make_spec(args.preprocess)
    xy = arrays(spec)
    variants = {"lrlab find --epochs 20 (recommended)": EPOCHS}
    if not args.no_default:
        variants["lrlab find (default check, recommended)"] = None
    lines = []
    for name, ep in variants.items():
        lrs, accs, secs, rules, own = [], [], [], [], []
        for i in range(args.finds):
            t0 = time.perf_counter()
            r = finder_nets.find_spec(spec, S, tuple(range(5 * i, 5 * i + 5)), check=True,
                                      epochs=ep)
            secs.append(time.perf_counter() - t0)
            rec = r.recommended
            lrs.append(rec.lr)
            rules.append(rec.rule)
            accs.append(judge(rec.lr, xy))
            if r.check is not None and r.check.epochs != EPOCHS:  # judged at its own horizon too
                own.append(judge(rec.lr, xy, r.check.epochs))
            print(f"{name} find {i}: lr {rec.lr} ({rec.rule}; decided by "
                  f"{rec.evidence.get('decided_by')}), 20-epoch val acc {accs[-1]:.3f}, "
                  f"{secs[-1]:.1f} s", flush=True)
        lines.append(row(name, lrs, accs, secs))
        lines.append(f"|   lrs: {', '.join(finder.fmt(v) for v in lrs)}; rules: "
                     f"{', '.join(rules)} | | | | | | | |")
        if own:
            lines.append(f"|   trained for the check's own horizon ({r.check.epochs} epochs): "
                         f"mean val acc {statistics.fmean(own):.3f} | | | | | | | |")
    try:
        import torch_lr_finder  # noqa: F401
    except ImportError:
        lines.append("| torch-lr-finder: not installed, skipped | | | | | | | |")
    else:
        lrs, accs, secs = [], [], []
        for i in range(args.finds):
            t0 = time.perf_counter()
            lr = tlf_find(i, xy)
            secs.append(time.perf_counter() - t0)
            lrs.append(lr)
            accs.append(judge(lr, xy))
            print(f"torch-lr-finder find {i}: lr {lr}, 20-epoch val acc {accs[-1]:.3f}",
                  flush=True)
        lines.append(row("torch-lr-finder steepest gradient", lrs, accs, secs))
        lines.append(f"|   lrs: {', '.join(finder.fmt(v) for v in lrs)} | | | | | | | |")
    grid = [m * 10.0**e for e in range(-4, 1) for m in (1, 2, 5)][:-2]  # 1e-4 .. 1
    ceiling = {lr: judge(lr, xy) for lr in grid}
    top = max(ceiling, key=ceiling.get)
    lines.append(f"| ceiling: the best constant lr of the 1-2-5 grid 1e-4..1, judged alike | - | "
                 f"{top:g} | {ceiling[top]:.3f} | | | | |")
    print(f"\n## recommended lr over {args.finds} finds (iris, stratified 25%, "
          f"{args.preprocess}, 4-50-12-3 ReLU, Keras init, SGD, batch 32); judge: "
          f"{EPOCHS} epochs of plain PyTorch SGD, {len(JUDGE_SEEDS)} seeds")
    print("| finder | std log10(lr) | median lr | mean val acc | median val acc | worst find "
          "| finds with no lr | s per find |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
