"""lrlab: a learning-rate laboratory for neural networks.

    >>> import lrlab
    >>> spec = {"data": {"source": "blobs"}, "sweep": {"lr": [0.1, 0.01]}}
    >>> result = lrlab.sweep(spec)  # doctest: +SKIP
    >>> result.to_pandas()  # doctest: +SKIP

Public names are imported lazily, so `import lrlab` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "LrlabError": "lrlab.errors",
    "Result": "lrlab.runner",
    "sweep": "lrlab.runner",
    "Spec": "lrlab.spec",
    "resolve": "lrlab.spec",
    "gradcheck": "lrlab.gradcheck",
    "find_lr": "lrlab.finder",
    "FindResult": "lrlab.finder",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lrlab' has no attribute {name!r}")
