"""Register a gated candidate: build its manifest from the pipeline's results.

Reads the candidate's registrable folder (the objective says which: causal_lm may add merged
weights) and the earlier stages' results; writes a new registry version (see
``tuneline.registry``) unless the gate failed and the config does not keep failed candidates,
then moves the champion alias by compare-and-swap when the candidate won.
"""

from __future__ import annotations

from tuneline import objectives
from tuneline.config import FinetuneConfig
from tuneline.fingerprints import code_version
from tuneline.metrics import headline
from tuneline.models.base import resolve_base
from tuneline.registry import Registry
from tuneline.results import Dataset, Evaluation, Prepared, Registered, Trained
from tuneline.storage import Storage


def build_manifest(cfg: FinetuneConfig, dataset: Dataset, prepared: Prepared, trained: Trained,
                   evaluation: Evaluation, run_id: str | None) -> dict:
    base = resolve_base(cfg.model, cfg.storage_root())
    return {
        "task": cfg.task.value,
        "metrics": evaluation.metrics,
        "champion_metrics": evaluation.champion_metrics,
        "gate": evaluation.gate,
        "config": cfg.model_dump(mode="json"),
        "dataset_fingerprint": dataset.fingerprint,
        "fitted": prepared.fitted,
        "base_model": {"name": cfg.model.base, "fingerprint": base.identity, **base.source},
        "parent": base.source.get("parent"),  # lineage: the registered version this one continued from
        "training": trained.stored(),
        "code_version": code_version(),
        "run_id": run_id,
    }


def register_candidate(storage: Storage, cfg: FinetuneConfig, dataset: Dataset, prepared: Prepared,
                       trained: Trained, evaluation: Evaluation, run_id: str | None = None) -> Registered:
    """Register the candidate if it passed the gate (or failed ones are kept); promote it if it won.

    The promotion is a compare-and-swap against the champion the gate compared with: if
    the alias moved during the run, the new version is kept but not promoted.
    """
    gate = evaluation.gate
    if not gate["passed"] and not cfg.register.keep_failed:
        return Registered(registered=False, reason=gate["reason"])
    registry = Registry(storage)
    folder = objectives.get(prepared.objective).registrable_folder(storage, trained, cfg)
    manifest = registry.register(cfg.name, folder, build_manifest(cfg, dataset, prepared, trained, evaluation, run_id))
    promotion = {"moved": False, "reason": gate["reason"]}
    if gate["promote"]:
        champion = gate["champion"]["version"] if gate.get("champion") else None
        promotion = registry.promote(cfg.name, manifest["version"], cfg.evaluation.champion_alias,
                                     by=run_id, expected_version=champion)
    promoted_here = promotion.get("version") == manifest["version"]
    return Registered(
        registered=True,
        existing=manifest["existing"],
        version=manifest["version"],
        uri=manifest["uri"],
        metrics=headline(manifest["metrics"]),
        promoted=promotion["moved"] or promoted_here,
        alias=cfg.evaluation.champion_alias if promoted_here else None,
        promotion_note=promotion.get("reason"),
    )
