"""Read and write the encoded splits of the prepare stage (``prepared/<key>/{train,validation,test}``).

Reads arrow folders from the storage root (downloaded once when the root is S3). ``SplitWriter`` writes one
such folder batch by batch, in the layout ``datasets.Dataset.save_to_disk`` writes (arrow shards of at most
500 MB, ``state.json``, ``dataset_info.json``; ``datasets.load_from_disk`` reads it), without ever holding
the whole split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from tuneline.data.splits import SPLITS
from tuneline.errors import DataError
from tuneline.results import Prepared
from tuneline.storage import Storage


def load_split(storage: Storage, prepared: Prepared, split: str):
    """One encoded split as a ``datasets.Dataset``, or None when the split is empty."""
    from datasets import load_from_disk

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    if not prepared.counts.get(split):
        return None
    return load_from_disk(str(storage.local_dir(f"{prepared.key}/{split}")))


def require_split(storage: Storage, prepared: Prepared, split: str):
    """The encoded split; a clear error when it is empty (nothing to score on)."""
    rows = load_split(storage, prepared, split)
    if rows is None:
        raise DataError(f"the {split} split is empty: raise data.{split}_fraction or add rows with split '{split}'")
    return rows


ROWS_PER_RECORD_BATCH = 1000  # the arrow files' record batches (``datasets``' default writer batch size)


class SplitWriter:
    """One split's folder, written encoded batch (a ``datasets.Dataset``) after encoded batch, in row order.

    The first batch fixes the features (later ones are cast to them, as ``concatenate_datasets`` would); a shard
    closes past ``datasets.config.MAX_SHARD_SIZE``. The files depend on the rows alone, never on how they came
    in batches: rows go out in record batches of ROWS_PER_RECORD_BATCH, and the folder's fingerprint
    (``state.json``) is a hash of its arrow files. So any batch size, encoding processes or Ray workers write
    the same bytes for the same rows."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.rows = 0
        self._first = None  # the first batch: features, format and info of the folder
        self._writer = None
        self._shards: list[Path] = []
        self._pending: list = []  # arrow tables not yet written: fewer than ROWS_PER_RECORD_BATCH rows in all
        self._pending_rows = 0

    def write(self, rows) -> None:
        import pyarrow as pa

        if not len(rows):
            return
        if self._first is None:
            self._first = rows
            self.folder.mkdir(parents=True, exist_ok=True)
        self._pending.append(rows.with_format("arrow")[:])
        self._pending_rows += len(rows)
        self.rows += len(rows)
        if self._pending_rows < ROWS_PER_RECORD_BATCH:
            return
        table = pa.concat_tables(self._pending)
        full = len(table) - len(table) % ROWS_PER_RECORD_BATCH
        self._write_table(table.slice(0, full))
        rest = table.slice(full)
        self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)

    def _write_table(self, table) -> None:
        from datasets import config
        from datasets.arrow_writer import ArrowWriter
        from datasets.utils.py_utils import convert_file_size_to_int

        for start in range(0, len(table), ROWS_PER_RECORD_BATCH):  # a shard may close after any record batch
            if self._writer is None:
                self._shards.append(self.folder / f"shard-{len(self._shards)}.arrow")
                self._writer = ArrowWriter(features=self._first.features, path=str(self._shards[-1]),
                                           embed_local_files=True, writer_batch_size=ROWS_PER_RECORD_BATCH)
            self._writer.write_table(table.slice(start, ROWS_PER_RECORD_BATCH))
            if self._writer._num_bytes > convert_file_size_to_int(config.MAX_SHARD_SIZE):
                self._close_shard()

    def _close_shard(self) -> None:
        self._writer.finalize()
        self._writer.close()
        self._writer = None

    def close(self) -> bool:
        """Write the last rows, name the shards and write the folder's state; False (nothing written) when no
        row came."""
        import pyarrow as pa

        if self._pending:
            self._write_table(pa.concat_tables(self._pending))
            self._pending = []
        if self._writer is not None:
            self._close_shard()
        if self._first is None:
            return False
        names = [f"data-{i:05d}-of-{len(self._shards):05d}.arrow" for i in range(len(self._shards))]
        content = hashlib.blake2b(digest_size=8)
        for shard, name in zip(self._shards, names):
            with shard.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    content.update(block)
            shard.rename(self.folder / name)
        first = self._first
        state = {key: first.__dict__[key] for key in
                 ("_format_columns", "_format_kwargs", "_format_type", "_output_all_columns")}
        state["_fingerprint"] = content.hexdigest()
        state["_split"] = str(first.split) if first.split is not None else None
        state["_data_files"] = [{"filename": name} for name in names]
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        info = asdict(first.info)
        (self.folder / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2),
                                                      encoding="utf-8")
        return True
