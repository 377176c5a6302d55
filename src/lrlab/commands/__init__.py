"""CLI commands that live in their own modules (find, recipes, compare, ...).

Each module imports `app` from `lrlab.cli` and registers its commands with `@app.command()`;
`lrlab.cli` imports this package once its own commands are defined. Modules import heavy
dependencies (torch, matplotlib) inside the command bodies, so `lrlab --help` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil


def register() -> None:
    """Import every command module in this package (each registers itself on the app)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
