"""Reading a dataset in batches: the data stages hold one batch of rows at a time, never the whole dataset.

Reads Parquet files (an ingested snapshot, a Parquet source) record batch by record batch; writes nothing.
A batch holds at most ``data.batch_rows`` rows and, when rows are wide (long documents, conversations),
fewer: about ``BATCH_BYTES`` of (uncompressed) data, so memory follows the batch, not the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

BATCH_ROWS = 50_000  # default data.batch_rows: rows per batch (tens of MB for short texts)
BATCH_BYTES = 32 << 20  # and about this much uncompressed data per batch, whatever the row width
MIN_BATCH_ROWS = 100  # never fewer rows per batch than this (a batch of huge rows still progresses)


def rows_per_batch(bytes_per_row: float, batch_rows: int) -> int:
    """Rows per batch: ``batch_rows``, fewer when that many rows would exceed BATCH_BYTES."""
    if bytes_per_row <= 0:
        return batch_rows
    return max(min(batch_rows, MIN_BATCH_ROWS), min(batch_rows, int(BATCH_BYTES / bytes_per_row)))


def parquet_batches(path: Path, batch_rows: int | None, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """A Parquet file's rows as DataFrames of at most ``batch_rows`` rows (None: one frame), read as
    ``pandas.read_parquet`` reads the whole file, index = row position. ``columns``: only these. Yields one empty
    frame for a file without rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if batch_rows is None:
        yield pd.read_parquet(path, columns=columns)
        return
    file = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering keeps every row group read so far: memory grows
    as_read = FrameReading.of(file)
    start = 0
    for batch in file.iter_batches(batch_size=rows_per_batch(_bytes_per_row(file, columns), batch_rows),
                                   columns=columns, use_pandas_metadata=True):
        frame = as_read.frame(pa.Table.from_batches([batch]))
        frame.index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        yield frame
    if start == 0:
        yield pd.read_parquet(path, columns=columns)


class FrameReading:
    """How a Parquet file's rows become DataFrames, batch by batch, as ``pandas.read_parquet`` reads the whole file:
    integer columns with a null anywhere in the file as float64 (whole-file reads turn them into floats, so every
    batch does), the file's pandas metadata. Picklable: Ray workers convert the batches they read the same way."""

    def __init__(self, floats: frozenset[str], metadata: dict | None):
        self.floats, self.metadata = floats, metadata

    @classmethod
    def of(cls, file) -> FrameReading:
        """The reading of an open ``pyarrow.parquet.ParquetFile`` (its footer: no rows are read)."""
        return cls(frozenset(_ints_with_nulls(file)), file.schema_arrow.metadata)

    def frame(self, table) -> pd.DataFrame:
        """An arrow table of the file's rows (some of its columns) as a DataFrame (index: 0, 1, ...)."""
        import pyarrow as pa

        for name in self.floats & set(table.column_names):
            table = table.set_column(table.column_names.index(name), name, table[name].cast(pa.float64()))
        return table.replace_schema_metadata(self.metadata).to_pandas()


def _bytes_per_row(file, columns: list[str] | None) -> float:
    """Uncompressed bytes a row of the read columns takes, on average (from the row groups' metadata)."""
    meta, total = file.metadata, 0
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for i in range(row_group.num_columns):
            chunk = row_group.column(i)
            if columns is None or chunk.path_in_schema.split(".")[0] in columns:
                total += chunk.total_uncompressed_size
    return total / max(meta.num_rows, 1)


def _ints_with_nulls(file) -> set[str]:
    """Integer columns holding a null somewhere in the file (by the row groups' statistics)."""
    import pyarrow as pa

    found = set()
    for field in file.schema_arrow:
        if not pa.types.is_integer(field.type):
            continue
        counts = []
        for group in range(file.metadata.num_row_groups):
            column = _leaf(file.metadata.row_group(group), field.name)
            stats = column.statistics if column is not None else None
            counts.append(stats.null_count if stats is not None and stats.has_null_count else None)
        if None in counts:  # no statistics: count in the column itself (8 bytes a row, read once)
            counts = [file.read(columns=[field.name]).column(0).null_count]
        if sum(counts):
            found.add(field.name)
    return found


def _leaf(row_group, name: str):
    for i in range(row_group.num_columns):
        column = row_group.column(i)
        if column.path_in_schema == name:
            return column
    return None
