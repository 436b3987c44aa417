"""The run summary a flow returns and ``tuneline run --json`` prints.

Reads the stages' typed results; writes nothing.
"""

from __future__ import annotations

from tuneline.config import FinetuneConfig
from tuneline.metrics import headline
from tuneline.results import Dataset, Evaluation, Registered


def run_summary(cfg: FinetuneConfig, dataset: Dataset, evaluation: Evaluation, registered: Registered,
                stages: dict) -> dict:
    gate = evaluation.gate
    summary = {
        "model": cfg.name,
        "version": registered.version,
        "uri": registered.uri,
        "gate": gate,
        "promoted": registered.promoted,
        "alias": registered.alias,
        "metrics": headline(evaluation.metrics),
        "dataset_fingerprint": dataset.fingerprint,
        "stages": stages,
    }
    if registered.approval:  # evaluation.approval: required: approved / rejected / timed_out, by whom, why
        summary["approval"] = registered.approval
        summary["promotion_note"] = registered.promotion_note
    if not gate["passed"]:
        kept = f"; kept as version {registered.version}" if registered.registered else "; nothing registered"
        bound = (f"> evaluation.maximum {gate['maximum']:.4f}" if gate.get("direction") == "lower"
                 else f"< evaluation.minimum {gate['minimum']:.4f}")
        summary["error"] = f"the candidate failed the gate: {gate['metric']} = {gate['value']:.4f} {bound}{kept}"
    return summary
