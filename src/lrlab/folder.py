"""What lrlab keeps in a result folder, and what it may do there.

- Which files are lrlab's own (`own_files`): `--overwrite` removes those and nothing else, so a
  user's notes or sub-folders beside a result survive.
- What kind of result a folder holds (`kind`): a sweep's experiment, a range test (`lrlab find
  --out`), a comparison (`lrlab compare --out`); `check_out` refuses to write one kind over
  another without `--overwrite`.
- How many finished members a report was built from (a tag in report.html), so that a report is
  never replaced by one built from fewer.
- A fingerprint of the data a sweep trained on (shape, dtype and a hash of each array after the
  split and preprocessing), so a resume on other data is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lrlab.errors import LrlabError
from lrlab.store import DB_NAME

REPORT = "report.html"
LOCK_FILE = "lrlab.lock"
DB_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal")
OWN_FILES = frozenset({
    *DB_FILES, LOCK_FILE, "spec.toml", "spec.toml.tmp", REPORT, f"{REPORT}.tmp",
    "answer.txt",  # `lrlab recipes run`
    "keras_loss_2x2.png",  # the iris-keras recipes' figure
    "find.json", "find.png",  # `lrlab find --out`
    "verdicts.csv", "measurements.csv",
})
"""Files lrlab writes under fixed names (besides the report's figures)."""
FIGURE_STEMS = ("lr_outcome", "curves", "lr_schedule", "probes", "decision_regions",
                "best_curves")
"""The report's figures: each is written as STEM.png with its numbers in STEM.csv."""
_LINKED = re.compile(r"""href=['"]([A-Za-z0-9_.-]+\.(?:png|csv))['"]""")

KINDS = {
    "experiment": "a sweep's results (lrlab.sqlite)",
    "find": "a range test's results (find.json)",
    "compare": "an `lrlab compare` report",
    "report": "a report.html of unknown kind",
}
"""What `kind` returns, as words for messages."""


# ----------------------------------------------------------------------------- the folder


def kind(directory: str | Path) -> str | None:
    """The kind of lrlab result `directory` holds (a key of KINDS), or None for none."""
    d = Path(directory)
    if not d.is_dir():
        return None
    if any((d / n).exists() for n in DB_FILES):
        return "experiment"
    if (d / "find.json").exists():
        return "find"
    tag = report_tag(d / REPORT)
    if tag is not None and tag.get("kind") in KINDS:
        return tag["kind"]
    return "report" if (d / REPORT).exists() else None


def own_files(directory: str | Path) -> list[Path]:
    """The files in `directory` (not in sub-folders) that lrlab wrote: the fixed names, the
    report's figures, and any PNG/CSV the folder's report.html links to."""
    d = Path(directory)
    if not d.is_dir():
        return []
    linked: set[str] = set()
    report = d / REPORT
    if report.is_file():
        try:
            linked = set(_LINKED.findall(report.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            pass
    out = []
    for p in sorted(d.iterdir()):
        if p.is_dir() and not p.is_symlink():
            continue
        name = p.name
        if (name in OWN_FILES or name in linked
                or (p.suffix in (".png", ".csv") and p.stem in FIGURE_STEMS)):
            out.append(p)
    return out


def remove_own(directory: str | Path, keep: Sequence[str] = ()) -> list[str]:
    """Delete lrlab's own files from `directory` (see `own_files`), except those named in
    `keep`; everything else (a user's files, sub-folders) stays. Returns the names removed.

    Refused (LrlabError, nothing removed) while another process writes the folder (holds its
    lock), unless the caller keeps the lock, i.e. holds it itself.
    """
    lock = Path(directory) / LOCK_FILE
    if LOCK_FILE not in keep and lock.is_file():
        with open(lock, "ab") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LrlabError(f"{str(directory)!r} is being written by another lrlab "
                                 "process; wait for it to finish (or stop it)") from None
    removed = []
    for p in own_files(directory):
        if p.name not in keep:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def check_out(directory: str | Path, want: str, *, overwrite: bool,
              flag: str = "--out") -> str | None:
    """Check that a result of kind `want` may be written into `directory`.

    Allowed: a missing or empty folder, a folder with no lrlab result, or one holding a result
    of the same kind (which the new one replaces). Another kind of result needs `overwrite`.
    Returns the kind found (None for none); LrlabError when refused. Writes nothing.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise LrlabError(f"{flag} {str(d)!r} is a file (it is not a folder); choose a folder")
    found = kind(d)
    if found is not None and found != want and not overwrite:
        raise LrlabError(f"{flag} {str(d)!r} holds {KINDS[found]}; choose another folder, or "
                         "add --overwrite to replace it")
    return found


# ----------------------------------------------------------------------------- the report

_TAG = re.compile(r"<meta name='lrlab-(kind|members)' content='([A-Za-z0-9_-]+)'>")


def tag_report(page: str, kind: str, members: int) -> str:
    """The report page with its kind and member count in <head> (see `report_tag`)."""
    tags = (f"<meta name='lrlab-kind' content='{kind}'>"
            f"<meta name='lrlab-members' content='{int(members)}'>")
    anchor = "<meta charset='utf-8'>" if "<meta charset='utf-8'>" in page else "<head>"
    return page.replace(anchor, anchor + tags, 1)  # (the charset stays first)


def report_tag(path: str | Path) -> dict[str, Any] | None:
    """{"kind": .., "members": ..} from a report.html lrlab wrote; None when there is no file
    or no tag (a report written before reports were tagged)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return None
    found = dict(_TAG.findall(head))
    if not found:
        return None
    members = found.get("members", "")
    return {"kind": found.get("kind"), "members": int(members) if members.isdigit() else None}


def check_report(directory: str | Path, members: int) -> None:
    """Refuse (LrlabError) to replace a report built from more finished members than
    `members`, the count the new one would be built from."""
    path = Path(directory) / REPORT
    tag = report_tag(path)
    old = None if tag is None else tag.get("members")
    if old is not None and old > members:
        raise LrlabError(
            f"{str(path)!r} was built from {old} finished members but the store now holds "
            f"{members}; not replacing it with a smaller report (move it away to rebuild)")


# ----------------------------------------------------------------------------- fingerprints

ARRAYS = ("X_train", "y_train", "X_val", "y_val")


def _array_print(a: np.ndarray) -> str:
    """'SHAPE DTYPE HASH', e.g. '800x2 float32 3f2a...' (the hash of the bytes, C order)."""
    a = np.ascontiguousarray(a)
    digest = hashlib.blake2b(a.view(np.uint8).reshape(-1) if a.size else b"",
                             digest_size=12).hexdigest()
    return f"{'x'.join(map(str, a.shape))} {a.dtype} {digest}"


def data_fingerprint(datasets: Mapping[Any, Any]) -> list[dict[str, Any]]:
    """One entry per dataset of a sweep (DataSpec -> data.Dataset, in the sweep's order):
    its source and preprocessing, and each array's shape, dtype and hash after the split."""
    out = []
    for spec, ds in datasets.items():
        label = str(getattr(spec, "source", spec))
        pre = getattr(spec, "preprocess", "none")
        if pre != "none":
            label += f" (preprocess {pre})"
        out.append({"data": label, **{k: _array_print(getattr(ds, k)) for k in ARRAYS}})
    return out


def data_changes(stored: Sequence[Mapping[str, Any]], now: Sequence[Mapping[str, Any]]
                 ) -> str | None:
    """What differs between two fingerprints, in words; None when they are the same."""
    if len(stored) != len(now):
        return f"the sweep had {len(stored)} dataset(s), now {len(now)}"
    changes = []
    for a, b in zip(stored, now):
        for k in ARRAYS:
            if a.get(k) == b.get(k):
                continue
            was, new = str(a.get(k)).rsplit(" ", 1)[0], str(b.get(k)).rsplit(" ", 1)[0]
            what = (f"{k} was {was}, now {new}" if was != new
                    else f"{k} has the same shape ({new}) but other values")
            changes.append(f"{b.get('data')}: {what}")
    if not changes:
        return None
    more = f" and {len(changes) - 2} more" if len(changes) > 2 else ""
    return "; ".join(changes[:2]) + more


def spec_fingerprint(identity: Mapping[str, Any]) -> str:
    """A hash of what makes two specs the same experiment (runner.identity)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
