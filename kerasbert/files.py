"""Writing files so that a reader sees the old file or the new one, never half of it.

Every output kerasbert writes (run directories, predictions, metrics,
reports) goes through here: written beside its final path under a hidden
temporary name, then renamed onto it.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside `path`, renamed onto it on success.

    On any error the temporary file is removed and `path` is left as it was.

    Example:

    >>> with atomic_output("out.json") as tmp:
    ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text):
    """Writes UTF-8 text atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path, write):
    """Calls `write(file)` on a binary file, synced to disk, then renames it onto `path`.

    For state that must survive a killed process: after a crash `path` holds
    the old content or the new, complete.
    """
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def json_text(value) -> str:
    """`value` as indented UTF-8 JSON with a final newline; numpy scalars and arrays as numbers and lists."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def write_json(path, value) -> Path:
    """Writes `json_text(value)` atomically; returns the path."""
    write_text(path, json_text(value))
    return Path(path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
