"""The gate: does the candidate pass its bound, and does it beat the champion? One decision for every objective.

Reads metrics dicts and the ``evaluation`` config section; writes nothing.
"""

from __future__ import annotations

from tuneline import objectives
from tuneline.config import FinetuneConfig


def gate_decision(metrics: dict, champion: dict | None, cfg: FinetuneConfig) -> dict:
    """Passed = within the bound; promote = passed and beats the champion by more than the margin.

    ``champion``: None, or ``{alias, version}`` plus ``is_candidate`` (it is this very model), ``metrics``
    (scored on the same test split) or ``why`` it could not be compared.

    Higher-is-better metrics must reach ``evaluation.minimum`` and win by being larger; lower-is-better
    ones (mse, rmse, mae, perplexity) must stay at or below ``evaluation.maximum`` (if set) and win by
    being smaller.
    """
    gate = cfg.evaluation
    value = metrics[gate.metric.value]
    lower = objectives.lower_is_better(gate.metric)
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
    return {**decision, "promote": wins, "decision": "promote" if wins else "keep",
            "reason": f"{value:.4f} {verdict} champion v{champion['version']} ({best:.4f}) by more than {gate.margin}"}
