"""The compiled CPU kernel (nets_kernel.c) against its references: nets.backprop (the torch
path), autograd, torch's math functions and numpy's generator. Skipped where no C compiler is
available (the torch path then runs, and tests/test_engine.py covers it)."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from lrlab import engine, nets, spec
from lrlab.spec import Cohort, ModelSpec

lib = nets.kernel_lib()
pytestmark = pytest.mark.skipif(lib is None, reason=f"no kernel: {nets.kernel_error}")


def _math(op: int, x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    fn = lib.lr_math_f64 if x.dtype == torch.float64 else lib.lr_math_f32
    fn(op, x.data_ptr(), x.numel(), out.data_ptr())
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vector_math_within_two_ulp_of_torch(dtype):
    fi = torch.finfo(dtype)
    top = 709.7 if dtype == torch.float64 else 88.7
    low = -745.0 if dtype == torch.float64 else -103.9
    dec = 300 if dtype == torch.float64 else 37  # log: normal inputs only (what the kernel uses)
    g = torch.Generator().manual_seed(0)
    cases = {  # op: (inputs, reference)
        0: (torch.cat([torch.linspace(low, top, 20001, dtype=torch.float64),
                       3 * torch.randn(5000, generator=g, dtype=torch.float64)]), torch.exp),
        1: (torch.cat([torch.logspace(-dec, dec, 5001, dtype=torch.float64),
                       1 + 10 * torch.rand(5000, generator=g, dtype=torch.float64)]), torch.log),
        2: (torch.rand(5000, generator=g, dtype=torch.float64), torch.log1p),
        3: (torch.cat([torch.linspace(-30, 30, 20001, dtype=torch.float64),
                       1e-3 * torch.randn(1000, generator=g, dtype=torch.float64)]), torch.tanh),
        4: (torch.linspace(-80, 80, 20001, dtype=torch.float64), torch.sigmoid),
    }
    for op, (x64, ref) in cases.items():
        x = x64.to(dtype)
        x = x[torch.isfinite(x) & (x.abs() <= fi.max)]
        y, r = _math(op, x).double(), ref(x.double())
        normal = torch.isfinite(r.to(dtype)) & (r.abs() >= fi.tiny)
        rel = ((y - r).abs() / r.abs())[normal]
        assert rel.max() <= 2.5 * fi.eps, (op, rel.max().item() / fi.eps)
        assert torch.equal(torch.isfinite(y), torch.isfinite(r.to(dtype))), op
    special = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -1.0], dtype=dtype)
    exp, log, _, tanh, sig = (_math(op, special).tolist() for op in range(5))
    assert math.isnan(exp[0]) and exp[1:4] == [math.inf, 0.0, 1.0]
    assert math.isnan(log[0]) and log[1] == math.inf and log[3] == -math.inf
    assert math.isnan(log[2]) and math.isnan(log[4])
    assert math.isnan(tanh[0]) and tanh[1:4] == [1.0, -1.0, 0.0]
    assert math.isnan(sig[0]) and sig[1:4] == [1.0, 0.0, 0.5]


def _params(arch, K, dtype, seed_offset=0):
    model = ModelSpec(hidden=arch.sizes[1:-1], activation=arch.activation, output=arch.output,
                      init="glorot_uniform", bias_init="normal:0.3")
    return nets.init_params(arch, [model] * K, [seed_offset + i for i in range(K)], dtype=dtype)


ACTS = ["relu", "leaky_relu", "tanh", "sigmoid", "linear"]
OUTS = [("softmax", 4), ("sigmoid", 2), ("sigmoid", 3), ("quadratic", 3)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("activation", ACTS)
def test_kernel_step_and_evaluation_equal_torch_path(dtype, activation):
    """Loss sums, gradients and evaluation of the kernel equal nets' torch path, for every
    output kind, lane counts that need an overlapping last tile (K = 1, 3, 19), batches of
    several 64-row chunks, and a shared full batch."""
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)
    g = torch.Generator().manual_seed(1)
    for output, classes in OUTS:
        arch = nets.Arch((3, 7, 5, nets.output_dim(output, classes)), activation, output)
        kern = nets.kernel_for(arch, "cpu", dtype)
        assert kern is not None
        n = 150
        x = 2 * torch.randn(n, 3, generator=g, dtype=dtype)
        y = torch.randint(0, classes, (n,), generator=g)
        for K in (1, 3, 19):
            params = _params(arch, K, dtype)
            fast = nets.Stack(arch, params, x, y, kern)
            slow = nets.Stack(arch, params, x, y, None)
            order = torch.stack([torch.randperm(n, generator=g) for _ in range(K)])
            for o in (order, None):
                fast.begin_epoch(o)
                slow.begin_epoch(o)
                for lo, hi in ((0, 10), (10, 140), (140, 150)):
                    lf, gf = fast.loss_and_grads(lo, hi)
                    ls, gs = slow.loss_and_grads(lo, hi)
                    torch.testing.assert_close(lf, ls, **tol)
                    torch.testing.assert_close(gf, gs, **tol)
            for ef, es in zip(fast.evaluate(x, y, 100), slow.evaluate(x, y, 100)):
                torch.testing.assert_close(ef, es, **tol)
            for ef, es in zip(fast.evaluate(x, y, n), slow.evaluate(x, y, n)):
                assert (ef is None) == (es is None)
                if ef is not None:
                    torch.testing.assert_close(ef, es, **tol)


def test_kernel_gradients_equal_autograd():
    g = torch.Generator().manual_seed(2)
    for activation in ACTS:
        for output, classes in OUTS:
            arch = nets.Arch((4, 6, nets.output_dim(output, classes)), activation, output)
            params = _params(arch, 5, torch.float64)
            x = torch.randn(40, 4, generator=g, dtype=torch.float64)
            y = torch.randint(0, classes, (40,), generator=g)
            order = torch.stack([torch.randperm(40, generator=g) for _ in range(5)])
            st = nets.Stack(arch, params, x, y, nets.kernel_for(arch, "cpu", torch.float64))
            st.begin_epoch(order)
            loss, grads = st.loss_and_grads(0, 40)
            ps = [p.detach().clone().requires_grad_(True) for p in params]
            z, _ = nets.forward(ps, x[order], arch)
            ref_loss = nets.loss_terms(z, y[order], arch)[0]
            ref_loss.mean(1).sum().backward()
            ref = torch.cat([p.grad.reshape(5, -1) for p in ps], 1)
            torch.testing.assert_close(grads, ref, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(loss, ref_loss.sum(1).detach(), rtol=1e-12, atol=0)


def test_non_finite_members_stay_in_their_lane():
    """A member with huge weights (inf/NaN loss) leaves the other lanes' numbers unchanged."""
    arch = nets.Arch((2, 8, 3), "tanh", "softmax")
    x = torch.randn(64, 2, dtype=torch.float32)
    y = torch.randint(0, 3, (64,))
    params = _params(arch, 17, torch.float32)
    broken = [p.clone() for p in params]
    broken[2][5, :, 0] = 3e38  # member 5's first logit overflows
    broken[0][9] = math.nan  # member 9's first layer
    kern = nets.kernel_for(arch, "cpu", torch.float32)
    a, b = nets.Stack(arch, params, x, y, kern), nets.Stack(arch, broken, x, y, kern)
    la, ga = a.loss_and_grads(0, 64)
    lb, gb = b.loss_and_grads(0, 64)
    ok = [k for k in range(17) if k not in (5, 9)]
    assert torch.equal(la[ok], lb[ok]) and torch.equal(ga[ok], gb[ok])
    assert not math.isfinite(lb[5]) or lb[5] > 1e20
    assert math.isnan(lb[9])
    ea, eb = a.evaluate(x, y, 40), b.evaluate(x, y, 40)
    for ta, tb in zip(ea, eb):
        assert torch.equal(ta[ok], tb[ok])


