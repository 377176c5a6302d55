"""lrlab: a learning-rate laboratory for neural networks.

    >>> import lrlab
    >>> spec = {"data": {"source": "blobs"}, "sweep": {"lr": [0.1, 0.01]}}
    >>> result = lrlab.sweep(spec)  # doctest: +SKIP
    >>> result.to_pandas()  # doctest: +SKIP

Public names are imported lazily, so `import lrlab` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

import importlib
import sys
import types
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
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module 'lrlab' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The `lrlab` module, whose public names stay what `_PUBLIC` says.

    `lrlab.gradcheck` is both a function and the submodule defining it. Importing a submodule
    binds it on its package (`lrlab.gradcheck = <module>`), which would replace the function
    after the first use; this class keeps the function. The submodule stays importable by its
    full name (`from lrlab.gradcheck import check_file`).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PUBLIC and isinstance(value, types.ModuleType):
            return  # the import system binding a submodule over a public function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
