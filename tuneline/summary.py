"""The run summary a flow returns and ``tuneline run --json`` prints.

Reads the stages' result dicts; writes nothing.
"""

from __future__ import annotations

from tuneline.config import FinetuneConfig
from tuneline.metrics import headline


def run_summary(cfg: FinetuneConfig, dataset: dict, evaluation: dict, registered: dict, stages: dict) -> dict:
    gate = evaluation["gate"]
    summary = {
        "model": cfg.name,
        "version": registered.get("version"),
        "uri": registered.get("uri"),
        "gate": gate,
        "promoted": registered.get("promoted", False),
        "alias": registered.get("alias"),
        "metrics": headline(evaluation["metrics"]),
        "dataset_fingerprint": dataset["fingerprint"],
        "stages": stages,
    }
    if not gate["passed"]:
        kept = f"; kept as version {registered['version']}" if registered.get("registered") else "; nothing registered"
        bound = (f"> evaluation.maximum {gate['maximum']:.4f}" if gate.get("direction") == "lower"
                 else f"< evaluation.minimum {gate['minimum']:.4f}")
        summary["error"] = f"the candidate failed the gate: {gate['metric']} = {gate['value']:.4f} {bound}{kept}"
    return summary
