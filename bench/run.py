"""lrlab's benchmark suite: what a sweep costs against the per-member loop people write today.

Every scenario is timed two ways in this one process, interleaved (lrlab, loop, lrlab, loop,
...), and the medians of the repeats are compared, because the machine is shared and only
ratios taken side by side mean anything:

- lrlab: `engine.run_cohort` on the spec's cohorts (chunked as `lrlab sweep` chunks them), under
  the thread count `lrlab sweep` uses (`runner.threads_for`): training, the full train+val
  evaluation at init and after every epoch, the divergence checks and the history records.
  The SQLite store, verdicts and report of `lrlab sweep` are not timed (the loop writes
  nothing either).
- loop: for each member, `nn.Sequential` + `torch.optim`, minibatches by indexing a shuffled
  tensor (`torch.randperm` each epoch), `loss.item()` for the running loss, and the same
  evaluation of train and val loss/accuracy at init and after every epoch. Same init, data,
  batch size, epochs and hyperparameters; one torch thread (its fastest setting here, see
  LOOP_THREADS).

The table: seconds (medians), speed-up, and the fraction of the FLOP floor reached: floor =
6 x params x training samples x epochs x members / the fp32 matmul peak measured here with a
large `torch.mm`. Then: scaling with K, probes on/off and the range test (through
bench/bench_probes.py and bench/bench_finder.py when present), the peak memory of a
1,000-member sweep (in a subprocess), and where lrlab's time goes (cProfile). Everything is
written to bench/results.md as well.

    make bench                      # = .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --quick            # a smoke check (fewer epochs, 1 repeat)
    .venv/bin/python bench/run.py --only 1 --only 5  # some scenarios
    .venv/bin/python bench/run.py --device cuda      # on a GPU machine
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import datetime
import importlib.util
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrlab import data, engine, nets, runner
from lrlab import spec as spec_mod

BENCH = Path(__file__).resolve().parent
NIELSEN = BENCH.parent.parent / "shared" / "data" / "mnist.pkl.gz"
TARGETS = {1: 30.0, 2: 20.0, 3: 8.0, 4: 20.0}


# ----------------------------------------------------------------------------- scenarios


@dataclasses.dataclass
class Scenario:
    number: int
    name: str
    doc: dict[str, Any]
    quick_epochs: int
    note: str = ""
    quick_limit: int | None = None  # --quick: keep only this many training samples


def _blobs(lrs: list[float], seeds: int, epochs: int = 200) -> dict[str, Any]:
    return {"name": "bench-blobs",
            "data": {"source": "blobs", "n": 1000, "classes": 4, "validation_split": 0.2},
            "model": {"hidden": [10, 10, 10, 10], "activation": "relu", "output": "softmax",
                      "init": "normal:0.05", "bias_init": "zeros"},
            "train": {"optimizer": "sgd", "batch_size": 64, "epochs": epochs},
            "sweep": {"lr": lrs, "seeds": seeds}}


def _nielsen_source(tmp: Path) -> tuple[str, str]:
    """Nielsen's mnist.pkl.gz when present, else random data of its shape (an .npz)."""
    if NIELSEN.is_file():
        return f"mnist:{NIELSEN}", f"Nielsen's mnist.pkl.gz ({NIELSEN})"
    rng = np.random.default_rng(0)
    path = tmp / "random-mnist.npz"
    np.savez(path, X=rng.random((50_000, 784), dtype=np.float32),
             y=rng.integers(0, 10, 50_000), X_test=rng.random((10_000, 784), dtype=np.float32),
             y_test=rng.integers(0, 10, 10_000))
    return f"npz:{path}", "random data of MNIST's shape (mnist.pkl.gz not found)"


