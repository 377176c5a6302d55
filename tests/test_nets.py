"""The hand-written batched backward equals autograd (float64), for every activation/output."""

from __future__ import annotations

import math

import pytest
import torch

from lrlab import nets
from lrlab.spec import ModelSpec


def _autograd(params, x, y, arch):
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    z, _ = nets.forward(ps, x, arch)
    loss, _, _ = nets.loss_terms(z, y, arch)
    loss.mean(1).sum().backward()
    return [p.grad for p in ps]


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "linear"])
@pytest.mark.parametrize("output,classes", [("softmax", 4), ("sigmoid", 2), ("sigmoid", 3),
                                            ("quadratic", 3)])
def test_backward_matches_autograd(activation, output, classes):
    arch = nets.Arch((3, 7, 5, nets.output_dim(output, classes)), activation, output)
    model = ModelSpec(hidden=(7, 5), activation=activation, output=output, init="glorot_uniform",
                      bias_init="normal:0.3")
    params = nets.init_params(arch, [model] * 4, [0, 1, 2, 3], dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 9, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (4, 9), generator=g)
    _, _, grads = nets.loss_and_grads(params, x, y, arch)
    ref = _autograd(params, x, y, arch)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_loss_values_match_torch_functional():
    arch = nets.Arch((2, 4, 3), "tanh", "softmax")
    params = nets.init_params(arch, [ModelSpec(hidden=(4,))], [3], dtype=torch.float64)
    x = torch.randn(6, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    z, _ = nets.forward(params, x, arch)
    loss, _, _ = nets.loss_terms(z, y, arch)
    ref = torch.nn.functional.cross_entropy(z[0], y)
    assert math.isclose(loss.mean().item(), ref.item(), rel_tol=1e-12)
    arch_b = nets.Arch((2, 4, 1), "tanh", "sigmoid")
    pb = nets.init_params(arch_b, [ModelSpec(hidden=(4,), output="sigmoid")], [3],
                          dtype=torch.float64)
    zb, _ = nets.forward(pb, x, arch_b)
    yb = torch.tensor([0, 1, 1, 0, 1, 0])
    lb, _, _ = nets.loss_terms(zb, yb, arch_b)
    refb = torch.nn.functional.binary_cross_entropy_with_logits(zb[0, :, 0], yb.double())
    assert math.isclose(lb.mean().item(), refb.item(), rel_tol=1e-12)


def test_initializers_follow_their_formulas():
    arch = nets.Arch((300, 200, 2), "relu", "softmax")
    for init, bound in (("glorot_uniform", math.sqrt(6 / 500)), ("he_uniform", math.sqrt(6 / 300)),
                        ("pytorch", 1 / math.sqrt(300)), ("lecun_uniform", math.sqrt(3 / 300))):
        w = nets.init_member(arch, ModelSpec(hidden=(200,), init=init), 0)[0]
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    for init, std in (("normal:0.05", 0.05), ("he_normal", math.sqrt(2 / 300)),
                      ("nielsen", 1.0), ("glorot_normal", math.sqrt(2 / 500))):
        w = nets.init_member(arch, ModelSpec(hidden=(200,), init=init), 0)[0]
        assert abs(w.std().item() - std) / std < 0.02
    keras = nets.init_member(arch, ModelSpec(hidden=(200,), init="keras"), 0)
    assert keras[1].abs().max() == 0  # zero bias
    nielsen = nets.init_member(arch, ModelSpec(hidden=(200,), init="nielsen"), 0)
    assert abs(nielsen[1].std().item() - 1) < 0.15  # N(0,1) biases too
    u = nets.init_member(arch, ModelSpec(hidden=(200,), init=("uniform:0:1", "normal:1")), 0)
    assert u[0].min() >= 0 and u[0].max() < 1 and u[2].min() < 0


def test_init_depends_only_on_seed():
    arch = nets.Arch((2, 5, 3), "relu", "softmax")
    m = ModelSpec(hidden=(5,))
    alone = nets.init_params(arch, [m], [7], dtype=torch.float64)
    cohort = nets.init_params(arch, [m] * 3, [1, 7, 9], dtype=torch.float64)
    for a, c in zip(alone, cohort):
        assert torch.equal(a[0], c[1])
