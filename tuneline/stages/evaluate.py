"""Evaluate: score the candidate, its reference model and the current champion on the same test split.

Reads ``candidates/<key>/model``, ``prepared/<key>/test`` and, when the configured alias exists,
the champion's registered model; writes ``evaluations/<key>/metrics.json`` per (model files,
prepared data, split, objective, stage version): every model is scored once. The objective scores
(the same metrics training reports) and says whether the champion is comparable; the gate
(``tuneline.stages.gate``) decides.
"""

from __future__ import annotations

from pathlib import Path

from tuneline import keys, objectives
from tuneline.config import FinetuneConfig
from tuneline.data.encoded import require_split
from tuneline.metrics import headline
from tuneline.registry import Registry
from tuneline.results import Evaluation, Prepared, Trained
from tuneline.stages.gate import gate_decision
from tuneline.storage import Storage


def score_model(storage: Storage, model_dir: Path, model_fingerprint: str, prepared: Prepared, cfg: FinetuneConfig,
                split: str = "test", reuse: bool = True) -> tuple[dict, bool]:
    """A model folder's metrics on one split, computed once per (model files, prepared data, settings)."""
    objective = objectives.get(prepared.objective)
    key = keys.evaluation_metrics(keys.cache_key(keys.EVALUATE_VERSION, objective.name, model_fingerprint,
                                                 prepared.key, split, objective.score_settings(cfg)))
    if reuse and storage.exists(key):
        return storage.read_json(key), True
    metrics = objective.score(model_dir, require_split(storage, prepared, split), prepared, cfg, split)
    storage.write_json(key, metrics)
    return metrics, False


def reference_scores(storage: Storage, prepared: Prepared, cfg: FinetuneConfig) -> dict | None:
    """The objective's reference model (causal_lm: the base) on the test split, or None."""
    reference = objectives.get(prepared.objective).reference_model(cfg)
    if reference is None:
        return None
    scores, _ = score_model(storage, reference.folder, reference.identity, prepared, cfg)
    return scores


def champion_scores(storage: Storage, prepared: Prepared, trained: Trained, cfg: FinetuneConfig,
                    reference: dict | None) -> dict | None:
    """The version at ``evaluation.champion_alias``: ``{alias, version}`` plus ``is_candidate``, its ``metrics``
    on this test split, or ``why`` it cannot be compared; None when the alias does not exist."""
    manifest = Registry(storage).aliased_manifest(cfg.name, cfg.evaluation.champion_alias)
    if manifest is None:
        return None
    objective = objectives.get(prepared.objective)
    champion = {"alias": cfg.evaluation.champion_alias, "version": manifest["version"]}
    trained_from = (manifest.get("training") or {}).get("model_fingerprint")  # a merged version's adapter
    if trained.model_fingerprint in (manifest["model_fingerprint"], trained_from):
        return {**champion, "is_candidate": True}
    why = objective.champion_problem(manifest, prepared, cfg)
    if why:
        return {**champion, "metrics": None, "why": why}
    folder = storage.local_dir(f"{keys.version_dir(cfg.name, manifest['version'])}/model")
    scores, _ = score_model(storage, folder, manifest["model_fingerprint"], prepared, cfg)
    return {**champion, "metrics": objective.with_reference(scores, reference)}


def evaluate_candidate(storage: Storage, prepared: Prepared, trained: Trained, cfg: FinetuneConfig) -> Evaluation:
    """Metrics of the candidate (beside its reference) and of the champion on the same test split; the gate."""
    objective = objectives.get(prepared.objective)
    reference = reference_scores(storage, prepared, cfg)
    scores, reused = score_model(storage, storage.local_dir(keys.candidate_model(trained.key)),
                                 trained.model_fingerprint, prepared, cfg, reuse=cfg.cache)
    metrics = objective.with_reference(scores, reference)
    champion = champion_scores(storage, prepared, trained, cfg, reference)
    if champion and champion.get("is_candidate"):
        champion["metrics"] = metrics
    return Evaluation(
        metrics=metrics,
        champion_metrics=headline(champion["metrics"]) if champion and champion.get("metrics") else None,
        gate=gate_decision(metrics, champion, cfg),
        reused=reused,
    )
