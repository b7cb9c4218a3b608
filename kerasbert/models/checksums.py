"""sha256 checks of fetched artefacts (local presets, benchmark wheels)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path, chunk_size=1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksums(directory, checksums: dict[str, str]) -> None:
    """Checks files under `directory` against `{relative path: sha256}`.

    Raises:
        ValueError: a file is missing or its sha256 differs; nothing that
            depends on it should be used.
    """
    directory = Path(directory)
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{path}: missing; its sha256 was to be checked against {expected}")
        actual = sha256_of(path)
        if actual != expected.lower():
            raise ValueError(
                f"{path}: sha256 mismatch (expected {expected}, found {actual}); "
                "the file is not the one the config names: fetch it again"
            )