def scenarios(tmp: Path) -> list[Scenario]:
    mnist, mnist_note = _nielsen_source(tmp)
    return [
        Scenario(1, "blobs 2-10-10-10-10-4, 800 samples, batch 64, 200 epochs",
                 _blobs([0.5, 0.4, 0.1, 0.01, 0.001], 8), 20),
        Scenario(2, "iris 4-50-12-3, batch 32, 20 epochs", {
            "name": "bench-iris",
            "data": {"source": "iris", "split": "random", "validation_split": 0.25,
                     "data_seed": 42},
            "model": {"hidden": [50, 12], "activation": "relu", "init": "keras"},
            "train": {"optimizer": "sgd", "batch_size": 32, "epochs": 20},
            "sweep": {"lr": [0.2, 0.1, 0.03, 0.01], "seeds": 10}}, 5),
        Scenario(3, "Nielsen 784-20-10 sigmoid/quadratic, batch 10, 1 epoch of 50,000", {
            "name": "bench-nielsen",
            "data": {"source": mnist, "split": "given"},
            "model": {"hidden": [20], "activation": "sigmoid", "output": "quadratic",
                      "init": "nielsen"},
            "train": {"optimizer": "sgd", "batch_size": 10, "epochs": 1},
            "sweep": {"lr": [3.0, 1.0, 0.3, 0.1], "seeds": 4}}, 1, mnist_note, 5000),
        Scenario(4, "digits 64-128-64-10, batch 128, 30 epochs, 4 optimizers", {
            "name": "bench-digits",
            "data": {"source": "digits", "validation_split": 0.2, "preprocess": "standardize"},
            "model": {"hidden": [128, 64], "activation": "relu", "init": "pytorch"},
            "train": {"optimizer": "sgd", "batch_size": 128, "epochs": 30},
            "sweep": {"optimizer": ["sgd", "adagrad", "rmsprop", "adam"],
                      "lr": [0.01, 0.003, 0.001, 0.0003], "seeds": 4}}, 3),
        Scenario(9, "iris 4-50-12-3, 4 optimizers x 9 lrs (logspace 1e-4..1), 20 epochs", {
            "name": "bench-iris-optimizers",
            "data": {"source": "iris", "split": "random", "validation_split": 0.25,
                     "data_seed": 42},
            "model": {"hidden": [50, 12], "activation": "relu", "init": "keras"},
            "train": {"optimizer": "sgd", "batch_size": 32, "epochs": 20},
            "sweep": {"optimizer": ["sgd", "adam", "rmsprop", "adagrad"],
                      "lr": [1e-4, 3.16228e-4, 1e-3, 3.16228e-3, 1e-2, 3.16228e-2, 0.1,
                             0.316228, 1.0]}}, 5,
                 "the 36-member mixed-optimizer sweep of the optimizer issue (4 cohorts)"),
    ]


def resolved(sc: Scenario, quick: bool, device: str) -> spec_mod.Spec:
    doc = json.loads(json.dumps(sc.doc))
    if quick:
        doc["train"]["epochs"] = min(doc["train"]["epochs"], sc.quick_epochs)
        if sc.quick_limit:
            doc["data"]["limit"] = sc.quick_limit
    doc["run"] = {"probes": False, "device": device}
    return spec_mod.resolve(doc)


# ----------------------------------------------------------------------------- lrlab


def _auto_chunk(s: spec_mod.Spec, datasets: Any) -> int:
    return (getattr(runner, "auto_chunk", None) or runner._auto_chunk)(s, datasets)


def lrlab_run(s: spec_mod.Spec) -> dict[str, Any]:
    """The engine over the spec's cohorts, as `lrlab sweep` runs them (without the store)."""
    datasets = runner.load_data(s)
    size = s.run.max_members_per_cohort or _auto_chunk(s, datasets)
    cohorts = spec_mod.cohorts(s, size)
    t0 = time.perf_counter()
    diverged = 0
    for c in cohorts:
        ds = datasets[c.first.data]
        with runner.threads_for(c, ds, s.run.threads):
            runs = engine.run_cohort(c, ds, s.run)
        diverged += sum(r.status == "diverged" for r in runs)
    _sync(s.run.device)
    return {"seconds": time.perf_counter() - t0, "diverged": diverged, "cohorts": len(cohorts)}


# ----------------------------------------------------------------------------- the loop


def _torch_optimizer(t: spec_mod.TrainSpec, params: Any) -> torch.optim.Optimizer:
    family = spec_mod.optimizer_family(t.optimizer)
    wd = t.weight_decay or 0.0
    if family == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, dampening=t.dampening,
                               weight_decay=wd, nesterov=t.nesterov)
    if family == "adagrad":
        return torch.optim.Adagrad(params, lr=t.lr, lr_decay=t.lr_decay, weight_decay=wd,
                                   initial_accumulator_value=t.initial_accumulator_value)
    if family == "rmsprop":
        return torch.optim.RMSprop(params, lr=t.lr, alpha=t.alpha, weight_decay=wd,
                                   momentum=t.momentum, centered=t.centered)
    cls = torch.optim.AdamW if family == "adamw" else torch.optim.Adam
    return cls(params, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=wd)


