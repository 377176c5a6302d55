"""Shared fixtures: small, seeded, deterministic; and a test session that touches nothing of
the machine's.

Before any test module is imported, every place a library would keep state between runs is
pointed into this session's pytest temp folder: HOME, the XDG folders, TMPDIR, matplotlib's
config, the compiled-kernel cache (LRLAB_CACHE_DIR: the kernel is built once per session) and
Ray's temp folder (RAY_TMPDIR: its sessions, sockets and `ray_current_cluster` address file).
A cache or a Ray session left by an earlier run can then neither help nor hide a failure.
Subprocesses (the CLI, Ray workers) inherit the same environment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

ISOLATED = {  # variable: folder under the session's base temp folder ("" = the folder itself)
    "HOME": "home",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_HOME": "xdg-config",
    "XDG_DATA_HOME": "xdg-data",
    "XDG_STATE_HOME": "xdg-state",
    "MPLCONFIGDIR": "mpl",
    "TMPDIR": "tmp",
    "LRLAB_CACHE_DIR": "lrlab-cache",
    "RAY_TMPDIR": "",  # Ray keeps everything in $RAY_TMPDIR/ray: kept short for its sockets
}


@pytest.hookimpl(trylast=True)  # after pytest's own tmp_path set-up
def pytest_configure(config: pytest.Config) -> None:
    factory = getattr(config, "_tmp_path_factory", None) or \
        pytest.TempPathFactory.from_config(config, _ispytest=True)
    base = factory.getbasetemp()
    for var, name in ISOLATED.items():
        path = base / name if name else base
        if var != "LRLAB_CACHE_DIR":  # lrlab creates its own cache folder, private
            path.mkdir(exist_ok=True)
        os.environ[var] = str(path)
    tempfile.tempdir = None  # tempfile reads TMPDIR again on next use


@pytest.fixture
def mnist_pkl() -> Path:
    p = SHARED_DATA / "mnist.pkl.gz"
    if not p.is_file():
        pytest.skip("../shared/data/mnist.pkl.gz not present")
    return p
