"""Probes against independent computations: numpy counts, autograd, explicit Hessians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrlab import data, engine, nets, probes, spec, verdicts
from lrlab.spec import Cohort, ModelSpec

F64 = torch.float64


# ----------------------------------------------------------------------------- sharpness


def _spd_batch(k: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K least-squares problems: X [K, n, d] with a spread spectrum, y [K, n]."""
    rng = np.random.default_rng(seed)
    n = 200
    xs, ys = [], []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        scales = np.linspace(1.0, 3.0, d) * rng.uniform(0.5, 2.0)
        x = rng.normal(size=(n, d)) @ np.diag(scales) @ q.T
        xs.append(x)
        ys.append(x @ rng.normal(size=d) + 0.1 * rng.normal(size=n))
    return np.stack(xs), np.stack(ys)


def _lsq_loss(x: torch.Tensor, y: torch.Tensor):
    """0.5/n ||X w - y||^2 per member, w: [K, d]: Hessian X^T X / n."""
    def loss(ps: list[torch.Tensor]) -> torch.Tensor:
        r = torch.einsum("knd,kd->kn", x, ps[0]) - y
        return 0.5 * (r * r).mean(1)
    return loss


def test_power_iteration_finds_top_eigenvalue_of_least_squares_hessian():
    x, y = _spd_batch(3, 6, seed=0)
    xt, yt = torch.tensor(x), torch.tensor(y)
    lam = probes.hessian_top(_lsq_loss(xt, yt), [torch.zeros(3, 6, dtype=F64)], iters=500,
                             tol=1e-10)
    want = [np.linalg.eigvalsh(xk.T @ xk / xk.shape[0]).max() for xk in x]
    np.testing.assert_allclose(lam.numpy(), want, rtol=1e-3)


def test_power_iteration_returns_largest_algebraic_eigenvalue_at_a_saddle():
    # member 0: spectrum {-5, 1, 2}: |lambda| is largest for -5, the top eigenvalue is 2
    # member 1: positive definite {3, 1, 0.5}: plain power iteration
    rng = np.random.default_rng(1)
    mats = []
    for spectrum in ([-5.0, 1.0, 2.0], [3.0, 1.0, 0.5]):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        mats.append(q @ np.diag(spectrum) @ q.T)
    h = torch.tensor(np.stack(mats))
    lam = probes.top_eigenvalue(lambda v: torch.einsum("kij,kj->ki", h, v),
                                torch.ones(2, 3, dtype=F64), iters=2000, tol=1e-12)
    np.testing.assert_allclose(lam.numpy(), [2.0, 3.0], rtol=1e-4)


def _gd_run(x: np.ndarray, y: np.ndarray, lr: float, steps: int, lam: float) -> verdicts.RunView:
    """Full-batch gradient descent on 0.5/n ||Xw - y||^2, recorded like the engine does (one
    record per step, divergence by the engine's rule), as a RunView for verdicts.judge."""
    n = x.shape[0]
    w = np.zeros(x.shape[1])
    hist: dict[str, list] = {"epoch": [], "train_loss": [], "lr": [], "sharpness": []}
    start = None
    status, diverged_epoch = "ok", None
    for t in range(steps + 1):
        r = x @ w - y
        loss = 0.5 * float(r @ r) / n
        hist["epoch"].append(t)
        hist["train_loss"].append(loss if math.isfinite(loss) else None)
        hist["lr"].append(lr)
        hist["sharpness"].append(lam if t == 0 else None)
        start = loss if start is None else start
        if not math.isfinite(loss) or loss > engine.DIVERGE_FACTOR * max(start,
                                                                          engine.DIVERGE_FLOOR):
            status, diverged_epoch = "diverged", t
            break
        w = w - lr * (x.T @ r) / n
    return verdicts.RunView(0, {"lr": lr}, status, diverged_epoch, hist, 0,
                            {"optimizer": "sgd", "momentum": 0.0})