def _loss_fn(output: str, classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if output == "softmax":
        return F.cross_entropy
    if output == "sigmoid" and classes == 1:
        return lambda z, y: F.binary_cross_entropy_with_logits(z.squeeze(1), y.to(z.dtype))
    if output == "sigmoid":
        return lambda z, y: F.binary_cross_entropy_with_logits(
            z, F.one_hot(y, classes).to(z.dtype))
    return lambda z, y: 0.5 * ((torch.sigmoid(z) - F.one_hot(y, classes).to(z.dtype)) ** 2
                               ).sum(1).mean()  # Nielsen's quadratic cost


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
               "leaky_relu": nn.LeakyReLU, "linear": nn.Identity}


def loop_member(m: spec_mod.Member, ds: data.Dataset, device: str, dtype: torch.dtype,
                tensors: tuple[torch.Tensor, ...]) -> list[float]:
    """One member trained the way people write it; returns its per-epoch val losses."""
    arch = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes)
    init = nets.init_member(arch, m.model, m.seed)
    layers: list[nn.Module] = []
    for i in range(arch.n_layers):
        lin = nn.Linear(arch.sizes[i], arch.sizes[i + 1])
        with torch.no_grad():
            lin.weight.copy_(init[2 * i].T)
            lin.bias.copy_(init[2 * i + 1][0])
        layers.append(lin)
        if i < arch.n_layers - 1:
            layers.append(ACTIVATIONS[arch.activation]())
    net = nn.Sequential(*layers).to(device=device, dtype=dtype)
    opt = _torch_optimizer(m.train, net.parameters())
    loss_fn = _loss_fn(arch.output, arch.sizes[-1])
    x, y, xv, yv = tensors
    n, batch = len(y), m.train.batch_size or len(y)
    history: list[float] = []

    def evaluate() -> None:  # train and val loss and accuracy, as numbers
        with torch.no_grad():
            for xs, ys in ((x, y), (xv, yv)):
                z = net(xs)
                pred = (z.squeeze(1) > 0).long() if z.shape[1] == 1 else z.argmax(1)
                history.extend([loss_fn(z, ys).item(), (pred == ys).to(dtype).mean().item()])

    evaluate()
    for _ in range(m.train.epochs):
        perm = torch.randperm(n, device=device)
        running = 0.0
        for lo in range(0, n, batch):
            idx = perm[lo:lo + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            running += loss.item() * len(idx)
        evaluate()
    return history


def loop_run(s: spec_mod.Spec) -> dict[str, Any]:
    datasets = runner.load_data(s)
    dtype = torch.float64 if s.run.dtype == "float64" else torch.float32
    dev = s.run.device
    t0 = time.perf_counter()
    cache: dict[Any, tuple[torch.Tensor, ...]] = {}
    for m in spec_mod.members(s):
        ds = datasets[m.data]
        if m.data not in cache:  # the data on the device once, as a user would
            cache[m.data] = (torch.as_tensor(np.array(ds.X_train), dtype=dtype, device=dev),
                             torch.as_tensor(np.array(ds.y_train), device=dev).long(),
                             torch.as_tensor(np.array(ds.X_val), dtype=dtype, device=dev),
                             torch.as_tensor(np.array(ds.y_val), device=dev).long())
        with _threads(LOOP_THREADS):
            loop_member(m, ds, dev, dtype, cache[m.data])
    _sync(dev)
    return {"seconds": time.perf_counter() - t0}


LOOP_THREADS = 1
"""The loop runs with one torch thread: its ops are small, and on this shared 2-core machine a
second thread waiting on a busy neighbour makes small ops 10-40x slower (notes/perf.md), so one
thread is the loop's best and most stable setting. (lrlab runs with `runner.threads_for`.)"""


@contextlib.contextmanager
def _threads(n: int) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, threads: int | None = None) -> float:
    """fp32 GFLOP/s of a large torch.mm (best of several)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        n = 4096 if device.startswith("cuda") else 2048
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        best = float("inf")
        for _ in range(6):
            _sync(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        return 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(before)


def floor_seconds(s: spec_mod.Spec, peak_gflops: float) -> float:
    total = 0.0
    datasets = runner.load_data(s)
    for m in spec_mod.members(s):
        ds = datasets[m.data]
        arch = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes)
        epochs = m.train.epochs + sum(p.epochs for p in m.phases)
        total += 6 * arch.n_params() * ds.X_train.shape[0] * epochs
    return total / (peak_gflops * 1e9)


def interleaved(fns: dict[str, Callable[[], dict[str, Any]]], repeats: dict[str, int]
                ) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in fns}
    for r in range(max(repeats.values())):
        for k, fn in fns.items():
            if r < repeats[k]:
                out[k].append(fn())
    return out


def med(runs: list[dict[str, Any]]) -> float:
    return statistics.median(r["seconds"] for r in runs)


# ----------------------------------------------------------------------------- parts


@dataclasses.dataclass
class Row:
    number: int | str
    name: str
    members: int
    lrlab: float
    loop: float | None
    floor: float
    lrlab_runs: list[float]
    loop_runs: list[float]
    note: str = ""

    @property
    def speedup(self) -> float | None:
        return None if self.loop is None else self.loop / self.lrlab


def part_scenarios(args: argparse.Namespace, tmp: Path, peak: float) -> list[Row]:
    rows = []
    for sc in scenarios(tmp):
        if args.only and sc.number not in args.only:
            continue
        s = resolved(sc, args.quick, args.device)
        k = len(spec_mod.members(s))
        lrlab_run(resolved(sc, True, args.device))  # warm-up: data, kernel build, first calls
        reps = args.repeats
        loop_reps = min(reps, args.loop_repeats.get(sc.number, reps))
        print(f"[{sc.number}] {sc.name}: {k} members, {reps} + {loop_reps} repeats ...",
              flush=True)
        res = interleaved({"lrlab": lambda s=s: lrlab_run(s), "loop": lambda s=s: loop_run(s)},
                          {"lrlab": reps, "loop": loop_reps})
        note = sc.note
        div = res["lrlab"][0]["diverged"]
        if div:
            note += f"{'; ' if note else ''}{div} member(s) diverged and were frozen by lrlab"
        rows.append(Row(sc.number, sc.name, k, med(res["lrlab"]), med(res["loop"]),
                        floor_seconds(s, peak), [r["seconds"] for r in res["lrlab"]],
                        [r["seconds"] for r in res["loop"]], note))
        print(f"    lrlab {rows[-1].lrlab:.3f} s, loop {rows[-1].loop:.3f} s, "
              f"{rows[-1].speedup:.1f}x", flush=True)
        if sc.number == 1:  # the torch path (CUDA's, and the fallback without a C compiler)
            os.environ["LRLAB_KERNEL"] = "0"
            try:
                runs = [lrlab_run(s) for _ in range(max(1, reps - 1))]
            finally:
                del os.environ["LRLAB_KERNEL"]
            rows.append(Row("1t", sc.name + " (torch path, LRLAB_KERNEL=0)", k, med(runs),
                            rows[-1].loop, rows[-1].floor, [r["seconds"] for r in runs],
                            [], "loop time: the same runs as row 1"))
            print(f"    torch path {rows[-1].lrlab:.3f} s", flush=True)
    return rows


def part_scaling(args: argparse.Namespace, peak: float) -> tuple[str, bool]:
    epochs = 20 if args.quick else 200
    lrs = [0.3, 0.2, 0.1, 0.05, 0.03, 0.01, 0.005, 0.003]
    cases = {1: ([0.1], 1), 8: ([0.1], 8), 64: (lrs, 8), 512: (lrs, 64)}
    specs = {k: spec_mod.resolve({**_blobs(v[0], v[1], epochs),
                                  "run": {"probes": False, "device": args.device}})
             for k, v in cases.items()}
    lrlab_run(specs[8])  # warm-up
    res = interleaved({str(k): (lambda s=s: lrlab_run(s)) for k, s in specs.items()},
                      {str(k): args.repeats for k in specs})
    base = med(res["1"])
    lines = ["| K | lrlab s | s per member | per member vs K=1 | FLOP-floor fraction |",
             "|---|---|---|---|---|"]
    per = {}
    for k, s in specs.items():
        t = med(res[str(k)])
        per[k] = t / k
        lines.append(f"| {k} | {t:.3f} | {t / k:.4f} | 1/{base / (t / k):.1f} | "
                     f"{floor_seconds(s, peak) / t:.4f} |")
    ok = per[512] < per[1] / 50
    lines.append(f"\nTarget: per-member time at K=512 below 1/50 of K=1: "
                 f"1/{per[1] / per[512]:.1f} -> {'met' if ok else 'NOT met'}.")
    text = "\n".join(lines)
    print(text, flush=True)
    return text, ok


def _load_bench_module(name: str) -> Any | None:
    path = BENCH / f"{name}.py"
    if not path.is_file():
        return None
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return mod
    except Exception as exc:  # someone else's file, maybe mid-edit: report, do not crash
        print(f"bench/{name}.py could not be loaded: {exc}")
        return None
    finally:
        sys.path.remove(str(BENCH))


def part_probes(args: argparse.Namespace) -> tuple[str, float | None]:
    mod = _load_bench_module("bench_probes")
    if mod is None or not hasattr(mod, "engine_seconds"):
        return "not available yet (bench/bench_probes.py)", None
    times: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        sweep = getattr(mod, "sweep_seconds", None)
        sweeps: dict[str, list[float]] = {"off": [], "on": []}
        mod.engine_seconds(False)  # warm-up
        for i in range(args.repeats):
            for on in (False, True):
                key = "on" if on else "off"
                times[key].append(mod.engine_seconds(on)[0])
                if sweep is not None and not args.quick:
                    sweeps[key].append(sweep(on, Path(tmp), i)[0])
    eng = statistics.median(times["on"]) / statistics.median(times["off"])
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    lines = [f"engine (blobs, 40 members, 200 epochs): probes off {off:.3f} s, on {on:.3f} s: "
             f"x{eng:.2f}"]
    if sweeps["on"]:
        sw = statistics.median(sweeps["on"]) / statistics.median(sweeps["off"])
        lines.append(f"runner.sweep without report: off {statistics.median(sweeps['off']):.3f} s, "
                     f"on {statistics.median(sweeps['on']):.3f} s: x{sw:.2f}")
    text = "\n".join(f"- {ln}" for ln in lines)
    print(text, flush=True)
    return text, eng


def part_finder(args: argparse.Namespace) -> tuple[str, float | None]:
    mod = _load_bench_module("bench_finder")
    if mod is None or not all(hasattr(mod, a) for a in ("SPEC", "S", "timed")):
        return "not available yet (bench/bench_finder.py)", None
    try:
        from lrlab import finder_nets
    except ImportError:
        return "not available yet (lrlab.finder_nets)", None
    finder_nets.find_spec(mod.SPEC, mod.S, (0,))  # warm-up
    res = interleaved({"1": lambda: {"seconds": mod.timed(finder_nets.find_spec, mod.SPEC,
                                                           mod.S, (0,))[0]},
                       "5": lambda: {"seconds": mod.timed(finder_nets.find_spec, mod.SPEC,
                                                           mod.S, (0, 1, 2, 3, 4))[0]}},
                      {"1": args.repeats, "5": args.repeats})
    ratio = med(res["5"]) / med(res["1"])
    text = (f"- range test (iris 4-50-12-3, Adam, {mod.S.num_iter} steps): 1 seed "
            f"{med(res['1']):.3f} s, 5 seeds {med(res['5']):.3f} s: x{ratio:.2f}")
    print(text, flush=True)
    return text, ratio


MEMORY_CHILD = "--memory-child"


def memory_child(epochs: int) -> None:
    """Run a 1,000-member blobs sweep (no report) and print its peak RSS (run in a subprocess)."""
    lrs = [float(v) for v in np.logspace(-3, -0.5, 25)]
    doc = {**_blobs(lrs, 40, epochs), "run": {"probes": False}}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        runner.sweep(doc, Path(tmp) / "sweep", report=False)
        secs = time.perf_counter() - t0
        s = runner.as_spec(doc)
        size = _auto_chunk(s, runner.load_data(s))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    print(json.dumps({"peak_mb": peak, "seconds": secs, "members": 1000,
                      "cohort_size": size}))


def part_memory(args: argparse.Namespace) -> tuple[str, bool | None]:
    epochs = 20 if args.quick else 200
    r = subprocess.run([sys.executable, __file__, MEMORY_CHILD, str(epochs)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"failed: {r.stderr.strip()[-400:]}", None
    res = json.loads(r.stdout.strip().splitlines()[-1])
    ok = res["peak_mb"] < 2048
    text = (f"- 1,000-member blobs sweep ({epochs} epochs, `runner.sweep` with its store, no "
            f"report; cohorts of up to {res['cohort_size']}): peak RSS {res['peak_mb']:.0f} MB "
            f"(ru_maxrss of the subprocess), {res['seconds']:.1f} s. Target < 2 GB: "
            f"{'met' if ok else 'NOT met'}.")
    print(text, flush=True)
    return text, ok


def part_profile(args: argparse.Namespace, tmp: Path) -> str:
    """Where lrlab's time goes on scenario 1 (cProfile, grouped)."""
    sc = scenarios(tmp)[0]
    s = resolved(sc, args.quick, args.device)
    lrlab_run(s)
    prof = cProfile.Profile()
    prof.enable()
    total = lrlab_run(s)["seconds"]
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    groups = {  # entry points (cumulative time); optim: everything inside optim.py
        "kernel: training steps, forward + loss + backward + SGD update (nets_kernel.c)":
            [("nets.py", "sgd_epoch"), ("nets.py", "train")],
        "kernel: train + val evaluation at init and after every epoch (nets_kernel.c)":
            [("nets.py", "evaluate")],
        "optimizer update in torch (optim.py; plain SGD runs inside the kernel)":
            [("optim.py", None)],
        "epoch orders (the kernel's copy of numpy's generator)": [("engine.py", "epoch_orders")],
        "history records (Python lists, one .tolist() per metric and epoch)":
            [("engine.py", "add")],
        "model init (per-member seeded draws, nets.init_params)": [("nets.py", "init_params")],
    }
    own: dict[str, float] = {}
    stats = st.stats  # type: ignore[attr-defined]
    for label, places in groups.items():
        for f, fn in places:
            if fn is None:  # everything in the file, own time
                secs = sum(v[2] for k, v in stats.items() if k[0].endswith(f))
            else:  # the outermost function of that name (Stack.x calls Kernel.x)
                secs = max((v[3] for k, v in stats.items()
                            if k[0].endswith(f) and k[2] == fn), default=0.0)
            own[label] = own.get(label, 0.0) + secs
    rest = total - sum(own.values())
    lines = ["| where | seconds | share |", "|---|---|---|"]
    for label, secs in sorted(own.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {secs:.3f} | {secs / total:.0%} |")
    lines.append(f"| the rest: engine loop, lr tables, parameter update add_, tensor glue | "
                 f"{rest:.3f} | {rest / total:.0%} |")
    lines.append(f"| total (under cProfile) | {total:.3f} | 100% |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


# ----------------------------------------------------------------------------- report


def machine(device: str, peak: float, peak1: float) -> list[str]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip()
                for ln in lscpu.splitlines() if ":" in ln}
    except OSError:
        info = {}
    kern = nets.kernel_lib()
    lines = [f"- CPU: {info.get('Model name', platform.processor())}, "
             f"{info.get('CPU(s)', os.cpu_count())} CPU(s) "
             f"({info.get('Core(s) per socket', '?')} core(s) per socket, "
             f"{info.get('Thread(s) per core', '?')} thread(s) per core)",
             f"- Python {platform.python_version()}, torch {torch.__version__}, "
             f"numpy {np.__version__}, {platform.platform()}",
             f"- device: {device}" + (f" ({torch.cuda.get_device_name()})"
                                      if device.startswith("cuda") else ""),
             f"- compiled kernel: {'yes' if kern is not None else 'no: ' + str(nets.kernel_error)}",
             f"- fp32 matmul peak (torch.mm 2048^2, best of 6): {peak:.0f} GFLOP/s with "
             f"{torch.get_num_threads()} thread(s), {peak1:.0f} GFLOP/s with 1",
             f"- load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"]
    return lines


def table(rows: list[Row]) -> str:
    lines = ["| # | scenario | members | lrlab s | loop s | speed-up | target | FLOP-floor "
             "fraction |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = TARGETS.get(r.number) if isinstance(r.number, int) else None
        sp = f"{r.speedup:.1f}x" if r.speedup else "-"
        met = r.speedup is not None and target is not None and r.speedup >= target
        tg = "-" if target is None else f">= {target:.0f}x: {'met' if met else 'NOT met'}"
        lines.append(f"| {r.number} | {r.name} | {r.members} | {r.lrlab:.3f} | "
                     f"{'-' if r.loop is None else f'{r.loop:.3f}'} | {sp} | {tg} | "
                     f"{r.floor / r.lrlab:.4f} |")
    return "\n".join(lines)


NOTES = """
- **One fused kernel per step, or per epoch.** On the CPU a cohort of the built-in MLPs trains
  in `src/lrlab/nets_kernel.c` (compiled on first use, cached; `LRLAB_KERNEL=0` or no C
  compiler: the torch path of row 1t). The members are SIMD lanes: the parameters are stored
  member-innermost, so 16 (float64: 8) members' copies of one weight are one AVX-512 vector,
  and forward, loss, backward and (plain SGD) the update of 16 members are one pass of vector
  code; no Python, no torch dispatch, no per-member loop. Plain SGD runs a whole epoch per
  call, each tile of 16 members through all its steps while its weights stay in cache. Other
  optimizers take the kernel's gradients and update in torch (one [K, P] tensor, a few ops).
- **Same numbers.** Every member runs exactly its own operations in its own lane, so its curve
  does not depend on the cohort (tests/test_engine.py, unchanged, passes on both paths;
  tests/test_kernel.py checks the kernel against the torch path, autograd and torch's math
  functions in float64, and the C copy of numpy's data-order generator bit for bit).
- **Evaluation** (train and val loss/accuracy at init and after every epoch, as the loop does)
  is one kernel call over the shared samples; a wide first layer (MNIST's 784 inputs) is one
  BLAS GEMM over all members at once (the member-innermost W1 is a [784, 20 x K] matrix).
- **Where the rest goes:** see section 8. The loop's costs are per-op overheads (~100 small
  torch ops per step, each several microseconds, plus `loss.item()`), which the kernel removes;
  what remains for lrlab is arithmetic at a fraction of the vector peak (tiny 10 x 10 layers
  leave little to keep 32 vector registers busy, and the softmax needs exp/log per sample),
  the evaluation (as costly as a training epoch on blobs: 1,000 samples forward vs 800 forward
  and backward) and Python per epoch (orders, records).
- **The FLOP floor** counts only the training multiply-adds; the evaluation every epoch, the
  softmax and the data gathering come on top, so a fraction near 1 is out of reach for these
  small nets. The peak is a large GEMM with every core; the kernel runs in one thread unless
  `runner.threads_for` gives the cohort more (then members are split over threads).

Measured on the way and dropped (ratios side by side, this machine): MKL's batched GEMM
called directly (`cblas_sgemm_batch` through ctypes) was at most 1.3x `torch.bmm` on the blobs
shapes; grouped `conv1d` as a batched matmul 10-20x slower; `-O3` no faster than
`-O2 -fpeel-loops` (a third more compile time); narrower SIMD tiles so a big net's weights stay
in L2 (8 or 4 lanes) slower than 16 lanes for MNIST and digits; software prefetch of W and
32-row chunks no measurable change. Kept: member-innermost storage, whole-epoch SGD, 8x2
register blocks, padded remainder tiles, the GEMM first layer for MNIST's evaluation, torch ops
at one thread around the kernel (two OpenMP threads next to a busy neighbour made a
275k-element update 17 ms instead of 0.15 ms).
"""


def targets_section(rows: list[Row], scaling: Any, probes: Any, find: Any, memory: Any
                    ) -> list[str]:
    """The issue's targets against the measurements of this run."""
    lines = ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    for r in rows:
        want = TARGETS.get(r.number) if isinstance(r.number, int) else None
        if want is None or r.speedup is None:
            continue
        ok = r.speedup >= want
        lines.append(f"| scenario {r.number} >= {want:.0f}x the loop | {r.speedup:.1f}x | "
                     f"{'met' if ok else f'NOT met ({r.speedup / want:.0%} of the target)'} |")
    if scaling:
        lines.append(f"| scenario 5: per member at K=512 < 1/50 of K=1 | "
                     f"{scaling[0].splitlines()[-1].split(':')[-1].split('->')[0].strip()} | "
                     f"{'met' if scaling[1] else 'NOT met'} |")
    if probes and probes[1] is not None:
        lines.append(f"| probes <= 1.25x (engine) | x{probes[1]:.2f} | "
                     f"{'met' if probes[1] <= 1.25 else 'NOT met'} |")
    if find and find[1] is not None:
        lines.append(f"| 5-seed range test <= 1.5x the 1-seed one | x{find[1]:.2f} | "
                     f"{'met' if find[1] <= 1.5 else 'NOT met'} |")
    if memory and memory[1] is not None:
        lines.append(f"| 1,000-member sweep < 2 GB peak RSS | see section 7 | "
                     f"{'met' if memory[1] else 'NOT met'} |")
    return [*lines, ""] if len(lines) > 4 else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs and 1 repeat")
    ap.add_argument("--only", type=int, action="append", default=[],
                    help="run only scenario N (repeatable): 1-4 and 9 table, 5 scaling, 6 probes "
                         "and range test, 7 memory, 8 profile")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--out", default=None,
                    help="where to write the results ('-' = do not write; default "
                         "bench/results.md, or bench/results-cuda.md with --device cuda)")
    args = ap.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.out is None:
        args.out = str(BENCH / ("results-cuda.md" if args.device.startswith("cuda")
                                else "results.md"))
    args.loop_repeats = {1: 2, 3: 2, 4: 2}  # the slowest loops (~30 s a run on a quiet machine)
    want = set(args.only) or set(range(1, 10))
    started = datetime.datetime.now()
    peak, peak1 = matmul_peak(args.device), matmul_peak(args.device, threads=1)
    head = machine(args.device, peak, peak1)
    print("\n".join(head), flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        rows = part_scenarios(args, tmp, peak) if want & {1, 2, 3, 4, 9} else []
        if rows:
            print("\n" + table(rows), flush=True)
        scaling = part_scaling(args, peak) if 5 in want else None
        probes = part_probes(args) if 6 in want else None
        find = part_finder(args) if 6 in want else None
        memory = part_memory(args) if 7 in want else None
        profile = part_profile(args, tmp) if 8 in want else None
    load_end = os.getloadavg()
    if args.out == "-":
        return
    md = ["# lrlab benchmark results", "",
          f"`make bench` (`bench/run.py{' --quick' if args.quick else ''}`), "
          f"{started:%Y-%m-%d %H:%M}, {(datetime.datetime.now() - started).seconds // 60} min.",
          "", "## Machine", "", *head,
          f"- load average at the end: {' '.join(f'{v:.2f}' for v in load_end)}"
          + ("  (the machine was shared and loaded: absolute seconds are noisy, the ratios "
             "come from interleaved runs)" if max(load_end) > 1.5 else ""), ""]
    if rows:
        md += ["## Scenarios: lrlab vs the per-member loop", "",
               f"Medians of {args.repeats} interleaved repeats (the loops of scenarios "
               f"{', '.join(map(str, args.loop_repeats))}: "
               f"{min(args.repeats, *args.loop_repeats.values())}, to keep the bench near 10 "
               "minutes on a quiet machine). lrlab = "
               "`engine.run_cohort` on the spec's cohorts under `runner.threads_for` (training, "
               "train+val evaluation at init and every epoch, divergence checks, records; not "
               "the SQLite store). loop = `nn.Sequential` + `torch.optim` per member, "
               "`torch.randperm` minibatches, `loss.item()` per step, the same per-epoch "
               "evaluation, 1 torch thread (its fastest setting on this shared machine). "
               "FLOP-floor fraction = (6 x params x samples x epochs x members / "
               "matmul peak) / lrlab seconds.", "", table(rows), ""]
        md += [f"- {r.number}: {r.note}" for r in rows if r.note]
        md += ["", "Runs (seconds): " + "; ".join(
            f"{r.number}: lrlab {', '.join(f'{v:.2f}' for v in r.lrlab_runs)}"
            + (f" / loop {', '.join(f'{v:.2f}' for v in r.loop_runs)}" if r.loop_runs else "")
            for r in rows), ""]
    md += targets_section(rows, scaling, probes, find, memory)
    if scaling:
        md += ["## 5. Scaling with K (scenario 1's net and data, lrlab only)", "", scaling[0], ""]
    if probes or find:
        md += ["## 6. Probes and the range test", ""]
        if probes:
            md += ["Probes on vs off (through bench/bench_probes.py; target <= 1.25x):", "",
                   probes[0], ""]
        if find:
            md += ["5-seed vs 1-seed range test (through bench/bench_finder.py; target <= 1.5x):",
                   "", find[0], ""]
    if memory:
        md += ["## 7. Memory", "", memory[0], ""]
    if profile:
        md += ["## 8. Where lrlab's time goes (scenario 1, cProfile)", "", profile, ""]
    md += ["## How lrlab gets there", "", NOTES.strip(), ""]
    if not args.device.startswith("cuda"):
        md += ["## GPU", "", "Not measured here: no GPU was available to this run. "
               "`bench/run.py --device cuda` runs the same scenarios on a GPU (lrlab's torch "
               "path with batched matmuls; the compiled kernel is CPU-only) and writes "
               "bench/results-cuda.md.", ""]
    Path(args.out).write_text("\n".join(md) + "\n", encoding="utf-8")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == MEMORY_CHILD:
        memory_child(int(sys.argv[2]))
    else:
        main()
