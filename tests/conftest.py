"""Shared fixtures: small, seeded, deterministic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def mnist_pkl() -> Path:
    p = SHARED_DATA / "mnist.pkl.gz"
    if not p.is_file():
        pytest.skip("../shared/data/mnist.pkl.gz not present")
    return p
