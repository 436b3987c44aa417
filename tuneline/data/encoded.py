"""Read and write the encoded splits of the prepare stage (``prepared/<key>/{train,validation,test}``).

Reads arrow folders from the storage root (downloaded once when the root is S3). ``SplitWriter`` writes one
such folder batch by batch, in the layout ``datasets.Dataset.save_to_disk`` writes (arrow shards of at most
500 MB, ``state.json``, ``dataset_info.json``; ``datasets.load_from_disk`` reads it), without ever holding
the whole split.
"""

from __future__ import annotations

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


class SplitWriter:
    """One split's folder, written encoded batch (a ``datasets.Dataset``) after encoded batch, in row order.

    The first batch fixes the features (later ones are cast to them, as ``concatenate_datasets`` would);
    a shard closes past ``datasets.config.MAX_SHARD_SIZE``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.rows = 0
        self._first = None  # the first batch: features, format and info of the folder
        self._writer = None
        self._shards: list[Path] = []

    def write(self, rows) -> None:
        from datasets import config
        from datasets.arrow_writer import ArrowWriter
        from datasets.utils.py_utils import convert_file_size_to_int

        if not len(rows):
            return
        if self._first is None:
            self._first = rows
            self.folder.mkdir(parents=True, exist_ok=True)
        if self._writer is None:
            self._shards.append(self.folder / f"shard-{len(self._shards)}.arrow")
            self._writer = ArrowWriter(features=self._first.features, path=str(self._shards[-1]),
                                       embed_local_files=True)
        self._writer.write_table(rows.with_format("arrow")[:])
        self.rows += len(rows)
        if self._writer._num_bytes > convert_file_size_to_int(config.MAX_SHARD_SIZE):
            self._close_shard()

    def _close_shard(self) -> None:
        self._writer.finalize()
        self._writer.close()
        self._writer = None

    def close(self) -> bool:
        """Name the shards and write the folder's state; False (nothing written) when no row came."""
        if self._writer is not None:
            self._close_shard()
        if self._first is None:
            return False
        names = [f"data-{i:05d}-of-{len(self._shards):05d}.arrow" for i in range(len(self._shards))]
        for shard, name in zip(self._shards, names):
            shard.rename(self.folder / name)
        first = self._first
        state = {key: first.__dict__[key] for key in
                 ("_fingerprint", "_format_columns", "_format_kwargs", "_format_type", "_output_all_columns")}
        state["_split"] = str(first.split) if first.split is not None else None
        state["_data_files"] = [{"filename": name} for name in names]
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        info = asdict(first.info)
        (self.folder / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2),
                                                      encoding="utf-8")
        return True
