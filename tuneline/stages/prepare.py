"""Prepare: split the snapshot, fit what is learnt from the training split, encode each split.

Reads ``datasets/<fp>/data.parquet``; writes ``prepared/<key>/{train,validation,test}`` (HF
``datasets`` arrow folders) and ``prepared/<key>/meta.json``. The objective derives each row's
input and stratum, fits its parameters (labels, target scaling) and encodes the rows with the
base model's tokenizer. The key covers the dataset, the data and model settings, the base
model's files, the objective, this stage's version and the library versions. ``prepare_rows``
encodes new data for a registered version instead: every row in one split, the version's
fitted values and tokenizer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from tuneline import keys, objectives
from tuneline.config import FinetuneConfig
from tuneline.data.ingest import load_dataset_frame
from tuneline.data.splits import SPLITS, assign_splits
from tuneline.models.base import ResolvedBase, check_max_length, resolve_base
from tuneline.results import Dataset, Prepared
from tuneline.storage import Storage


def prepare_key(dataset: Dataset, cfg: FinetuneConfig, base: ResolvedBase) -> str:
    return keys.cache_key(keys.PREPARE_VERSION, cfg.task.value, dataset.fingerprint, cfg.data, cfg.model.max_length,
                          base.identity)


def split_rows(frame, cfg: FinetuneConfig):
    """The split of each raw row under this config: the objective derives inputs and strata, then the seeded draw."""
    return assign_splits(objectives.get(cfg.task.value).derive(frame, cfg), cfg.data)


def prepare_splits(storage: Storage, dataset: Dataset, cfg: FinetuneConfig) -> Prepared:
    """Split + fit + encode once per (dataset, objective, settings); returns where the splits are."""
    objective = objectives.get(cfg.task.value)
    base = resolve_base(cfg.model, cfg.storage_root())
    check_max_length(base, cfg.model.max_length)  # a config error before any work, never retried
    prefix = keys.prepared_prefix(prepare_key(dataset, cfg, base))
    if cfg.cache and storage.exists(keys.meta(prefix)):
        return Prepared(**storage.read_json(keys.meta(prefix)), reused=True)
    frame = objective.derive(load_dataset_frame(storage, dataset), cfg)
    splits = assign_splits(frame, cfg.data)
    fitted = objective.fit(frame[splits == "train"], frame, cfg)
    return encode_splits(storage, prefix, dataset, frame, splits, fitted, base.folder, cfg)


def prepare_rows(storage: Storage, dataset: Dataset, cfg: FinetuneConfig, fitted: dict, model_folder: Path,
                 model_fingerprint: str, split: str = "test") -> Prepared:
    """Every row of a dataset as one split, encoded with values fitted before (a registered version's labels,
    target scaling) and that model's tokenizer: no split drawn, nothing refitted. Stored once per
    (dataset, settings, fitted values, model)."""
    objective = objectives.get(cfg.task.value)
    prefix = keys.prepared_prefix(keys.cache_key(keys.PREPARE_VERSION, objective.name, dataset.fingerprint, cfg.data,
                                                 cfg.model.max_length, model_fingerprint, fitted, split))
    if cfg.cache and storage.exists(keys.meta(prefix)):
        return Prepared(**storage.read_json(keys.meta(prefix)), reused=True)
    frame = objective.derive(load_dataset_frame(storage, dataset), cfg)
    one_split = pd.Series(split, index=frame.index)
    return encode_splits(storage, prefix, dataset, frame, one_split, fitted, model_folder, cfg)


def encode_splits(storage: Storage, prefix: str, dataset: Dataset, frame, splits, fitted: dict, tokenizer_folder: Path,
                  cfg: FinetuneConfig) -> Prepared:
    """Encode a derived frame's rows split by split (``splits``: a split name per row) with ``fitted`` and the
    tokenizer in ``tokenizer_folder``; store the splits and their meta under ``prefix``."""
    objective = objectives.get(cfg.task.value)
    tokenizer = objective.tokenizer(tokenizer_folder)
    encoded = {split: objective.encode(frame[splits == split], cfg, tokenizer, fitted)
               for split in SPLITS if (splits == split).any()}
    stats = objective.encoded_stats(encoded, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        for split, rows in encoded.items():
            rows.save_to_disk(str(Path(tmp) / split))
        storage.put_dir(Path(tmp), prefix)
    prepared = Prepared(key=prefix, uri=storage.uri(prefix), objective=objective.name,
                        dataset_fingerprint=dataset.fingerprint,
                        counts={split: int((splits == split).sum()) for split in SPLITS}, fitted=fitted, stats=stats)
    storage.write_json(keys.meta(prefix), prepared.stored())
    return prepared
