"""Ingest: read raw labelled data and snapshot it as Parquet, keyed by content.

Reads CSV / TSV / JSONL / Parquet from a file or a directory of files (local or ``s3://``; batch
prediction reads its input with the same readers: ``list_source_files``, ``read_files``).
Writes ``datasets/<fingerprint[:16]>/data.parquet`` and ``meta.json`` in the storage
root. The fingerprint (SHA-256 over each file's name and bytes) is the dataset
version; ingesting the same bytes again reuses the same snapshot.

Files are read and written in batches (``iter_files``, ``SnapshotWriter``): memory follows the batch size
(``tuneline.data.batches``), not the file size. The later stages read the snapshot the same way
(``snapshot_file`` + ``tuneline.data.batches.parquet_batches``).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from tuneline import keys
from tuneline.data.batches import BATCH_ROWS, parquet_batches, rows_per_batch
from tuneline.errors import DataError
from tuneline.results import Dataset
from tuneline.storage import Storage

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".conll": "conll"}
PIECE_BYTES = 8 << 20  # text files are checked and read this much at a time


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
    """Every file's rows, in file order, in one DataFrame; all files must have the same columns."""
    return pd.concat(list(iter_files(files, fmt, batch_rows=None)), ignore_index=True)


def iter_files(files: list[Path], fmt: str = "auto", batch_rows: int | None = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """Every file's rows, in file order, in DataFrames of at most ``batch_rows`` rows (None: one per file);
    all files must have the same columns (a JSON Lines file's columns: every key it holds, in order of appearance)."""
    expected = None
    for path in files:
        columns: dict[str, None] = {}
        for frame in iter_table(path, fmt, batch_rows):
            columns.update(dict.fromkeys(frame.columns))
            yield frame
        if expected is None:
            expected = list(columns)
        elif list(columns) != expected:
            raise DataError(f"{path}: columns {list(columns)} differ from {files[0].name}'s {expected}")


def _decode_error(path: Path, offset: int, line: int, byte: int) -> DataError:
    return DataError(f"{path}: line {line} is not valid UTF-8 (byte 0x{byte:02x} at offset {offset}); "
                     "re-save the file as UTF-8")


def _pieces(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset after the byte-order mark, bytes) pieces of a file without its leading byte-order mark, each ending
    at a line break (the last one may not), about PIECE_BYTES each: no character or line spans two pieces."""
    with path.open("rb") as handle:
        rest, offset = handle.read(len(codecs.BOM_UTF8)), 0
        if rest == codecs.BOM_UTF8:
            rest = b""
        while block := handle.read(PIECE_BYTES):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            if cut:
                yield offset, block[:cut]
                offset += cut
            rest = block[cut:]
        if rest:
            yield offset, rest


def _check_text(path: Path) -> None:
    """A text file that is blank fails as empty; bytes that are not UTF-8 fail naming their line."""
    blank, lines = True, 0
    for offset, piece in _pieces(path):
        try:
            piece.decode("utf-8")
        except UnicodeDecodeError as err:
            line = lines + piece[: err.start].count(b"\n") + 1
            raise _decode_error(path, offset + err.start, line, piece[err.start]) from None
        blank = blank and not piece.strip()
        lines += piece.count(b"\n")
    if blank:
        raise DataError(f"{path}: the file is empty")


def _refuse_blank(path: Path) -> None:
    with path.open("rb") as handle:
        while block := handle.read(PIECE_BYTES):
            if block.strip():
                return
    raise DataError(f"{path}: the file is empty")


def read_table(path: Path, fmt: str = "auto") -> pd.DataFrame:
    """Read one file into a DataFrame of strings (text columns stay text: 'NA' is not a null)."""
    return list(iter_table(path, fmt, batch_rows=None))[0]


def iter_table(path: Path, fmt: str = "auto", batch_rows: int | None = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """One file's rows in DataFrames of at most ``batch_rows`` rows (fewer when rows are wide; None: one frame),
    read as one whole read would read them (CSV: every column text, only an empty field is a null); errors are
    DataErrors naming the file and, where there is one, the line."""
    fmt = FORMATS[path.suffix.lower()] if fmt == "auto" else fmt
    if fmt in ("csv", "tsv", "jsonl"):
        _check_text(path)
    else:
        _refuse_blank(path)
    rows = 0
    try:
        for frame in _frames(path, fmt, batch_rows):
            rows += len(frame) if len(frame.columns) else 0
            yield _named_columns(frame, path)
    except DataError:
        raise
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: malformed {fmt.upper()}: {_first_line(err)}") from None
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: cannot read as {fmt}: {_first_line(err)}") from None
    if not rows:
        raise DataError(f"{path}: no data rows (only a header or nothing)")


def _frames(path: Path, fmt: str, batch_rows: int | None) -> Iterator[pd.DataFrame]:
    if fmt == "parquet":
        yield from parquet_batches(path, batch_rows)
    elif fmt == "conll":
        from tuneline.data.conll import iter_conll

        yield from iter_conll(path, batch_rows)
    elif fmt == "jsonl":
        yield from _jsonl_frames(path, batch_rows)
    else:
        yield from _csv_frames(path, fmt, batch_rows)


def _csv_frames(path: Path, fmt: str, batch_rows: int | None) -> Iterator[pd.DataFrame]:
    """CSV / TSV chunks; the chunk size follows the rows' width (about BATCH_BYTES a chunk)."""
    options = dict(sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False, na_values=[""],
                   quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL, encoding="utf-8-sig")
    if batch_rows is None:
        yield pd.read_csv(path, **options)
        return
    size = min(batch_rows, 1_000)  # a first small chunk measures the rows' width
    with pd.read_csv(path, iterator=True, **options) as reader:
        while True:
            try:
                frame = reader.get_chunk(size)
            except StopIteration:
                return
            yield frame
            if len(frame):
                size = rows_per_batch(frame.memory_usage(deep=True, index=False).sum() / len(frame), batch_rows)


def _named_columns(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
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


def _text_lines(path: Path) -> Iterator[str]:
    """A UTF-8 file's lines (checked before), split as ``str.splitlines`` splits a whole text, piece by piece."""
    for _, piece in _pieces(path):
        yield from piece.decode("utf-8").splitlines()


def _jsonl_frames(path: Path, batch_rows: int | None) -> Iterator[pd.DataFrame]:
    """JSON Lines rows, ``batch_rows`` at a time; a column holds one kind of value in the whole file."""
    rows, first_kind = [], {}  # column -> (kind, line) of its first non-null value
    for number, line in enumerate(_text_lines(path), start=1):
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
        if batch_rows is not None and len(rows) >= batch_rows:
            yield pd.DataFrame(rows)
            rows = []
    if rows or batch_rows is None:
        yield pd.DataFrame(rows)


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


def ingest_dataset(source: str, storage: Storage, fmt: str = "auto", reuse: bool = True,
                   batch_rows: int = BATCH_ROWS) -> Dataset:
    """Snapshot ``source`` into the storage root; returns the dataset's key, fingerprint and counts.

    The files are read and written ``batch_rows`` rows at a time (fewer for wide rows): memory follows the batch,
    not the dataset."""
    files = list_source_files(source, fmt)
    fingerprint = fingerprint_files(files, fmt)
    prefix = keys.dataset_prefix(fingerprint)
    if reuse and storage.exists(keys.meta(prefix)):
        return Dataset(**storage.read_json(keys.meta(prefix)), reused=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "data.parquet"
        writer = SnapshotWriter(local, source)
        with writer:
            for frame in iter_files(files, fmt, batch_rows):
                writer.write(frame)
        storage.put_file(local, f"{prefix}/data.parquet")
    dataset = Dataset(fingerprint=fingerprint, key=prefix, uri=storage.uri(f"{prefix}/data.parquet"),
                      rows=writer.rows, columns=writer.columns, source=source, files=[p.name for p in files])
    storage.write_json(keys.meta(prefix), dataset.stored())
    return dataset


class SnapshotWriter:
    """Writes DataFrames one after another into one Parquet file (a row group each), as ``DataFrame.to_parquet``
    writes their concatenation: the same column types, pandas metadata included.

    A frame that needs a wider type than the file so far (a JSON Lines column null at first, then text; whole
    numbers, then fractions; a column that first appears later) has what was written rewritten once with the
    widened types; a column holding two kinds of values (numbers and text) is a DataError."""

    def __init__(self, path: Path, source: str):
        self.path, self.source = path, source
        self.schema = None
        self.rows = 0
        self._writer = None

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names) if self.schema is not None else []

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self._writer is None and exc[0] is None:
            self.write(pd.DataFrame())
        if self._writer is not None:
            self._writer.close()

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._mixed_types():
            table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self.schema = table.schema
            self._writer = pq.ParquetWriter(self.path, self.schema)
        elif not table.schema.equals(self.schema):
            with self._mixed_types():
                unified = pa.unify_schemas([self.schema, table.schema], promote_options="permissive")
            if not unified.equals(self.schema, check_metadata=False):
                self._widen(unified)
        with self._mixed_types():
            self._writer.write_table(self._conformed(table))
        self.rows += table.num_rows

    def _conformed(self, table):
        """``table`` with the file's columns, in its order and types (a missing column: nulls)."""
        import pyarrow as pa

        columns = [table[field.name].cast(field.type) if field.name in table.column_names
                   else pa.nulls(table.num_rows, field.type) for field in self.schema]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _widen(self, unified) -> None:
        """Rewrite the rows written so far with the widened schema ``unified`` (without pandas' metadata: it
        described the narrower types)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        unified = unified.remove_metadata()
        self._writer.close()
        previous = self.path.with_suffix(".previous")
        self.path.replace(previous)
        self.schema, self._writer = unified, pq.ParquetWriter(self.path, unified)
        for group in pq.ParquetFile(previous, pre_buffer=False).iter_batches():
            with self._mixed_types():
                self._writer.write_table(self._conformed(pa.Table.from_batches([group])))
        previous.unlink()

    @contextmanager
    def _mixed_types(self):
        try:
            yield
        except (ValueError, TypeError, NotImplementedError) as err:  # pyarrow's ArrowInvalid / ArrowTypeError
            raise DataError(f"data.source: {self.source}: a column mixes types across rows or files and cannot be "
                            f"stored: {_first_line(err)}") from None


def load_dataset_frame(storage: Storage, dataset: Dataset) -> pd.DataFrame:
    """The snapshot an earlier ingest wrote, as one DataFrame (every row in memory: small data and tests)."""
    return pd.read_parquet(snapshot_file(storage, dataset))


def snapshot_file(storage: Storage, dataset: Dataset) -> Path:
    """A local path of the snapshot's Parquet file (the file itself, or a cached download from S3)."""
    return storage.local_dir(dataset.key) / "data.parquet"


def snapshot_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(path).schema_arrow.names)


def snapshot_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