def test_gradient_descent_diverges_just_above_two_over_lambda_and_verdicts_say_so():
    x, y = _spd_batch(1, 5, seed=2)
    lam = float(probes.hessian_top(_lsq_loss(torch.tensor(x), torch.tensor(y)),
                                   [torch.zeros(1, 5, dtype=F64)], iters=500, tol=1e-10)[0])
    assert lam == pytest.approx(np.linalg.eigvalsh(x[0].T @ x[0] / 200).max(), rel=1e-3)
    above = verdicts.judge(_gd_run(x[0], y[0], 1.05 * 2 / lam, 400, lam))
    below = verdicts.judge(_gd_run(x[0], y[0], 0.95 * 2 / lam, 400, lam))
    assert above.label == "diverged"
    assert above.evidence["stability_lr"] == pytest.approx(2 / lam, rel=1e-3)
    assert above.evidence["lr_over_stability"] == pytest.approx(1.05, rel=1e-3)
    assert "2/" in above.explanation and "not a wrong gradient" in above.explanation
    assert below.label == "converged"
    assert below.evidence["loss_drop"] > 0.9


# ----------------------------------------------------------------------------- probe values


ARCH = nets.Arch((3, 6, 5, 4), "relu", "softmax")


def _ctx(arch: nets.Arch, k: int = 4, seed: int = 0, bias_shift: float = 0.0,
         scale: float = 1.0, n: int = 300) -> engine.EpochContext:
    torch.manual_seed(seed)
    models = [ModelSpec(init="glorot_uniform", bias_init="uniform:-0.5:0.5")] * k
    params = nets.init_params(arch, models, list(range(k)), dtype=F64)
    params = [p * scale for p in params]
    params[1] = params[1] + bias_shift * torch.linspace(0, 1, arch.sizes[1], dtype=F64)
    prev = [p + 0.01 * torch.randn_like(p) for p in params]
    x = torch.randn(n, arch.sizes[0], dtype=F64) * 2
    y = torch.randint(0, arch.sizes[-1], (n,))
    y[: n // 2] = 1  # an imbalanced set: majority share > 1/C
    return engine.EpochContext(3, arch, params, prev, torch.full((k,), 0.1, dtype=F64),
                               torch.arange(k), x, y)


def _numpy_forward(params, x, arch):
    zs, h = [], x
    for i in range(arch.n_layers):
        z = h @ params[2 * i] + params[2 * i + 1][0]
        zs.append(z)
        if i < arch.n_layers - 1:
            h = np.maximum(z, 0) if arch.activation == "relu" else (
                np.tanh(z) if arch.activation == "tanh" else 1 / (1 + np.exp(-z)))
    return zs


def test_activity_probes_match_a_direct_numpy_count():
    ctx = _ctx(ARCH, bias_shift=-6.0)  # layer-1 biases pushed down: many units dead
    out = probes.activity_probes(ctx)
    xp, yp = probes.probe_batch(ctx.x_probe, ctx.y_probe)
    assert xp.shape[0] == 100  # 300 samples, stride 3
    for k in range(4):
        ps = [p[k].numpy() for p in ctx.params]
        zs = _numpy_forward(ps, xp.numpy(), ARCH)
        dead = [(z <= 0).all(axis=0) for z in zs[:-1]]
        for lay, d in enumerate(dead, 1):
            assert out[f"dead_frac_l{lay}"][k].item() == pytest.approx(d.mean())
        assert out["dead_frac"][k].item() == pytest.approx(np.concatenate(dead).mean())
        pred = zs[-1].argmax(1)
        assert out["top_class_share"][k].item() == pytest.approx(
            np.bincount(pred, minlength=4).max() / len(pred))
        assert out["output_spread"][k].item() == pytest.approx(zs[-1].std(0, ddof=1).mean())
    assert out["majority_share"][0].item() == pytest.approx(
        np.bincount(yp.numpy()).max() / len(yp))
    assert out["dead_frac_l1"].max().item() > 0.3  # the construction did kill units


def test_saturation_probe_matches_numpy_for_tanh_and_a_sigmoid_output():
    arch = nets.Arch((3, 6, 5, 4), "tanh", "quadratic")
    ctx = _ctx(arch, scale=3.0)
    out = probes.activity_probes(ctx)
    xp, _ = probes.probe_batch(ctx.x_probe, ctx.y_probe)
    for k in range(4):
        zs = _numpy_forward([p[k].numpy() for p in ctx.params], xp.numpy(), arch)
        fr = [(np.abs(z) > 2.0).mean() for z in zs[:-1]] + [(np.abs(zs[-1]) > 4.0).mean()]
        for lay, f in enumerate(fr, 1):
            assert out[f"sat_frac_l{lay}"][k].item() == pytest.approx(f)
        allz = [(np.abs(z) > t) for z, t in zip(zs, (2.0, 2.0, 4.0))]
        assert out["sat_frac"][k].item() == pytest.approx(
            sum(a.sum() for a in allz) / sum(a.size for a in allz))
    assert "dead_frac" not in out


def test_gradient_and_weight_probes_match_autograd_and_numpy():
    arch = nets.Arch((3, 6, 5, 4), "tanh", "softmax")
    ctx = _ctx(arch)
    g = probes.gradient_probes(ctx)
    w = probes.weight_probes(ctx)
    xp, yp = probes.probe_batch(ctx.x_probe, ctx.y_probe)
    for k in range(4):
        ps = [p[k : k + 1].clone().requires_grad_(True) for p in ctx.params]
        z, _ = nets.forward(ps, xp, arch)
        loss = torch.nn.functional.cross_entropy(z[0], yp)
        grads = torch.autograd.grad(loss, ps)
        for lay in range(1, 4):
            assert g[f"grad_norm_l{lay}"][k].item() == pytest.approx(
                grads[2 * lay - 2].norm().item(), rel=1e-10)
            wk = ctx.params[2 * lay - 2][k].numpy()
            pk = ctx.prev_params[2 * lay - 2][k].numpy()
            assert w[f"weight_norm_l{lay}"][k].item() == pytest.approx(np.linalg.norm(wk))
            assert w[f"update_ratio_l{lay}"][k].item() == pytest.approx(
                np.linalg.norm(wk - pk) / np.linalg.norm(pk))
        total = math.sqrt(sum(float((gr * gr).sum()) for gr in grads))
        assert g["grad_norm"][k].item() == pytest.approx(total, rel=1e-10)
    first = engine.EpochContext(0, arch, ctx.params, None, ctx.lr, ctx.active, ctx.x_probe,
                                ctx.y_probe)
    assert not any(k.startswith("update_ratio") for k in probes.weight_probes(first))


def test_sharpness_probe_matches_the_explicit_hessian():
    arch = nets.Arch((2, 3, 3), "tanh", "softmax")
    ctx = _ctx(arch, k=2, n=60)
    lam = probes.sharpness(ctx.params, ctx.x_probe, ctx.y_probe, arch, iters=3000, tol=1e-12)
    for k in range(2):
        flat = torch.cat([p[k].flatten() for p in ctx.params])
        shapes = [p[k : k + 1].shape for p in ctx.params]

        def loss(v, shapes=shapes):
            ps, i = [], 0
            for s in shapes:
                n = math.prod(s)
                ps.append(v[i : i + n].reshape(s))
                i += n
            z, _ = nets.forward(ps, ctx.x_probe, arch)
            return nets.loss_terms(z, ctx.y_probe, arch)[0].mean()

        hess = torch.autograd.functional.hessian(loss, flat)
        assert lam[k].item() == pytest.approx(np.linalg.eigvalsh(hess.numpy()).max(), rel=1e-3)


@pytest.mark.parametrize("act,out,classes", [("relu", "softmax", 4), ("leaky_relu", "sigmoid", 2),
                                             ("sigmoid", "sigmoid", 3), ("tanh", "quadratic", 4)])
def test_the_double_backward_forward_and_loss_equal_nets(act, out, classes):
    arch = nets.Arch((3, 6, 5, nets.output_dim(out, classes)), act, out)
    ctx = _ctx(arch, n=40)
    y = ctx.y_probe % classes
    z = probes.hvp_forward(ctx.params, ctx.x_probe, arch)
    want, _ = nets.forward(ctx.params, ctx.x_probe, arch)
    torch.testing.assert_close(z, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(probes.hvp_loss(z, y, arch),
                               nets.loss_terms(want, y, arch)[0].mean(1), rtol=1e-12, atol=1e-12)
    if act == "relu":  # and the Hessian of nets' own loss, with relu, has the same top
        lam = probes.sharpness(ctx.params, ctx.x_probe, y, arch, iters=3000, tol=1e-12)
        flat = torch.cat([p[0].flatten() for p in ctx.params])
        shapes = [p[:1].shape for p in ctx.params]

        def loss(v):
            ps, i = [], 0
            for shp in shapes:
                ps.append(v[i : i + math.prod(shp)].reshape(shp))
                i += math.prod(shp)
            zz, _ = nets.forward(ps, ctx.x_probe, arch)
            return nets.loss_terms(zz, y, arch)[0].mean()

        hess = torch.autograd.functional.hessian(loss, flat)
        assert lam[0].item() == pytest.approx(np.linalg.eigvalsh(hess.numpy()).max(), rel=1e-3)


def test_probes_never_modify_the_weights():
    ctx = _ctx(ARCH)
    before = [p.clone() for p in ctx.params]
    for hook in probes.hooks(spec.Spec()):
        hook(engine.EpochContext(0, ctx.arch, ctx.params, None, ctx.lr, ctx.active,
                                 ctx.x_probe, ctx.y_probe))
    assert all(torch.equal(a, b) for a, b in zip(before, ctx.params))


# ----------------------------------------------------------------------------- in the engine


def test_probe_and_sharpness_epochs_are_dense_early_and_include_every_phase_end():
    assert probes.sharpness_epochs([200]) == {0, 1, 10, 100, 200}
    assert probes.sharpness_epochs([30, 60]) == {0, 1, 10, 30, 60}
    assert probes.probe_epochs([200]) == set(range(11)) | set(range(20, 201, 20))
    assert probes.probe_epochs([20]) == set(range(21))
    assert probes.probe_epochs([30, 60]) == set(range(11)) | set(range(15, 61, 5)) | {30}
    assert probes.probe_epochs([203]) >= probes.sharpness_epochs([203]) | {203}
    assert len(probes.probe_epochs([5000])) <= probes.PROBE_DENSE + probes.PROBE_LATER + 12
    s = spec.resolve({"train": {"epochs": 7}, "phases": [{"epochs": 4, "lr": 0.1}]})
    assert probes.phase_ends(s) == {7, 11}


def test_sharpness_is_measured_on_a_batch_of_the_training_batch_size():
    def samples(**train):
        return probes.sharpness_samples(spec.resolve({"train": train}))

    assert samples(batch_size=64) == 64 and samples(batch_size=200) == 200
    assert samples(batch_size=10) == probes.SHARPNESS_MIN_SAMPLES
    assert samples(batch_size=0) == samples(batch_size=5000) == probes.PROBE_BATCH
    mixed = spec.resolve({"train": {"batch_size": 10}, "phases": [{"batch_size": 5000}]})
    assert probes.sharpness_samples(mixed) == probes.PROBE_SAMPLES


def _spec(**sweep):
    return spec.resolve({
        "data": {"source": "blobs", "n": 120, "classes": 3, "preprocess": "standardize"},
        "model": {"hidden": [8, 6], "activation": "relu", "init": "he_normal"},
        "train": {"batch_size": 16, "epochs": 6, "lr": 0.1}, "sweep": sweep,
        "run": {"dtype": "float64"}})


def test_engine_records_every_probe_and_a_member_alone_matches_its_cohort():
    s = _spec(lr=[0.5, 0.05], seeds=2)
    ms = spec.members(s)
    ds = data.load(ms[0].data)
    runs = engine.run_cohort(Cohort(0, tuple(ms)), ds, s.run, probes.hooks(s))
    h = runs[0].history
    names = {f"{p}_l{lay}" for p in ("grad_norm", "update_ratio", "weight_norm")
             for lay in (1, 2, 3)} | {"dead_frac_l1", "dead_frac_l2", "dead_frac", "grad_norm",
                                      "top_class_share", "majority_share", "output_spread",
                                      "sharpness"}
    assert names <= set(h)
    assert not any(k.startswith("sat_frac") for k in h)
    assert h["update_ratio_l1"][0] is None and h["update_ratio_l1"][1] > 0
    at = [e for e, x in zip(h["epoch"], h["sharpness"]) if x is not None]
    assert at == [0, 1, 6]
    alone = engine.run_cohort(Cohort(0, (ms[3],)), ds, s.run, probes.hooks(s))[0].history
    for key in names:
        np.testing.assert_allclose(np.array(runs[3].history[key], dtype=float),
                                   np.array(alone[key], dtype=float), rtol=1e-7, atol=1e-12)


def test_a_failing_probe_is_reported_with_its_name_and_epoch(monkeypatch):
    s = _spec()
    ms = spec.members(s)

    def boom(*args, **kwargs):
        raise ValueError("no luck")

    monkeypatch.setattr(probes, "_sharpness", boom)
    with pytest.raises(RuntimeError, match=r"probe 'sharpness' failed at epoch 0: no luck"):
        engine.run_cohort(Cohort(0, tuple(ms)), data.load(ms[0].data), s.run, probes.hooks(s))


def test_sharpness_warm_starts_from_each_members_previous_eigenvector(monkeypatch):
    arch = nets.Arch((2, 3, 3), "tanh", "softmax")
    ctx = _ctx(arch, k=2, n=60)
    lam, vec = probes._sharpness(ctx.params, ctx.x_probe, ctx.y_probe, arch, 3000, 1e-12, None)
    warm = probes.sharpness(ctx.params, ctx.x_probe, ctx.y_probe, arch, iters=2, tol=0.0, v0=vec)
    np.testing.assert_allclose(warm.numpy(), lam.numpy(), rtol=1e-8)
    seen = []
    real = probes._sharpness

    def spy(params, x, y, arch, iters, tol, v0):
        seen.append(v0)
        return real(params, x, y, arch, iters, tol, v0)

    monkeypatch.setattr(probes, "_sharpness", spy)
    hook = probes.sharpness_probe([0, 3])
    for epoch in (0, 3, 0):  # the second epoch 0 is a new cohort: a cold start again
        hook(engine.EpochContext(epoch, arch, ctx.params, None, ctx.lr, ctx.active,
                                 ctx.x_probe, ctx.y_probe))
    assert seen[0] is None and seen[1] is not None and seen[2] is None


# ----------------------------------------------------------------------------- stability edges


def _quadratic(d: int = 5, seed: int = 3) -> np.ndarray:
    """A random SPD matrix with eigenvalues spread over [0.5, 4]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q @ np.diag(np.linspace(0.5, 4.0, d)) @ q.T


EDGE_CASES = [  # (optimizer, hyperparameters, frozen preconditioner)
    ("sgd", {}, False),
    ("momentum", {"momentum": 0.9}, False),
    ("nesterov", {"momentum": 0.9, "nesterov": True}, False),
    ("adam", {"beta1": 0.9}, True),
    ("adamw", {"beta1": 0.8}, True),
    ("rmsprop", {"alpha": 1.0}, True),
    ("rmsprop", {"alpha": 1.0, "momentum": 0.5}, True),
    ("adagrad", {}, True),
]


def _optimizer(name: str, hp_over: dict, p_diag: np.ndarray | None):
    """lrlab's optimizer for one member, and a state whose preconditioner is frozen at
    p_diag (adaptive families): the second moments are set to (p_diag - eps)^2, the step count
    so large that the bias corrections are 1, and beta2 so close to 1 (Adam) or alpha = 1
    (RMSprop) that the tiny gradients of the run cannot move them."""
    from lrlab import optim

    base = {k: 0.0 for k in optim.FLOAT_KEYS}
    base.update(lr=1.0, beta1=0.9, beta2=1 - 1e-9, eps=1e-8, alpha=0.99)
    base.update({k: float(v) for k, v in hp_over.items() if k in optim.FLOAT_KEYS})
    hp = {k: torch.tensor([v], dtype=F64) for k, v in base.items()}
    hp["nesterov"] = torch.tensor([bool(hp_over.get("nesterov"))])
    hp["centered"] = torch.tensor([False])
    opt = optim.make(name, hp)
    x0 = torch.zeros(1, len(p_diag) if p_diag is not None else 5, dtype=F64)
    state = opt.init([x0])
    if p_diag is not None:
        sq = torch.tensor((p_diag - 1e-8) ** 2, dtype=F64)[None]
        key = {"adam": "exp_avg_sq", "adamw": "exp_avg_sq", "rmsprop": "square_avg",
               "adagrad": "sum"}[name]
        state[key] = sq.clone()
        state["count"] = torch.tensor([10**11])
    return opt, state


def _run_quadratic(name: str, hp_over: dict, a: np.ndarray, p_diag: np.ndarray | None,
                   lr: float, steps: int = 2000) -> tuple[float, float]:
    """(largest, final) |x_t| / |x_0| of full-batch descent on 0.5 x^T A x from a start so
    small (1e-12) that the gradients cannot move a frozen preconditioner before the run has
    grown a millionfold (it stops there)."""
    opt, state = _optimizer(name, hp_over, p_diag)
    A = torch.tensor(a, dtype=F64)
    x = torch.tensor(np.random.default_rng(0).normal(size=len(a)) * 1e-12, dtype=F64)[None]
    n0 = float(x.norm())
    lr_t = torch.tensor([lr], dtype=F64)
    top = 1.0
    for _ in range(steps):
        upd, state = opt.update([x @ A], state, [x], lr_t)
        x = x + upd[0]
        top = max(top, float(x.norm()) / n0)
        if top > 1e6:
            break
    return top, float(x.norm()) / n0


@pytest.mark.parametrize("name,hp_over,adaptive", EDGE_CASES)
def test_each_optimizer_is_stable_just_below_its_edge_and_unstable_just_above(
        name, hp_over, adaptive):
    """On a quadratic, the edge `verdicts.edge_of` gives is where full-batch descent turns
    unstable, for every optimizer family; the quantity it is read on (raw or preconditioned
    sharpness) comes from the probe and equals the closed form."""
    a = _quadratic()
    p_diag = np.linspace(0.3, 3.0, len(a)) if adaptive else None
    edge = verdicts.edge_of({"optimizer": name, **hp_over})
    assert edge.quantity == ("precond_sharpness" if adaptive else "sharpness")
    _, state = _optimizer(name, hp_over, p_diag)
    pre = probes.preconditioner(state)
    assert (pre is not None) == adaptive
    if adaptive:
        np.testing.assert_allclose(pre[0].numpy(), p_diag, rtol=1e-9)
    closed = np.linalg.eigvalsh(np.diag(p_diag ** -0.5) @ a @ np.diag(p_diag ** -0.5)).max() \
        if adaptive else np.linalg.eigvalsh(a).max()
    A = torch.tensor(a, dtype=F64)
    lam = float(probes.hessian_top(lambda ps: 0.5 * ((ps[0] @ A) * ps[0]).sum(1),
                                   [torch.zeros(1, len(a), dtype=F64)], iters=400, tol=1e-12,
                                   precond=pre)[0])
    assert lam == pytest.approx(closed, rel=1e-6)
    lim = edge.lr(lam)
    top, end = _run_quadratic(name, hp_over, a, p_diag, 0.97 * lim)
    assert end < 1e-2 and top < 1e3
    assert _run_quadratic(name, hp_over, a, p_diag, 1.03 * lim)[0] > 1e6


def test_nesterov_edge_is_the_root_of_its_recursion_at_minus_one():
    """torch's Nesterov on curvature lam: (x_{t+1}, c_t) = M (x_t, c_{t-1}) with c = lr buf;
    the spectral radius of M crosses 1 exactly at lr lam = (2 + 2m)/(1 + 2m)."""
    for m in (0.5, 0.9, 0.99):
        edge = verdicts.edge_of({"optimizer": "nesterov", "momentum": m, "nesterov": True}).c

        def radius(a: float, m: float = m) -> float:
            M = np.array([[1 - a * (1 + m), -m * m], [a, m]])
            return float(np.abs(np.linalg.eigvals(M)).max())

        assert radius(0.999 * edge) < 1 < radius(1.001 * edge)


def test_the_preconditioner_of_real_adam_rmsprop_and_adagrad_states_matches_torch_optim():
    """After a few steps on a quadratic, `probes.preconditioner` of lrlab's optimizer state
    equals sqrt(v_hat) + eps (Adam), sqrt(v) + eps (RMSprop, centered too) and sqrt(sum) + eps
    (Adagrad) read from torch.optim's own state after the same steps."""
    from lrlab import optim

    a = torch.tensor(_quadratic(), dtype=F64)
    cases = [("adam", torch.optim.Adam, {"betas": (0.9, 0.99)}, {"beta1": 0.9, "beta2": 0.99}),
             ("rmsprop", torch.optim.RMSprop, {"alpha": 0.9}, {"alpha": 0.9}),
             ("rmsprop", torch.optim.RMSprop, {"alpha": 0.9, "centered": True},
              {"alpha": 0.9, "centered": True}),
             ("adagrad", torch.optim.Adagrad, {}, {"eps": 1e-10})]
    for name, cls, kw, ours in cases:
        base = {k: 0.0 for k in optim.FLOAT_KEYS}
        base.update(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, alpha=0.99)
        base.update({k: v for k, v in ours.items() if k in optim.FLOAT_KEYS})
        hp = {k: torch.tensor([v], dtype=F64) for k, v in base.items()}
        hp["nesterov"] = torch.tensor([False])
        hp["centered"] = torch.tensor([bool(ours.get("centered"))])
        opt = optim.make(name, hp)
        x = torch.linspace(-1, 1, 5, dtype=F64)[None]
        state = opt.init([x])
        w = torch.nn.Parameter(x[0].clone())
        ref = cls([w], lr=0.05, **kw)
        for _ in range(7):
            upd, state = opt.update([x @ a], state, [x], torch.tensor([0.05], dtype=F64))
            x = x + upd[0]
            ref.zero_grad()
            (0.5 * w @ a @ w).backward()
            ref.step()
        st = ref.state[w]
        if name == "adam":
            want = (st["exp_avg_sq"] / (1 - 0.99 ** 7)).sqrt() + 1e-8
        elif name == "rmsprop":
            v = st["square_avg"] - (st["grad_avg"] ** 2 if kw.get("centered") else 0)
            want = v.sqrt() + 1e-8
        else:
            want = st["sum"].sqrt() + 1e-10
        np.testing.assert_allclose(probes.preconditioner(state)[0].numpy(),
                                   want.detach().numpy(), rtol=1e-9)


def test_an_adam_sweep_records_the_preconditioned_sharpness_and_the_verdict_uses_38_over_lr():
    s = spec.resolve({"data": {"source": "blobs", "n": 120, "classes": 3,
                               "preprocess": "standardize"},
                      "model": {"hidden": [8], "activation": "tanh", "init": "glorot_uniform"},
                      "train": {"optimizer": "adam", "batch_size": 0, "epochs": 3, "lr": 0.01},
                      "run": {"dtype": "float64"}})
    ms = spec.members(s)
    ds = data.load(ms[0].data)
    run = engine.run_cohort(Cohort(0, tuple(ms)), ds, s.run, probes.hooks(s))[0]
    pre, raw = run.history["precond_sharpness"], run.history["sharpness"]
    measured = [e for e, x in enumerate(raw) if x is not None]
    assert measured == sorted(probes.sharpness_epochs([3])) == [0, 1, 3]
    assert pre[0] is None  # no preconditioner before the first step
    assert all(pre[e] is not None and pre[e] > 0 for e in measured[1:])
    edge = verdicts.edge_of({"optimizer": "adam", "beta1": 0.9})
    assert edge.c == pytest.approx(38.0) and edge.lr(pre[-1]) == pytest.approx(38 / pre[-1])
