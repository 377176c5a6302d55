"""Seed 001's network with its one bug fixed, for ``lrlab gradcheck``: every array is ok.

Identical to ``seed001_fnn.py`` (same network, data, initialisation and cost) except for the
first-layer bias gradient, now summed over samples only::

    self.db1 = np.sum(self.dZ1, axis=1, keepdims=True) / m      # [128, 1], one per unit

    lrlab gradcheck src/lrlab/examples/seed001_fnn_fixed.py  # all ok, exit code 0

Data: 40 points in the plane, two Gaussian clusters (numpy seed 0), features x samples as in
the question (``x_train``: [2, 40], ``y_train``: [1, 40]).
"""

import numpy as np


class FNN:
    def __init__(self):
        self.W1 = None
        self.b1 = None
        self.W2 = None
        self.b2 = None
        self.W3 = None
        self.b3 = None

    def sigmoid(self, x):
        return 1 / (1 + np.exp(-x))

    def forward_prop(self, x):
        self.Z1 = np.dot(self.W1, x) + self.b1
        self.A1 = np.tanh(self.Z1)
        self.Z2 = np.dot(self.W2, self.A1) + self.b2
        self.A2 = np.tanh(self.Z2)
        self.Z3 = np.dot(self.W3, self.A2) + self.b3
        self.A3 = self.sigmoid(self.Z3)
        return self.A3

    def back_prop(self, x, y):
        self.forward_prop(x)
        m = x.shape[1]
        self.dZ3 = self.A3 - y
        self.dW3 = np.dot(self.dZ3, self.A2.T) / m
        self.db3 = np.sum(self.dZ3, axis=1, keepdims=True) / m
        self.dZ2 = np.dot(self.W3.T, self.dZ3) * (1 - self.A2**2)
        self.dW2 = np.dot(self.dZ2, self.A1.T) / m
        self.db2 = np.sum(self.dZ2, axis=1, keepdims=True) / m
        self.dZ1 = np.dot(self.W2.T, self.dZ2) * (1 - self.A1**2)
        self.dW1 = np.dot(self.dZ1, x.T) / m
        self.db1 = np.sum(self.dZ1, axis=1, keepdims=True) / m  # fixed: axis=1

    def cost(self, y):
        """The question's cost, from ``fit``: mean binary cross-entropy."""
        m = y.shape[1]
        logprobs = y * np.log(self.A3) + (1 - y) * np.log(1 - self.A3)
        return -(np.sum(logprobs)) / m


# --- data: a small fixed binary problem, features x samples
_rng = np.random.RandomState(0)
_half = 20
x_train = np.concatenate(
    [_rng.normal([[-1.0], [-0.5]], 0.6, (2, _half)), _rng.normal([[1.0], [0.5]], 0.6, (2, _half))],
    axis=1,
)  # [2, 40]
y_train = np.concatenate([np.zeros((1, _half)), np.ones((1, _half))], axis=1)  # [1, 40]

# --- the question's initialisation (fit: np.random.seed(4), then rand/randn in this order);
# RandomState(4) draws the same numbers without touching numpy's global generator.
_init = np.random.RandomState(4)
params = {}
params["W1"] = _init.rand(128, x_train.shape[0])
params["b1"] = np.zeros((128, 1))
params["W2"] = _init.randn(64, 128)
params["b2"] = np.zeros((64, 1))
params["W3"] = _init.randn(1, 64)
params["b3"] = np.zeros((1, 1))


def _net(p):
    net = FNN()
    for name, value in p.items():
        setattr(net, name, value)
    return net


def loss(p):
    """The question's cost at parameters ``p`` on the fixed data."""
    net = _net(p)
    net.forward_prop(x_train)
    return float(net.cost(y_train))


def grads(p):
    """The question's back_prop at ``p``, one gradient per parameter."""
    net = _net(p)
    net.back_prop(x_train, y_train)
    # The update `self.b1 -= learning_rate * self.db1` broadcasts a [1, 1] db1 over all 128
    # biases, so this is the gradient the question's training actually applied.
    return {name: np.broadcast_to(getattr(net, "d" + name), p[name].shape).copy() for name in p}
