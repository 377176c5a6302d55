"""The one error type users see: a bad spec, flag or input file."""

from __future__ import annotations


class LrlabError(ValueError):
    """Bad user input: a spec key, a flag, a data file. One sentence, no traceback.

    The CLI turns it into one line on stderr and exit code 2, having written nothing.
    """


def bad_value(key: str, value: object, allowed: str) -> LrlabError:
    """The standard sentence: "`key` must be ALLOWED; got VALUE"."""
    return LrlabError(f"`{key}` must be {allowed}; got {value!r}")
