"""Preprocess: split the snapshot and tokenize each split with the base model's fast tokenizer.

Reads ``datasets/<fp>/data.parquet``; writes ``prepared/<key>/{train,validation,test}``
(HF ``datasets`` arrow folders) and ``prepared/<key>/meta.json``. The key covers the
dataset fingerprint, the data and model settings, and this module's version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from tuneline.base_models import resolve_base_model
from tuneline.config import FinetuneConfig, Task
from tuneline.fingerprints import content_key, folder_fingerprint
from tuneline.ingest import load_dataset_frame
from tuneline.splits import SPLITS, assign_splits
from tuneline.storage import Storage
from tuneline.targets import fit_scaling, parse_targets, scale

PREPROCESS_VERSION = 1


def label_names(frame: pd.DataFrame, cfg: FinetuneConfig) -> list[str] | None:
    """Labels in id order: as configured, else sorted from the data; None for regression."""
    if cfg.task == Task.regression:
        return None
    return list(cfg.data.labels) if cfg.data.labels else sorted(frame[cfg.data.label_column].astype(str).unique())


def prepare_key(dataset: dict, cfg: FinetuneConfig) -> str:
    base = folder_fingerprint(str(resolve_base_model(cfg.model.base)))
    task = [cfg.task.value] if cfg.task != Task.classification else []  # classification keys stay as they were
    return content_key(dataset["fingerprint"], cfg.data, cfg.model.max_length, base, PREPROCESS_VERSION, *task)


def tokenize_split(frame: pd.DataFrame, cfg: FinetuneConfig, tokenizer, label_ids: dict[str, int] | None,
                   scaling: dict | None = None):
    """A ``datasets.Dataset`` with input_ids / attention_mask / labels (class ids, or scaled floats) for one split."""
    from datasets import Dataset

    data = cfg.data
    columns = {"text": frame[data.text_column].astype(str).tolist()}
    if data.text_pair_column:
        columns["text_pair"] = frame[data.text_pair_column].astype(str).tolist()
    if label_ids is None:  # regression: the scaled numeric target
        columns["labels"] = scale(parse_targets(frame[data.label_column]), scaling).astype("float32").tolist()
    else:
        columns["labels"] = [label_ids[str(v)] for v in frame[data.label_column]]
    dataset = Dataset.from_dict(columns)

    def encode(batch):
        pair = batch.get("text_pair")
        return tokenizer(batch["text"], pair, truncation=True, max_length=cfg.model.max_length)

    return dataset.map(encode, batched=True, remove_columns=[c for c in columns if c != "labels"])


def prepare_splits(storage: Storage, dataset: dict, cfg: FinetuneConfig) -> dict:
    """Split + tokenize once per (dataset, settings); returns the prepared key, labels and counts."""
    if cfg.task == Task.causal_lm:  # prompt/response rows, response-only loss mask
        from tuneline.instructions import prepare_instruction_splits

        return prepare_instruction_splits(storage, dataset, cfg)
    from transformers import AutoTokenizer

    prefix = f"prepared/{prepare_key(dataset, cfg)}"
    if cfg.cache and storage.exists(f"{prefix}/meta.json"):
        return {**storage.read_json(f"{prefix}/meta.json"), "reused": True}
    frame = load_dataset_frame(storage, dataset)
    regression = cfg.task == Task.regression
    splits = assign_splits(frame, cfg.data, numeric_target=regression)
    labels = label_names(frame, cfg)
    label_ids = None if regression else {name: i for i, name in enumerate(labels)}
    scaling = None
    if regression:  # statistics of the training split only, so nothing leaks from evaluation rows
        train_targets = parse_targets(frame.loc[splits == "train", cfg.data.label_column])
        scaling = fit_scaling(train_targets, cfg.data.scale_targets.value)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(cfg.model.base), use_fast=True)
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split in SPLITS:
            rows = frame[splits == split]
            counts[split] = len(rows)
            if len(rows):
                tokenize_split(rows, cfg, tokenizer, label_ids, scaling).save_to_disk(str(Path(tmp) / split))
        storage.put_dir(Path(tmp), prefix)
    meta = {"key": prefix, "uri": storage.uri(prefix), "labels": labels, "counts": counts,
            "dataset_fingerprint": dataset["fingerprint"], "task": cfg.task.value}
    if regression:
        meta["target_scaling"] = scaling
    storage.write_json(f"{prefix}/meta.json", meta)
    return {**meta, "reused": False}


def load_split(storage: Storage, prepared: dict, split: str):
    """One tokenized split as a ``datasets.Dataset``, or None when the split is empty."""
    from datasets import load_from_disk

    if not prepared["counts"].get(split):
        return None
    return load_from_disk(str(storage.local_dir(f"{prepared['key']}/{split}")))


def load_test_split(storage: Storage, prepared: dict):
    """The tokenized test split; a clear error when it is empty (nothing to evaluate on)."""
    from tuneline.errors import DataError

    test_set = load_split(storage, prepared, "test")
    if test_set is None:
        raise DataError("the test split is empty: raise data.test_fraction or add rows with split 'test'")
    return test_set
