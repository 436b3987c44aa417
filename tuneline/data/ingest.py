"""Ingest: read raw labelled data and snapshot it as Parquet, keyed by content.

Reads CSV / TSV / JSONL / Parquet from a file or a directory of files (local or ``s3://``; batch
prediction reads its input with the same readers: ``list_source_files``, ``read_files``).
Writes ``datasets/<fingerprint[:16]>/data.parquet`` and ``meta.json`` in the storage
root. The fingerprint (SHA-256 over each file's name and bytes) is the dataset
version; ingesting the same bytes again reuses the same snapshot.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
from pathlib import Path

import pandas as pd

from tuneline import keys
from tuneline.errors import DataError
from tuneline.results import Dataset
from tuneline.storage import Storage

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".conll": "conll"}


def list_source_files(source: str, fmt: str = "auto", label: str = "data.source") -> list[Path]:
    """The data files a source names: the file itself, or the supported files in a directory.
    ``label``: the setting named in errors (``data.source``; batch prediction's ``data``)."""
    if source.startswith("s3://"):  # fetched into the local cache, file names kept (same fingerprint)
        from tuneline.storage.s3 import fetch_source

        source = str(fetch_source(source, tuple(FORMATS), label))
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{label}: {source} does not exist")
    if path.is_file():
        if fmt == "auto" and path.suffix.lower() not in FORMATS:
            format_setting = "data.format" if label == "data.source" else "the format"
            raise DataError(
                f"{label}: {path} has an unsupported extension (use {', '.join(FORMATS)}, or set {format_setting})"
            )
        return [path]
    wanted = [ext for ext, name in FORMATS.items() if fmt in ("auto", name)]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    if not files:
        raise DataError(f"{label}: directory {path} holds no {', '.join(FORMATS)} files")
    return files


def read_files(files: list[Path], fmt: str = "auto") -> pd.DataFrame:
    """Every file's rows, in file order; all files must have the same columns."""
    frames = [read_table(path, fmt) for path in files]
    columns = list(frames[0].columns)
    for path, frame in zip(files[1:], frames[1:]):
        if list(frame.columns) != columns:
            raise DataError(f"{path}: columns {list(frame.columns)} differ from {files[0].name}'s {columns}")
    return pd.concat(frames, ignore_index=True)


def _decode_utf8(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "re-save the file as UTF-8"
        ) from None


def read_table(path: Path, fmt: str = "auto") -> pd.DataFrame:
    """Read one file into a DataFrame of strings (text columns stay text: 'NA' is not a null)."""
    fmt = FORMATS[path.suffix.lower()] if fmt == "auto" else fmt
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(io.BytesIO(raw))
        elif fmt == "conll":
            from tuneline.data.conll import read_conll

            frame = read_conll(path)
        elif fmt == "jsonl":
            frame = _read_jsonl(_decode_utf8(raw, path), path)
        else:
            frame = pd.read_csv(
                io.StringIO(_decode_utf8(raw, path)),
                sep="\t" if fmt == "tsv" else ",",
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
            )
    except DataError:
        raise
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: malformed {fmt.upper()}: {_first_line(err)}") from None
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: cannot read as {fmt}: {_first_line(err)}") from None
    if frame.empty:
        raise DataError(f"{path}: no data rows (only a header or nothing)")
    frame.columns = [str(c).strip() for c in frame.columns]
    repeated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise DataError(f"{path}: column names {repeated} appear more than once (after trimming spaces); "
                        "rename them so each column has one name")
    return frame


def _kind(value) -> str | None:
    """A JSON value's kind for the one-type-per-column check (ints and floats are both numbers)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _read_jsonl(text: str, path: Path) -> pd.DataFrame:
    rows, first_kind = [], {}  # column -> (kind, line) of its first non-null value
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number} is not valid JSON: {err.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, expected an object")
        for column, value in row.items():
            kind = _kind(value)
            seen = first_kind.setdefault(column, (kind, number)) if kind else None
            if seen and seen[0] != kind:
                raise DataError(f"{path}: line {number}: column {column!r} holds a {kind} where line {seen[1]} "
                                f"holds a {seen[0]}; a column needs one type (quote numbers meant as text)")
        rows.append(row)
    return pd.DataFrame(rows)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def fingerprint_files(files: list[Path], fmt: str = "auto") -> str:
    """SHA-256 over (file name, file bytes) pairs (and a forced format): identical data, identical version."""
    digest = hashlib.sha256(b"" if fmt == "auto" else f"format={fmt}\0".encode())
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def ingest_dataset(source: str, storage: Storage, fmt: str = "auto", reuse: bool = True) -> Dataset:
    """Snapshot ``source`` into the storage root; returns the dataset's key, fingerprint and counts."""
    files = list_source_files(source, fmt)
    fingerprint = fingerprint_files(files, fmt)
    prefix = keys.dataset_prefix(fingerprint)
    if reuse and storage.exists(keys.meta(prefix)):
        return Dataset(**storage.read_json(keys.meta(prefix)), reused=True)
    data = read_files(files, fmt)
    columns = list(data.columns)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "data.parquet"
        try:
            data.to_parquet(local, index=False)
        except (ValueError, TypeError) as err:  # pyarrow's ArrowInvalid / ArrowTypeError: mixed types across files
            raise DataError(f"data.source: {source}: a column mixes types across rows or files and cannot be "
                            f"stored: {_first_line(err)}") from None
        storage.put_file(local, f"{prefix}/data.parquet")
    dataset = Dataset(fingerprint=fingerprint, key=prefix, uri=storage.uri(f"{prefix}/data.parquet"), rows=len(data),
                      columns=columns, source=source, files=[p.name for p in files])
    storage.write_json(keys.meta(prefix), dataset.stored())
    return dataset


def load_dataset_frame(storage: Storage, dataset: Dataset) -> pd.DataFrame:
    """The snapshot an earlier ingest wrote, as a DataFrame."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "data.parquet"
        storage.get_file(f"{dataset.key}/data.parquet", local)
        return pd.read_parquet(local)
