"""`lrlab compare DIR1 DIR2 ...`: one report over several experiments on shared axes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from lrlab.cli import app, fail, out
from lrlab.errors import LrlabError


def default_out(directories: list[Path]) -> Path:
    """`compare-A-B` beside the first experiment (names made filename-safe)."""
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(d).resolve().name) or "x"
             for d in directories]
    return Path(directories[0]).resolve().parent / ("compare-" + "-".join(names))[:120]


@app.command()
def compare(
    directories: Annotated[list[Path], typer.Argument(help="two or more experiment folders")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="folder for the comparison report (default: compare-A-B beside DIR1)"
    )] = None,
) -> None:
    """One report comparing experiments: lr vs outcome overlaid, verdicts, measurements."""
    from lrlab import report as report_mod

    try:
        path = report_mod.build_compare(directories, out_dir or default_out(directories))
    except LrlabError as exc:
        raise fail(exc) from None
    out.print(f"report: {path}", markup=False, highlight=False)
