"""Evaluate: score a trained model on the held-out test split and apply the gate.

Reads ``candidates/<key>/model`` and ``prepared/<key>/test``; writes
``evaluations/<key>/metrics.json`` (metrics, per-class report, confusion matrix,
gate decision).
"""

from __future__ import annotations

from pathlib import Path

from tuneline.config import FinetuneConfig
from tuneline.errors import DataError
from tuneline.fingerprints import content_key
from tuneline.metrics import classification_metrics
from tuneline.preprocess import load_split
from tuneline.storage import Storage


def predict_label_ids(model_dir: Path, dataset, batch_size: int = 64) -> list[int]:
    """Arg-max class ids for every row of a tokenized dataset."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    inputs = dataset.remove_columns([c for c in dataset.column_names if c == "labels"])
    loader = DataLoader(inputs, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
    predictions: list[int] = []
    with torch.inference_mode():
        for batch in loader:
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            predictions.extend(logits.argmax(dim=-1).tolist())
    return predictions


def gate_decision(metrics: dict, cfg: FinetuneConfig) -> dict:
    metric = cfg.evaluation.metric.value
    value = metrics[metric]
    return {
        "metric": metric,
        "value": value,
        "minimum": cfg.evaluation.minimum,
        "passed": value >= cfg.evaluation.minimum,
    }


def evaluate_candidate(storage: Storage, prepared: dict, trained: dict, cfg: FinetuneConfig) -> dict:
    """Test-split metrics of the candidate plus the gate decision."""
    prefix = f"evaluations/{content_key(trained['key'], prepared['key'], cfg.evaluation)}"
    if storage.exists(f"{prefix}/metrics.json"):
        return {**storage.read_json(f"{prefix}/metrics.json"), "reused": True}
    test_set = load_split(storage, prepared, "test")
    if test_set is None:
        raise DataError("the test split is empty: raise data.test_fraction or add rows with split 'test'")
    model_dir = storage.local_dir(f"{trained['key']}/model")
    predicted = predict_label_ids(model_dir, test_set)
    metrics = classification_metrics(test_set["labels"], predicted, prepared["labels"])
    result = {"key": prefix, "metrics": metrics, "gate": gate_decision(metrics, cfg)}
    storage.write_json(f"{prefix}/metrics.json", result)
    return {**result, "reused": False}
