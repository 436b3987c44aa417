"""Evaluate: score the candidate and the current champion on the same test split; decide the gate.

Reads ``candidates/<key>/model``, ``prepared/<key>/test`` and, when the configured
alias exists, the champion's registered model; writes ``evaluations/<key>/metrics.json``
(both sets of metrics, per-class report, confusion matrix, gate decision).
"""

from __future__ import annotations

from pathlib import Path

from tuneline.config import FinetuneConfig, lower_is_better
from tuneline.fingerprints import content_key
from tuneline.loading import load_model_folder
from tuneline.metrics import classification_metrics, headline, regression_metrics
from tuneline.preprocess import load_test_split
from tuneline.registry import Registry, version_dir
from tuneline.storage import Storage
from tuneline.targets import CONFIG_KEY, unscale


def predict(model_dir: Path, dataset, batch_size: int = 64) -> list:
    """Per row of a tokenized dataset: the arg-max class id, or (regression) the value in original units."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model_folder(model_dir)
    model = model.to(device).eval()
    regression = getattr(model.config, "problem_type", None) == "regression"
    inputs = dataset.remove_columns([c for c in dataset.column_names if c == "labels"])
    loader = DataLoader(inputs, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
    predictions: list = []
    with torch.inference_mode():
        for batch in loader:
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            predictions.extend(logits[:, 0].float().tolist() if regression else logits.argmax(dim=-1).tolist())
    if regression:
        return unscale(predictions, getattr(model.config, CONFIG_KEY, None)).tolist()
    return predictions


def find_champion(storage: Storage, cfg: FinetuneConfig) -> dict | None:
    """The version at ``evaluation.champion_alias`` (labels, model fingerprint), or None."""
    manifest = Registry(storage).aliased_manifest(cfg.name, cfg.evaluation.champion_alias)
    if manifest is None:
        return None
    return {
        "alias": cfg.evaluation.champion_alias,
        "version": manifest["version"],
        "labels": manifest.get("metrics", {}).get("confusion_matrix", {}).get("labels"),
        "model_fingerprint": manifest["model_fingerprint"],
    }


def gate_decision(metrics: dict, champion: dict | None, cfg: FinetuneConfig) -> dict:
    """Passed = within the bound; promote = passed and beats the champion by more than the margin.

    ``champion``: None, or ``{alias, version}`` plus ``is_candidate`` (it is this very model), ``metrics``
    (scored on the same test split) or ``why`` it could not be compared. Every task's gate.

    Higher-is-better metrics must reach ``evaluation.minimum`` and win by being larger; lower-is-better
    ones (mse, rmse, mae) must stay at or below ``evaluation.maximum`` (if set) and win by being smaller.
    """
    gate = cfg.evaluation
    value = metrics[gate.metric.value]
    lower = lower_is_better(gate.metric)
    decision = {"metric": gate.metric.value, "value": value, "direction": "lower" if lower else "higher",
                "minimum": None if lower else gate.minimum, "maximum": gate.maximum if lower else None,
                "margin": gate.margin, "champion": None}
    if lower:
        decision["passed"] = gate.maximum is None or value <= gate.maximum
        bound = f"above the maximum {gate.maximum}"
    else:
        decision["passed"] = value >= gate.minimum
        bound = f"below the minimum {gate.minimum}"
    if not decision["passed"]:
        return {**decision, "promote": False, "decision": "reject",
                "reason": f"{gate.metric.value} {value:.4f} is {bound}"}
    if champion is None:
        return {**decision, "promote": True, "decision": "promote", "reason": "no champion yet"}
    decision["champion"] = {k: champion[k] for k in ("alias", "version")}
    if champion.get("is_candidate"):
        return {**decision, "promote": True, "decision": "promote",
                "reason": f"the candidate is already the champion (v{champion['version']})"}
    if champion.get("metrics") is None:
        return {**decision, "promote": False, "decision": "keep",
                "reason": f"champion v{champion['version']} is not comparable ({champion['why']}); promote by hand"}
    best = champion["metrics"][gate.metric.value]
    decision["champion"]["value"] = best
    wins = value < best - gate.margin if lower else value > best + gate.margin
    verdict = "beats" if wins else "does not beat"
    return {**decision, "promote": verdict == "beats", "decision": "promote" if verdict == "beats" else "keep",
            "reason": f"{value:.4f} {verdict} champion v{champion['version']} ({best:.4f}) by more than {gate.margin}"}


def score_model(storage: Storage, model_prefix: str, model_fingerprint: str, prepared: dict,
                reuse: bool = True) -> tuple[dict, bool]:
    """Test-split metrics of one model, computed once per (model files, prepared data); (metrics, reused)."""
    key = f"evaluations/{content_key(model_fingerprint, prepared['key'])}/metrics.json"
    if reuse and storage.exists(key):
        return storage.read_json(key), True
    test_set = load_test_split(storage, prepared)
    predicted = predict(storage.local_dir(model_prefix), test_set)
    if prepared.get("task") == "regression":  # both sides in the target's original units
        metrics = regression_metrics(unscale(test_set["labels"], prepared.get("target_scaling")), predicted)
    else:
        metrics = classification_metrics(test_set["labels"], predicted, prepared["labels"])
    storage.write_json(key, metrics)
    return metrics, False


def evaluate_candidate(storage: Storage, prepared: dict, trained: dict, cfg: FinetuneConfig) -> dict:
    """Metrics of the candidate and of the champion on the same test split, plus the gate decision."""
    if cfg.task.value == "causal_lm":  # perplexity before/after, generations
        from tuneline.causal_lm import evaluate_causal_candidate

        return evaluate_causal_candidate(storage, prepared, trained, cfg)
    metrics, reused = score_model(storage, f"{trained['key']}/model", trained["model_fingerprint"], prepared,
                                  reuse=cfg.cache)
    champion = find_champion(storage, cfg)
    if champion and champion["model_fingerprint"] == trained["model_fingerprint"]:
        champion.update(is_candidate=True, metrics=metrics)
    elif champion and champion["labels"] == prepared["labels"]:
        champion["metrics"], _ = score_model(storage, f"{version_dir(cfg.name, champion['version'])}/model",
                                             champion["model_fingerprint"], prepared)
    elif champion:
        champion["why"] = f"it predicts other labels: {champion['labels']}"
    return {
        "metrics": metrics,
        "champion_metrics": headline(champion["metrics"]) if champion and champion.get("metrics") else None,
        "gate": gate_decision(metrics, champion, cfg),
        "reused": reused,
    }
