"""Tables on disk: one list of formats, read into pandas and written back.

CSV, TSV, JSON Lines and Parquet, by extension (compressed too), for the
data a run trains on and for the files `predict` and `evaluate` read and
write.
"""

from __future__ import annotations

import collections
import lzma
import math
import re
import zipfile
from pathlib import Path

import pandas as pd

from kerasbert.files import atomic_output

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz")
# What a reader raises for a file that is not what its name says: bad bytes,
# a truncated or mislabelled archive, a corrupt Parquet footer.
READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    lzma.LZMAError,
    pd.errors.ParserError,
)


class DataError(ValueError):
    """Data that cannot be used, with a one-line explanation."""


# === Reading ===


def read_table(path, format="auto") -> pd.DataFrame:
    """Reads a CSV, TSV, JSON Lines or Parquet file into a DataFrame.

    Text files are UTF-8, or UTF-16 when they start with its byte-order mark.

    Args:
        path: the file.
        format: `"auto"` (from the extension, `.gz`/`.bz2`/`.zip`/`.xz`
            allowed) or one of `"csv"`, `"tsv"`, `"jsonl"`, `"parquet"`.

    Raises:
        DataError: the file is missing, a directory, of an unknown kind,
            unreadable (another encoding, a corrupt archive or Parquet
            file, broken quoting), or has a column name twice.
    """
    import pyarrow as pa  # pandas' Parquet engine; its errors are not all ValueErrors

    path = Path(path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError) as e:  # e.g. a name too long for the file system
        raise DataError(
            f"{path}: cannot use it as a data file: {getattr(e, 'strerror', None) or e}"
        ) from None
    if is_dir:
        raise DataError(f"{path}: is a directory; give a data file")
    if not is_file:
        raise DataError(f"{path}: no such data file")
    if format == "auto":
        suffixes = [s.lower() for s in path.suffixes if s.lower() not in COMPRESSIONS]
        format = FORMATS.get(suffixes[-1] if suffixes else "")
        if format is None:
            raise DataError(
                f"{path}: cannot tell the format from the extension; use one of "
                f"{', '.join(sorted(FORMATS))} or set data.format"
            )
    try:
        if format in ("csv", "tsv"):
            options = dict(
                sep="," if format == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                encoding=_text_encoding(path),
            )
            frame = pd.read_csv(path, **options)
            columns = list(frame.columns)
            if _maybe_renamed(columns):
                # pandas renames a repeated name ("label", "label.1"): read
                # the header as written to refuse it like any other format's.
                columns = (
                    pd.read_csv(path, header=None, nrows=1, **options).iloc[0].dropna().tolist()
                )
        elif format == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
            columns = list(frame.columns)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            # Parquet strings are read lazily: bytes that are not UTF-8 would
            # otherwise fail later, deep inside pandas, as an ArrowException.
            table.validate(full=True)
            frame = table.to_pandas()
            columns = list(frame.columns)
    except (*READ_ERRORS, pa.ArrowException) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "; save it as UTF-8" if isinstance(e, UnicodeError) else ""
        raise DataError(f"{path}: cannot read it as {format}: {first_line}{hint}") from None
    duplicated = sorted(str(c) for c, count in collections.Counter(columns).items() if count > 1)
    if duplicated:
        raise DataError(
            f"{path}: duplicated column names {duplicated}; give each column its own name"
        )
    return frame


def _maybe_renamed(columns) -> bool:
    names = {str(c) for c in columns}
    return any(
        (m := re.fullmatch(r"(.*)\.[0-9]+", str(c))) and m.group(1) in names for c in columns
    )


def _text_encoding(path) -> str:
    """UTF-16 when the file starts with its byte-order mark, else UTF-8.

    Spreadsheet programs save "Unicode text" as UTF-16 with a BOM; a UTF-8
    BOM pandas skips by itself. Compressed files are read as UTF-8.
    """
    if path.suffix.lower() in COMPRESSIONS:
        return "utf-8"
    with open(path, "rb") as f:
        start = f.read(2)
    return "utf-16" if start in (b"\xff\xfe", b"\xfe\xff") else "utf-8"


# === Writing ===


def write_table(frame, path):
    """Writes a frame atomically as CSV, TSV, JSON Lines or Parquet (by extension; CSV otherwise)."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".xz")]
    kind = FORMATS.get(suffixes[-1] if suffixes else "", "csv")
    compression = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz"}.get(path.suffix.lower())
    with atomic_output(path) as tmp:
        if kind == "csv":
            frame.to_csv(tmp, index=False, compression=compression)
        elif kind == "tsv":
            frame.to_csv(tmp, sep="\t", index=False, compression=compression)
        elif kind == "jsonl":
            frame.to_json(
                tmp, orient="records", lines=True, force_ascii=False, compression=compression
            )
        else:
            frame.to_parquet(tmp, index=False)


# === Cells ===


def as_text(value) -> str:
    """A text cell as a string: missing values (None, NaN, pd.NA, NaT) are `""`."""
    # pd.NA and NaT come from Parquet's nullable columns; None and NaN from the rest.
    if (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and math.isnan(value))
    ):
        return ""
    return str(value)


def text_values(column: pd.Series) -> list[str]:
    """A column as strings, with missing values as `""`."""
    return [as_text(v) for v in column.tolist()]


def label_text(value) -> str:
    """A label cell as the label string.

    JSON Lines and Parquet give numbers; 3.0 read back from a column with
    gaps is the label "3", as in a CSV.
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def check_columns(frame, columns, source):
    """Raises ValueError naming the columns of `columns` that `frame` lacks."""
    missing = [c for c in columns if c is not None and c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(frame.columns)[:20]}")
