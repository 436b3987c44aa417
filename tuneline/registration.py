"""Register a gated candidate: build its manifest from the pipeline's results.

Reads the candidate model folder and the earlier stages' result dicts; writes a
new registry version (see ``tuneline.registry``) unless the gate failed and the
config does not keep failed candidates.
"""

from __future__ import annotations

from tuneline.base_models import resolve_base_model
from tuneline.causal_lm import registrable_folder
from tuneline.config import FinetuneConfig
from tuneline.fingerprints import code_version, folder_fingerprint
from tuneline.metrics import headline
from tuneline.registry import Registry
from tuneline.storage import Storage


def build_manifest(cfg: FinetuneConfig, dataset: dict, trained: dict, evaluation: dict, run_id: str | None) -> dict:
    return {
        "task": cfg.task.value,
        "metrics": evaluation["metrics"],
        "champion_metrics": evaluation.get("champion_metrics"),
        "gate": evaluation["gate"],
        "config": cfg.model_dump(mode="json"),
        "dataset_fingerprint": dataset["fingerprint"],
        "base_model": {
            "name": cfg.model.base,
            "fingerprint": folder_fingerprint(str(resolve_base_model(cfg.model.base))),
        },
        "training": {k: v for k, v in trained.items() if k not in ("reused",)},
        "code_version": code_version(),
        "run_id": run_id,
    }


def register_candidate(
    storage: Storage, cfg: FinetuneConfig, dataset: dict, trained: dict, evaluation: dict, run_id: str | None = None
) -> dict:
    """Register the candidate if it passed the gate (or failed ones are kept); promote it if it won.

    The promotion is a compare-and-swap against the champion the gate compared with: if
    the alias moved during the run, the new version is kept but not promoted.
    """
    gate = evaluation["gate"]
    if not gate["passed"] and not cfg.register.keep_failed:
        return {"registered": False, "reason": gate["reason"], "version": None, "uri": None, "promoted": False}
    registry = Registry(storage)
    manifest = registry.register(
        cfg.name,
        registrable_folder(storage, trained, cfg),  # causal_lm + register.merge: adapter + merged/
        build_manifest(cfg, dataset, trained, evaluation, run_id),
    )
    promotion = {"moved": False, "reason": gate["reason"]}
    if gate["promote"]:
        champion = gate["champion"]["version"] if gate.get("champion") else None
        promotion = registry.promote(cfg.name, manifest["version"], cfg.evaluation.champion_alias,
                                     by=run_id, expected_version=champion)
    return {
        "registered": True,
        "existing": manifest["existing"],
        "version": manifest["version"],
        "uri": manifest["uri"],
        "metrics": headline(manifest["metrics"]),
        "promoted": promotion["moved"] or promotion.get("version") == manifest["version"],
        "alias": cfg.evaluation.champion_alias if promotion.get("version") == manifest["version"] else None,
        "promotion_note": promotion.get("reason"),
    }
