"""Prefect artifacts shown on each run's page: validation report, metrics, confusion matrix,
registered model, a progress bar while training runs and the training curves.

Reads the stage result dicts (and the stored validation report); writes only artifacts.
Keys are per model name (``<name>-metrics`` ...), so the UI's Artifacts page keeps a history
per model; the progress artifact has no key (one per run).
"""

from __future__ import annotations

import base64
import re
import time

from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)

from tuneline.curves import training_curves_svg


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
                  *approval_lines(registered.get("approval")),
                  "", f"Pull it: `tuneline models pull {name}:{registered['version']} DEST`"]
    else:
        lines += [f"**Nothing registered:** {registered['reason']}"]
    create_markdown_artifact("\n".join(lines), key=artifact_key(name, "model"),
                             description=f"Registration of {name}")


def training_curves(name: str, trained: dict, metric: str, mlflow_run: str | None = None) -> None:
    """The training curves as an image (an SVG data URI: the UI's markdown shows it), and where the trackers are."""
    svg = training_curves_svg(trained.get("train_losses") or [], trained.get("evaluations") or [], metric)
    if svg is None:
        return
    image = base64.b64encode(svg.encode()).decode()
    lines = [f"![Training loss per step and validation {metric} per evaluation](data:image/svg+xml;base64,{image})",
             "", f"{trained['global_step']} steps, train loss {_cell(trained.get('train_loss'))}, validation loss "
                 f"{_cell(trained.get('eval_loss'))}"]
    if trained.get("tensorboard_uri"):
        lines += ["", f"TensorBoard: `tensorboard --logdir {trained['tensorboard_uri']}`"]
    if mlflow_run:
        lines += ["", f"MLflow: {mlflow_run}"]
    create_markdown_artifact("\n".join(lines), key=artifact_key(name, "training-curves"),
                             description=f"Training curves of {name}")


def approval_lines(approval: dict | None) -> list[str]:
    """``evaluation.approval: required``: the decision, who made it, when and why."""
    if not approval:
        return []
    if approval["status"] == "pending":
        return ["**Approval:** pending: press Resume on this run's page to approve or reject the promotion"]
    who = f" by {approval['decided_by']}" if approval.get("decided_by") else ""
    why = f": {approval['comment']}" if approval.get("comment") else ""
    return [f"**Approval:** {approval['status']}{who} at {approval.get('decided_at')}{why}"]


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
            f"{_cell(trained.get('train_loss'))}, eval loss {_cell(trained.get('eval_loss'))}; "
            + throughput_line(trained)))

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
        if report.get("tokens_per_second"):
            parts.append(f"{report['tokens_per_second']:,.0f} tokens/s")
        return ", ".join(parts)


def throughput_line(trained: dict) -> str:
    """Tokens/s, samples/s, padding efficiency, peak memory and MFU, then the speed settings the run made."""
    figures = [f"{trained.get('tokens_per_second') or 0:,.0f} tokens/s",
               f"{trained.get('samples_per_second') or 0:,.1f} samples/s",
               f"padding efficiency {_cell(trained.get('padding_efficiency'))}",
               f"peak memory {trained.get('peak_memory_mb') or 0:,.0f} MB"]
    if trained.get("mfu") is not None:
        figures.append(f"MFU {100 * trained['mfu']:.1f}%")
    settings = ", ".join(f"{k} {v}" for k, v in (trained.get("settings") or {}).items())
    return ", ".join(figures) + (f" ({settings})" if settings else "")


def version_comparison(comparison: dict, rows: list[dict]) -> None:
    """Registered versions side by side on new labelled data: one row per metric, one column per version."""
    first = comparison["evaluations"][0]
    direction = "lower" if comparison["lower_is_better"] else "higher"
    create_table_artifact([{column: _cell(value) for column, value in row.items()} for row in rows],
                          key=artifact_key(first["model"], "evaluation-on-new-data"),
                          description=f"Metrics on {comparison['source']} ({comparison['rows']} rows, fingerprint "
                                      f"{comparison['dataset_fingerprint'][:16]}); gate metric first "
                                      f"({comparison['metric']}, {direction} is better). Each result is stored "
                                      "beside its version.")


class PredictionProgress:
    """A progress artifact fed by ``predict_file``'s (rows done, rows in all) reports; logs each report too."""

    def __init__(self, description: str, log_line=None):
        self.artifact_id = create_progress_artifact(0.0, description=description)
        self.log_line = log_line

    def __call__(self, done: int, total: int) -> None:
        update_progress_artifact(self.artifact_id, round(100.0 * done / total, 1),
                                 description=f"{done}/{total} rows predicted")
        if self.log_line:
            self.log_line(f"predicted {done}/{total} rows")


def prediction(result: dict) -> None:
    """What a batch prediction wrote, with which version, and how fast."""
    rows = [{"field": field, "value": _cell(result[field])}
            for field in ("model", "version", "task", "input", "output", "metadata", "rows", "columns",
                          "rows_per_second", "predict_seconds", "seconds", "batch_size", "device")]
    create_table_artifact(rows, key=artifact_key(result["model"], "predictions"),
                          description=f"Predictions of {result['model']}:{result['version']} for {result['rows']} "
                                      f"rows of {result['input']} -> {result['output']}")
