"""Read the encoded splits the prepare stage wrote (``prepared/<key>/{train,validation,test}``).

Reads arrow folders from the storage root (downloaded once when the root is S3); writes nothing.
"""

from __future__ import annotations

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
