"""Prefect artifacts shown on each run's page: validation report, metrics, confusion matrix,
registered model, and a progress bar while training runs.

Reads the stage result dicts (and the stored validation report); writes only artifacts.
Keys are per model name (``<name>-metrics`` ...), so the UI's Artifacts page keeps a history
per model; the progress artifact has no key (one per run).
"""

from __future__ import annotations

import re
import time

from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)


def artifact_key(name: str, what: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{name}-{what}".lower()).strip("-")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, dict)):
        text = ", ".join(map(repr, value)) if isinstance(value, list) else ", ".join(f"{k}: {v}" for k, v in value.items())
        return text[:200]
    return "" if value is None else str(value)


def validation_report(name: str, report: dict, report_uri: str) -> None:
    """One row per expectation: passed, column, counts, observed value, examples of offending values."""
    rows = [{"expectation": r["expectation"], "passed": "yes" if r["success"] else "NO",
             "column": _cell(r.get("column")), "unexpected": _cell(r.get("unexpected_count")),
             "of rows": _cell(r.get("element_count", report.get("rows"))), "observed": _cell(r.get("observed")),
             "examples": _cell(r.get("examples") or r.get("error"))} for r in report["results"]]
    failed = sum(not r["success"] for r in report["results"])
    verdict = "all expectations met" if not failed else f"{failed} expectation(s) FAILED"
    create_table_artifact(rows, key=artifact_key(name, "validation"),
                          description=f"Data validation of {report['rows']} rows: {verdict}. Report: {report_uri}")


def evaluation(name: str, result: dict) -> None:
    """Metrics (candidate beside champion), per-class report and confusion matrix of the test split."""
    metrics, champion, gate = result["metrics"], result.get("champion_metrics") or {}, result["gate"]
    scalar = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    rows = [{"metric": k, "candidate": _cell(metrics[k]), "champion": _cell(champion.get(k)) if champion else "-"}
            for k in scalar]
    who = f"champion v{gate['champion']['version']}" if gate.get("champion") else "no champion yet"
    create_table_artifact(rows, key=artifact_key(name, "metrics"),
                          description=f"Test-split metrics: candidate vs {who}. Gate: **{gate['decision']}** "
                                      f"({gate['reason']})")
    per_class = [{"label": label, **{k: _cell(v) for k, v in values.items()}}
                 for label, values in metrics.get("per_class", {}).items()]
    if per_class:
        create_table_artifact(per_class, key=artifact_key(name, "per-class"), description="Per-class report (test split)")
    matrix = metrics.get("confusion_matrix")
    if matrix:
        create_markdown_artifact(confusion_markdown(matrix), key=artifact_key(name, "confusion-matrix"),
                                 description="Confusion matrix (test split)")


def confusion_markdown(matrix: dict) -> str:
    labels = matrix["labels"]
    lines = ["Rows: true label; columns: predicted label.", "",
             "| true \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| **{label}** | " + " | ".join(str(n) for n in row) + " |"
              for label, row in zip(labels, matrix["matrix"])]
    return "\n".join(lines)


def registration(name: str, registered: dict, gate: dict) -> None:
    """The registered model's URI and version, the gate decision and whether it was promoted."""
    lines = [f"# Model `{name}`", "", f"**Gate:** {gate['decision']} - {gate['reason']}", ""]
    if registered["registered"]:
        lines += [f"**Version:** {registered['version']}" + (" (identical files: existing version)"
                                                              if registered.get("existing") else ""),
                  f"**URI:** `{registered['uri']}`",
                  f"**Promoted:** {'yes, to `' + registered['alias'] + '`' if registered.get('alias') else 'no'}"
                  + (f" ({registered['promotion_note']})" if registered.get("promotion_note") else ""),
                  "", f"Pull it: `tuneline models pull {name}:{registered['version']} DEST`"]
    else:
        lines += [f"**Nothing registered:** {registered['reason']}"]
    create_markdown_artifact("\n".join(lines), key=artifact_key(name, "model"),
                             description=f"Registration of {name}")


class TrainingProgress:
    """A progress artifact fed by ``train_candidate``'s ``on_progress`` dicts (at most one update a second)."""

    def __init__(self, name: str, min_interval_s: float = 1.0):
        self.artifact_id = create_progress_artifact(0.0, description=f"Training {name}")
        self.min_interval_s = min_interval_s
        self.last = 0.0

    def __call__(self, report: dict) -> None:
        now = time.monotonic()
        done = report.get("max_steps") and report["step"] >= report["max_steps"]
        if now - self.last < self.min_interval_s and not done:
            return
        self.last = now
        update_progress_artifact(self.artifact_id, self.percent(report), description=self.describe(report))

    def finish(self, trained: dict) -> None:
        cached = " (cached: trained by an earlier run)" if trained.get("reused") else ""
        update_progress_artifact(self.artifact_id, 100.0, description=(
            f"Trained {trained['global_step']} steps on {trained['device']}{cached}; train loss "
            f"{_cell(trained.get('train_loss'))}, eval loss {_cell(trained.get('eval_loss'))}"))

    @staticmethod
    def percent(report: dict) -> float:
        return round(100.0 * min(1.0, report["step"] / report["max_steps"]), 1) if report.get("max_steps") else 0.0

    @staticmethod
    def describe(report: dict) -> str:
        parts = [f"step {report['step']}/{report.get('max_steps')}"]
        if report.get("epoch") is not None:
            parts.append(f"epoch {report['epoch']:.2f}")
        for key in ("loss", "eval_loss"):
            if report.get(key) is not None:
                parts.append(f"{key} {report[key]:.4f}")
        return ", ".join(parts)