def test_epoch_orders_equal_numpy():
    rng = np.random.default_rng(3)
    seeds = [0, 1, 7, 2**32 - 1, 2**32, 2**40 + 3, 2**62 + 11, *rng.integers(0, 2**63 - 1, 8)]
    for epoch in (0, 1, 5, 2**33 + 1):
        for n in (1, 2, 10, 777, 5000):
            got = engine.epoch_orders(seeds, epoch, n)
            want = np.stack([engine.epoch_order(int(s), epoch, n) for s in seeds])
            np.testing.assert_array_equal(got, want)


def test_engine_kernel_equals_torch_path(monkeypatch):
    """Whole runs (momentum, a diverging member, a second phase) agree between the kernel and
    the torch path in float64."""
    doc = {"data": {"source": "blobs", "n": 200, "classes": 3, "validation_split": 0.25},
           "model": {"hidden": [9, 6], "activation": "tanh", "init": "he_uniform"},
           "train": {"optimizer": "sgd", "batch_size": 32, "epochs": 4, "momentum": 0.5},
           "phases": [{"lr": 0.02, "batch_size": 0, "epochs": 2}],
           "sweep": {"lr": [1e4, 0.3, 0.05], "seeds": 2},
           "run": {"dtype": "float64", "probes": False}}
    s = spec.resolve(doc)
    ms = spec.members(s)
    from lrlab import data

    ds = data.load(ms[0].data)
    fast = engine.run_cohort(Cohort(0, tuple(ms)), ds, s.run)
    monkeypatch.setenv("LRLAB_KERNEL", "0")
    assert nets.kernel_for(nets.arch_for(ms[0].model, 2, 3), "cpu", torch.float64) is None
    slow = engine.run_cohort(Cohort(0, tuple(ms)), ds, s.run)
    assert [r.status for r in fast] == [r.status for r in slow]
    assert any(r.status == "diverged" for r in fast)
    for m, a, b in zip(ms, fast, slow):  # each member's own per-step lr record
        assert a.steps == b.steps
        assert a.steps["lr"][0] == m.train.lr
        assert a.steps["lr"][-1] == (0.02 if a.status == "ok" else m.train.lr)
    for a, b in zip(fast, slow):
        assert a.history.keys() == b.history.keys()
        for key in a.history:
            np.testing.assert_allclose(np.array(a.history[key], dtype=float),
                                       np.array(b.history[key], dtype=float),
                                       rtol=1e-9, atol=1e-12)
        for pa, pb in zip(a.params, b.params):
            np.testing.assert_allclose(pa, pb, rtol=1e-9, atol=1e-12)


