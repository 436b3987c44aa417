"""Cache keys: a stage's stored output is reused only for the same objective, stage version and libraries.

The first test reproduces a defect of the old layout: the validation report was keyed without the task
kind, so a causal_lm run on data first validated as classification reused the failed verdict.
"""

from __future__ import annotations

import json

import pytest

from tuneline import keys
from tuneline.config import parse_config
from tuneline.data.ingest import ingest_dataset
from tuneline.errors import ValidationFailed
from tuneline.results import Prepared
from tuneline.stages.validate import report_key, validate_dataset
from tuneline.storage import LocalStorage
from tuneline.training.launcher import train_key


def instruction_rows(tmp_path):
    rows = [{"prompt": f"What is {i} plus {i}?", "response": f"{2 * i}."} for i in range(40)]
    source = tmp_path / "instructions.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return source


def test_validation_verdict_is_not_reused_across_objectives(tmp_path):
    source = instruction_rows(tmp_path)
    storage = LocalStorage(tmp_path / "store")
    dataset = ingest_dataset(str(source), storage)
    as_classification = parse_config({"name": "m", "data": {"source": str(source)}})
    with pytest.raises(ValidationFailed, match="'text'"):
        validate_dataset(storage, dataset, as_classification)
    as_causal_lm = parse_config({"name": "m", "task": "causal_lm", "data": {"source": str(source)}})
    checked = validate_dataset(storage, dataset, as_causal_lm)
    assert checked.success and not checked.reused
    assert report_key(dataset, as_causal_lm) != report_key(dataset, as_classification)


def test_every_cache_key_changes_with_the_stage_version_objective_and_libraries(monkeypatch):
    base = keys.cache_key(keys.EVALUATE_VERSION, "classification", "model-fp", "prepared-key")
    assert base == keys.cache_key(keys.EVALUATE_VERSION, "classification", "model-fp", "prepared-key")
    assert base != keys.cache_key(keys.EVALUATE_VERSION + 1, "classification", "model-fp", "prepared-key")
    assert base != keys.cache_key(keys.EVALUATE_VERSION, "regression", "model-fp", "prepared-key")
    versions = dict(keys.library_versions())
    assert set(versions) == {"tuneline", "transformers", "torch", "datasets", "peft"}
    monkeypatch.setattr(keys, "library_versions", lambda: {**versions, "transformers": "0.0.0"})
    assert base != keys.cache_key(keys.EVALUATE_VERSION, "classification", "model-fp", "prepared-key")


def test_train_key_covers_precision_and_early_stopping_cadence(tmp_path, monkeypatch):
    prepared = Prepared(key="prepared/abc", uri="file:///x", objective="classification", dataset_fingerprint="fp",
                        counts={"train": 10, "validation": 2, "test": 2}, fitted={"labels": ["a", "b"]})
    raw = {"name": "m", "data": {"source": "d.csv"}, "training": {"early_stopping_patience": 2}}
    every_200 = train_key(prepared, parse_config(raw))
    assert every_200 == train_key(prepared, parse_config(raw))
    raw["training"]["checkpoint_every_steps"] = 50
    assert train_key(prepared, parse_config(raw)) != every_200, "evaluation cadence decides early stopping"
    raw["training"]["checkpoint_every_steps"] = 200
    raw["training"]["precision"] = "bf16"
    assert train_key(prepared, parse_config(raw)) != every_200, "precision changes the weights"
    one = train_key(prepared, parse_config({**raw, "training": {"early_stopping_patience": 2}}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # unset training.processes: one per GPU
    assert train_key(prepared, parse_config({**raw, "training": {"early_stopping_patience": 2}})) != one
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    two_cpu = train_key(prepared, parse_config({**raw, "training": {"early_stopping_patience": 2, "processes": 2}}))
    assert two_cpu != one, "the number of processes changes the effective batch"
