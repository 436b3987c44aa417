"""Register a gated candidate: build its manifest and model card from the pipeline's results.

Reads the candidate's registrable folder (the objective says which: causal_lm may add merged
weights) and the earlier stages' results; writes a new registry version (see
``tuneline.registry``; its ``README.md`` is the model card, ``tuneline.stages.card``) unless the
gate failed and the config does not keep failed candidates, then moves the champion alias by
compare-and-swap when the candidate won. With ``evaluation.approval: required`` the move waits for
a person's decision (the flow pauses; ``decide_promotion`` applies it).
"""

from __future__ import annotations

from tuneline import objectives
from tuneline.config import Approval, FinetuneConfig
from tuneline.fingerprints import code_version
from tuneline.metrics import headline
from tuneline.models.base import resolve_base
from tuneline.registry import Registry
from tuneline.results import Dataset, Evaluation, Prepared, Registered, Trained
from tuneline.stages.card import model_card
from tuneline.storage import Storage

PENDING, APPROVED, REJECTED, TIMED_OUT = "pending", "approved", "rejected", "timed_out"  # approval.status


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

    The version's folder gets its model card (``README.md``, ``tuneline.stages.card``). The promotion is a
    compare-and-swap against the champion the gate compared with: if the alias moved during the run, the
    new version is kept but not promoted. With ``evaluation.approval: required`` a winner is registered
    only: the result says the promotion awaits a person (``approval.status: pending``; ``decide_promotion``).
    """
    gate = evaluation.gate
    if not gate["passed"] and not cfg.register.keep_failed:
        return Registered(registered=False, reason=gate["reason"])
    registry = Registry(storage)
    folder = objectives.get(prepared.objective).registrable_folder(storage, trained, cfg)
    fields = build_manifest(cfg, dataset, prepared, trained, evaluation, run_id)
    manifest = registry.register(cfg.name, folder, fields,
                                 card=lambda version: model_card(cfg, fields, version, prepared.counts))
    registered = Registered(registered=True, existing=manifest["existing"], version=manifest["version"],
                            uri=manifest["uri"], metrics=headline(manifest["metrics"]), promotion_note=gate["reason"])
    if not gate["promote"]:
        return registered
    alias = cfg.evaluation.champion_alias
    if cfg.evaluation.approval is Approval.required and (registry.alias(cfg.name, alias) or {}).get(
            "version") != registered.version:
        return registered.model_copy(update={"approval": {"status": PENDING}, "promotion_note": "awaits approval"})
    return promote_winner(registry, cfg, gate, registered, run_id)


def promote_winner(registry: Registry, cfg: FinetuneConfig, gate: dict, registered: Registered,
                   run_id: str | None, note: dict | None = None) -> Registered:
    """Move the champion alias to the registered version, if it still points at the champion the gate saw."""
    champion = gate["champion"]["version"] if gate.get("champion") else None
    promotion = registry.promote(cfg.name, registered.version, cfg.evaluation.champion_alias, by=run_id,
                                 expected_version=champion, note=note)
    promoted_here = promotion.get("version") == registered.version
    return registered.model_copy(update={
        "promoted": promotion["moved"] or promoted_here,
        "alias": cfg.evaluation.champion_alias if promoted_here else None,
        "promotion_note": promotion.get("reason"),
    })


def decide_promotion(storage: Storage, cfg: FinetuneConfig, evaluation: Evaluation, registered: Registered,
                     decision: dict, run_id: str | None = None) -> Registered:
    """Apply a person's decision on a pending promotion: approved -> the compare-and-swap promotion, with who
    decided, when and why in the alias history; rejected or timed out -> the version stays registered only.

    ``decision``: ``{"status": "approved" | "rejected" | "timed_out", "decided_by", "decided_at", "comment"}``.
    """
    if decision["status"] != APPROVED:
        who = f" by {decision['decided_by']}" if decision.get("decided_by") else ""
        why = f": {decision['comment']}" if decision.get("comment") else ""
        return registered.model_copy(update={"approval": decision,
                                             "promotion_note": f"not promoted: {decision['status']}{who}{why}"})
    note = {"approval": APPROVED, **{k: decision.get(k) for k in ("decided_by", "decided_at", "comment")}}
    promoted = promote_winner(Registry(storage), cfg, evaluation.gate, registered, run_id, note=note)
    return promoted.model_copy(update={"approval": decision})