def test_kernel_declines_what_it_does_not_cover(monkeypatch):
    arch = nets.Arch((2, 4, 3), "relu", "softmax")
    assert nets.kernel_for(arch, "cpu", torch.float32) is not None
    assert nets.kernel_for(nets.Arch((2, 4, 3), "gelu", "softmax"), "cpu", torch.float32) is None
    assert nets.kernel_for(arch, "meta", torch.float32) is None
    assert nets.kernel_for(arch, "cpu", torch.float16) is None
    monkeypatch.setenv("LRLAB_KERNEL", "0")
    assert nets.kernel_for(arch, "cpu", torch.float32) is None


def test_sgd_epoch_equals_steps_and_threads_change_nothing():
    """The whole-epoch SGD kernel equals per-step gradients + p + g * (-lr) (batches of one
    chunk and of several, a shared full batch), and splitting members over threads or
    narrowing the tiles changes no number."""
    arch = nets.Arch((5, 9, 7, 3), "tanh", "softmax")
    g = torch.Generator().manual_seed(4)
    n, K = 230, 19
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    params = _params(arch, K, torch.float64)
    lr = 0.05 + 0.5 * torch.rand(K, generator=g, dtype=torch.float64)
    for bounds in ([(0, 30), (30, 60), (60, 90), (90, 230)], [(0, 230)]):
        order = None if len(bounds) == 1 else \
            torch.stack([torch.randperm(n, generator=g) for _ in range(K)])
        lrs = torch.stack([lr * (1 + s) for s in range(len(bounds))])
        kern = nets.kernel_for(arch, "cpu", torch.float64)
        ref = nets.Stack(arch, params, x, y, kern)
        ref.begin_epoch(order)
        ref_loss = torch.zeros(K, dtype=torch.float64)
        for s, (lo, hi) in enumerate(bounds):
            loss, grads = ref.loss_and_grads(lo, hi)
            ref.flat.addcmul_(grads, -lrs[s].unsqueeze(1))
            ref_loss += loss
        results = []
        for threads, lanes in ((1, kern.sgd_lanes), (2, kern.sgd_lanes), (1, 4), (3, 1)):
            kern.threads, kern.sgd_lanes = threads, lanes
            st = nets.Stack(arch, params, x, y, kern)
            st.begin_epoch(order)
            loss = st.sgd_epoch(bounds, lrs)
            torch.testing.assert_close(st.flat, ref.flat, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
            results.append((st.flat.clone(), loss, st.evaluate(x, y, 100)))
        assert torch.equal(results[0][0], results[1][0])  # threads: bit for bit
        assert torch.equal(results[0][1], results[1][1])
        for a, b in zip(results[0][2], results[1][2]):
            assert torch.equal(a, b)


def test_evaluation_with_a_gemm_first_layer(monkeypatch):
    """A wide first layer is evaluated as one GEMM over all members (in parts of the samples,
    the train/val boundary inside a part): the same numbers as the torch path."""
    monkeypatch.setattr(nets, "KERNEL_GEMM_FIRST", 1)
    monkeypatch.setattr(nets, "KERNEL_GEMM_BYTES", 7 * 8 * 8 * 40)  # parts of 40 rows
    g = torch.Generator().manual_seed(6)
    for output, classes in OUTS:
        for layers in ((7, 8), (7,)):
            arch = nets.Arch((6, *layers[:-1], nets.output_dim(output, classes))
                             if len(layers) == 1 else (6, *layers,
                                                       nets.output_dim(output, classes)),
                             "sigmoid", output)
            x = torch.randn(150, 6, generator=g, dtype=torch.float64)
            y = torch.randint(0, classes, (150,), generator=g)
            params = _params(arch, 8, torch.float64)
            kern = nets.kernel_for(arch, "cpu", torch.float64)
            fast, slow = nets.Stack(arch, params, x, y, kern), nets.Stack(arch, params, x, y)
            for ef, es in zip(fast.evaluate(x, y, 97), slow.evaluate(x, y, 97)):
                torch.testing.assert_close(ef, es, rtol=1e-12, atol=1e-13)


def test_loss_and_grads_through_the_kernel(monkeypatch):
    """nets.loss_and_grads on the kernel (shared or per-member batches, 1-D or 2-D labels)
    equals the torch path: loss, accuracy and every gradient."""
    arch = nets.Arch((3, 6, 4), "relu", "softmax")
    params = _params(arch, 5, torch.float64)
    g = torch.Generator().manual_seed(7)
    xs = torch.randn(20, 3, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 4, (20,), generator=g)
    xk = torch.randn(5, 20, 3, generator=g, dtype=torch.float64)
    yk = torch.randint(0, 4, (5, 20), generator=g)
    for x, y in ((xs, ys), (xk, yk), (xk, ys)):
        fast = nets.loss_and_grads(params, x, y, arch)
        monkeypatch.setenv("LRLAB_KERNEL", "0")
        slow = nets.loss_and_grads(params, x, y, arch)
        monkeypatch.delenv("LRLAB_KERNEL")
        for a, b in zip(fast[:2], slow[:2]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        for a, b in zip(fast[2], slow[2]):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- the ctypes boundary


@pytest.fixture
def bound():
    """A small float64 stack on the kernel (3 members, 20 rows, 4 classes) and valid orders."""
    arch = nets.Arch((3, 5, 4), "relu", "softmax")
    kern = nets.kernel_for(arch, "cpu", torch.float64)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (20,), generator=g)
    st = nets.Stack(arch, _params(arch, 3, torch.float64), x, y, kern)
    order = torch.stack([torch.randperm(20, generator=g) for _ in range(3)])
    return kern, st, x, y, order


def _with(t: torch.Tensor, index: tuple, value: int) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


LRS = torch.full((2, 3), 0.1, dtype=torch.float64)
BAD_CALLS = {  # name: (call on (kernel, stack, x, y, order), what the message says)
    "order entry past the data": (
        lambda k, s, x, y, o: k.train(s.flat, x, y, _with(o, (1, 4), 20), 0, 8),
        r"order entries must be rows of x, in \[0, 20\); got values from 0 to 20"),
    "negative order entry": (
        lambda k, s, x, y, o: k.train(s.flat, x, y, _with(o, (2, 0), -1), 0, 8),
        r"got values from -1 to 19"),
    "int32 order": (lambda k, s, x, y, o: k.train(s.flat, x, y, o.int(), 0, 8), r"int64"),
    "order for too few members": (
        lambda k, s, x, y, o: k.train(s.flat, x, y, o[:2], 0, 8), r"int64 \[3, m\]"),
    "order rows not contiguous": (
        lambda k, s, x, y, o: k.train(s.flat, x, y, o.t().contiguous().t(), 0, 8),
        r"contiguous rows"),
    "hi past the order": (lambda k, s, x, y, o: k.train(s.flat, x, y, o[:, :10], 5, 11),
                          r"0 <= lo < hi <= 10 .*got lo=5, hi=11"),
    "hi past the shared data": (lambda k, s, x, y, o: k.train(s.flat, x, y, None, 0, 21),
                                r"hi <= 20"),
    "negative lo": (lambda k, s, x, y, o: k.train(s.flat, x, y, o, -1, 4), r"lo=-1"),
    "empty batch": (lambda k, s, x, y, o: k.train(s.flat, x, y, o, 4, 4), r"lo < hi"),
    "float lo": (lambda k, s, x, y, o: k.train(s.flat, x, y, o, 0.0, 4), r"integers"),
    "parameters not member-innermost": (
        lambda k, s, x, y, o: k.train(s.flat.contiguous(), x, y, o, 0, 4), r"member-innermost"),
    "float32 parameters": (lambda k, s, x, y, o: k.train(s.flat.float(), x, y, o, 0, 4),
                           r"parameters must be \[K, 44\] torch.float64"),
    "parameters of another net": (lambda k, s, x, y, o: k.train(s.flat[:, :40], x, y, o, 0, 4),
                                  r"\[K, 44\]"),
    "x of another width": (lambda k, s, x, y, o: k.train(s.flat, x[:, :2].contiguous(), y, o,
                                                         0, 4), r"x must be contiguous \[n, 3\]"),
    "x not contiguous": (lambda k, s, x, y, o: k.train(s.flat, x.t().contiguous().t(), y, o,
                                                       0, 4), r"not contiguous"),
    "x not a tensor": (lambda k, s, x, y, o: k.train(s.flat, x.numpy(), y, o, 0, 4),
                       r"x must be a CPU tensor; got ndarray"),
    "labels too few": (lambda k, s, x, y, o: k.train(s.flat, x, y[:-1], o, 0, 4),
                       r"labels must be contiguous \[20\] int64"),
    "int32 labels": (lambda k, s, x, y, o: k.train(s.flat, x, y.int(), o, 0, 4), r"int64"),
    "label past the classes": (lambda k, s, x, y, o: k.train(s.flat, x, _with(y, (3,), 4), o,
                                                             0, 4), r"in \[0, 4\); got .* to 4"),
    "negative label": (lambda k, s, x, y, o: k.train(s.flat, x, _with(y, (3,), -2), o, 0, 4),
                       r"got values from -2"),
    "correct of the wrong shape": (
        lambda k, s, x, y, o: k.train(s.flat, x, y, o, 0, 4,
                                      torch.empty(2, dtype=torch.float64)), r"correct must be"),
    "no steps": (lambda k, s, x, y, o: k.sgd_epoch(s.flat, x, y, o, [], LRS[:0]),
                 r"non-empty list"),
    "steps with a gap": (lambda k, s, x, y, o: k.sgd_epoch(s.flat, x, y, o, [(0, 8), (9, 20)],
                                                           LRS), r"consecutive"),
    "overlapping steps": (lambda k, s, x, y, o: k.sgd_epoch(s.flat, x, y, o, [(0, 8), (7, 20)],
                                                            LRS), r"consecutive"),
    "steps past the order": (lambda k, s, x, y, o: k.sgd_epoch(s.flat, x, y, o,
                                                               [(0, 8), (8, 21)], LRS),
                             r"hi <= 20"),
    "lrs of the wrong shape": (lambda k, s, x, y, o: k.sgd_epoch(s.flat, x, y, o,
                                                                 [(0, 8), (8, 20)], LRS[:, :2]),
                               r"lrs must be a CPU \[2, 3\] tensor"),
    "n_tr past the data": (lambda k, s, x, y, o: k.evaluate(s.flat, x, y, 21), r"\[0, 20\]"),
    "negative n_tr": (lambda k, s, x, y, o: k.evaluate(s.flat, x, y, -1), r"n_tr"),
    "epoch order with a repeat": (lambda k, s, x, y, o: s.begin_epoch(_with(o, (0, 0),
                                                                            int(o[0, 1]))),
                                  r"permutations of 0..19"),
    "epoch order too short": (lambda k, s, x, y, o: s.begin_epoch(o[:, :19]), r"\[3, 20\]"),
    "epoch order past the data": (lambda k, s, x, y, o: s.begin_epoch(_with(o, (1, 3), 20)),
                                  r"permutations"),
    "labels for other members": (
        lambda k, s, x, y, o: nets.loss_and_grads(s.params, x[o], y[o][:2], s.arch),
        r"labels must be \[B\] or \[3, B\]"),
    "a layer of width 0": (lambda k, s, x, y, o: nets.Kernel(nets.kernel_lib(),
                                                            nets.Arch((3, 0, 4), "relu",
                                                                      "softmax"),
                                                            torch.float64),
                           r"layer sizes from 1"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_a_bad_kernel_argument_is_a_python_error(bound, case):
    """Each index, range, shape, dtype and layout the C side trusts is checked before the call:
    a ValueError naming it, and the parameters are left as they were."""
    kern, st, x, y, order = bound
    call, message = BAD_CALLS[case]
    before = st.flat.clone()
    with pytest.raises(ValueError, match=message):
        call(kern, st, x, y, order)
    assert torch.equal(st.flat, before)


def test_valid_arguments_pass_and_a_changed_tensor_is_checked_again(bound):
    """numpy integers are fine as lo/hi; the label and order scans are remembered per tensor,
    and an in-place change to either is seen on the next call."""
    kern, st, x, y, order = bound
    loss, _ = kern.train(st.flat, x, y, order, np.int64(0), np.int64(8))
    assert loss.shape == (3,) and bool(torch.isfinite(loss).all())
    kern.train(st.flat, x, y, order, 8, 20)
    labels, rows = y.clone(), order.clone()
    kern.train(st.flat, x, labels, rows, 0, 8)
    labels[5] = 7
    with pytest.raises(ValueError, match=r"got values from 0 to 7"):
        kern.train(st.flat, x, labels, rows, 0, 8)
    labels[5] = 1
    rows[2, 19] = 25
    with pytest.raises(ValueError, match=r"got values from 0 to 25"):
        kern.train(st.flat, x, labels, rows, 0, 8)


# ----------------------------------------------------------------------------- build and cache


@pytest.fixture
def rebuild(monkeypatch):
    """Forget the loaded kernel for one test (restored afterwards) and replace the C build by
    a copy of this session's library, which is what it would produce (a real build takes
    ~30 s): the list of builds asked for is yielded."""
    pristine = Path(lib._name)
    monkeypatch.setattr(nets, "kernel_error", nets.kernel_error)
    monkeypatch.setattr(nets, "kernel_build", nets.kernel_build)
    built: list[tuple[list[str], Path]] = []

    def stand_in(cc: str, flags: list[str], out: Path) -> None:
        built.append((flags, out))
        shutil.copyfile(pristine, out)
        nets._digest_file(out).write_text(hashlib.sha256(out.read_bytes()).hexdigest())

    monkeypatch.setattr(nets, "_compile", stand_in)
    nets._kernel_lib.cache_clear()
    yield pristine, built
    nets._kernel_lib.cache_clear()


def _works(kernel_lib) -> bool:
    x = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    out = torch.empty_like(x)
    kernel_lib.lr_math_f64(0, x.data_ptr(), 3, out.data_ptr())
    return torch.allclose(out, torch.exp(x), rtol=1e-15, atol=0)


def test_the_session_build_recorded_its_hash_in_a_private_folder():
    """This session's cache (tests/conftest.py: empty at start) was made by lrlab: mode 0700,
    the library's SHA-256 beside it, and the build's compiler and flags recorded."""
    pristine = Path(lib._name)
    assert pristine.parent == Path(os.environ["LRLAB_CACHE_DIR"])
    assert stat.S_IMODE(pristine.parent.stat().st_mode) == 0o700
    digest = nets._digest_file(pristine).read_text().strip()
    assert digest == hashlib.sha256(pristine.read_bytes()).hexdigest()
    assert nets.kernel_build["flags"].split()[: len(nets.KERNEL_FLAGS[0])] == \
        nets.KERNEL_FLAGS[0]
    assert nets.kernel_build["source"] == \
        hashlib.sha256(nets.KERNEL_SOURCE.read_bytes()).hexdigest()[:12]


def test_a_damaged_cached_library_is_rebuilt_not_loaded(tmp_path, monkeypatch, rebuild):
    pristine, built = rebuild
    intact, damaged, missing = (tmp_path / name for name in ("intact", "damaged", "missing"))
    for d in (intact, damaged, missing):
        d.mkdir(mode=0o700)
        shutil.copyfile(pristine, d / pristine.name)
        shutil.copyfile(nets._digest_file(pristine), nets._digest_file(d / pristine.name))
    raw = bytearray((damaged / pristine.name).read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\xcc" * 64  # int3 over some code
    (damaged / pristine.name).write_bytes(bytes(raw))
    nets._digest_file(missing / pristine.name).unlink()

    monkeypatch.setenv("LRLAB_CACHE_DIR", str(intact))
    assert _works(nets.kernel_lib()) and built == []  # a good library is loaded as it is
    for d in (damaged, missing):
        nets._kernel_lib.cache_clear()
        monkeypatch.setenv("LRLAB_CACHE_DIR", str(d))
        got = nets.kernel_lib()
        assert [out for _, out in built] == [d / pristine.name]  # rebuilt first
        assert (d / pristine.name).read_bytes() == pristine.read_bytes()
        assert Path(got._name) == d / pristine.name and _works(got)
        built.clear()


def test_the_cache_folder_is_created_private_and_a_shared_one_refused(tmp_path, monkeypatch,
                                                                     rebuild):
    _, built = rebuild
    new = tmp_path / "deep" / "cache"
    monkeypatch.setenv("LRLAB_CACHE_DIR", str(new))
    assert _works(nets.kernel_lib()) and len(built) == 1
    assert stat.S_IMODE(new.stat().st_mode) == 0o700

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    nets._kernel_lib.cache_clear()
    monkeypatch.setenv("LRLAB_CACHE_DIR", str(shared))
    monkeypatch.setenv("LRLAB_KERNEL", "1")  # fall back to torch, saying why
    assert nets.kernel_lib() is None
    assert nets.kernel_error == (f"the kernel cache {shared} is writable by others (mode 777); "
                                 "make it private (chmod 700) or set LRLAB_CACHE_DIR")
    monkeypatch.setenv("LRLAB_KERNEL", "require")
    with pytest.raises(RuntimeError, match=r"LRLAB_KERNEL=require .*writable by others"):
        nets.kernel_lib()
    assert list(shared.iterdir()) == []  # nothing compiled or written there


def test_extra_flags_are_a_build_of_their_own(tmp_path, monkeypatch, rebuild):
    """LRLAB_KERNEL_CFLAGS goes to the compiler after the usual flags, makes another cached
    library, and is recorded in the build (hence in distributed's same-numbers check)."""
    pristine, built = rebuild
    monkeypatch.setenv("LRLAB_CACHE_DIR", str(tmp_path))
    extra = os.environ.get("LRLAB_KERNEL_CFLAGS", "").split()
    monkeypatch.setenv("LRLAB_KERNEL_CFLAGS", " ".join([*extra, "-DLRLAB_UNUSED=1"]))
    assert _works(nets.kernel_lib())
    [(flags, out)] = built
    assert flags == [*nets.KERNEL_FLAGS[0], *extra, "-DLRLAB_UNUSED=1"]
    assert out.name != pristine.name
    assert nets.kernel_build["flags"] == " ".join(flags)
