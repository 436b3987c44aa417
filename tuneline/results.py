"""Typed stage results: what one pipeline stage hands the next (small, JSON-serialisable).

Reads and writes nothing. Each result names where its stage's output lives in the storage root
(``key``/``uri``) plus the few facts later stages and the run summary need; tensors and frames
never travel between stages. ``reused`` says the stage found its output already there;
``attempts`` is filled in by the Prefect task that ran it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StageResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reused: bool = Field(False, description="The stage's stored output was found and reused (status 'cached').")
    attempts: int = Field(1, description="Tries the stage took (set by its Prefect task).")

    def stored(self) -> dict:
        """What is written to the storage root: everything but the per-run facts."""
        return self.model_dump(mode="json", exclude={"reused", "attempts"})


class Dataset(StageResult):
    """ingest: the Parquet snapshot of the data source."""

    fingerprint: str = Field(description="SHA-256 over the source files' names and bytes: the dataset version.")
    key: str
    uri: str
    rows: int
    columns: list[str]
    source: str
    files: list[str]


class Validated(StageResult):
    """validate: the stored great-expectations report (the stage raises when the data fails)."""

    report_key: str
    report_uri: str
    success: bool
    expectations: int = Field(description="Expectations met.")


class Prepared(StageResult):
    """prepare: the split, encoded data and what was fitted on the training split."""

    key: str
    uri: str
    objective: str
    dataset_fingerprint: str
    counts: dict[str, int] = Field(description="Rows per split (train / validation / test).")
    fitted: dict[str, Any] = Field(default_factory=dict,
                                   description="Fitted on the training split: labels, tags, target scaling.")
    stats: dict[str, Any] = Field(default_factory=dict, description="The objective's facts about the encoded data.")

    @property
    def labels(self) -> list[str] | None:
        return self.fitted.get("labels")


class Trained(StageResult):
    """train: the candidate model folder and how its training went (``training.json``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    key: str
    model_uri: str
    model_fingerprint: str
    objective: str
    method: str
    learning_rate: float | None = None
    precision: str
    device: str
    processes: int
    global_step: int
    max_steps: int
    resumed_from_step: int = 0
    batch_size: int
    gradient_accumulation: int
    effective_batch_size: int | None = Field(None, description="Rows per optimizer step: batch x accumulation x processes.")
    oom_retries: int = 0
    train_loss: float | None = None
    train_seconds: float
    samples_per_second: float | None = Field(None, description="Rows trained per second of the training loop.")
    tokens_per_second: float | None = Field(None, description="Real (non-padding) tokens trained per second.")
    padding_efficiency: float | None = Field(None, description="Real tokens / tokens computed (padding included).")
    trained_tokens: int | None = Field(None, description="Real tokens trained on by this attempt.")
    peak_memory_mb: float | None = Field(None, description="Peak CUDA memory allocated, else peak process RSS.")
    mfu: float | None = Field(None, description="CUDA: model-FLOPs utilisation of the device's bf16 peak.")
    settings: dict[str, Any] = Field(default_factory=dict, description="The speed settings the run made.")
    trainable_parameters: int | None = None
    adapter: bool = Field(False, description="The model folder is a PEFT adapter over its base model.")
    eval_loss: float | None = None
    evaluations: list[dict[str, Any]] = Field(default_factory=list, description="The validation curve.")
    validation_metrics: dict[str, Any] | None = Field(None, description="Metrics on the validation split at the end.")
    stopped_early: bool = False
    best_metric: float | None = None
    best_checkpoint: str | None = None
    train_losses: list[dict[str, int | float]] = Field(
        default_factory=list, description="The training curve: {step, loss} per logging step, across resumes.")
    tensorboard_uri: str | None = Field(None, description="TensorBoard logdir of every attempt (report_to).")
    mlflow_run_id: str | None = Field(None, description="The MLflow run training logged to (report_to).")
    mlflow_experiment_id: str | None = Field(None, description="...and its experiment.")


class Evaluation(StageResult):
    """evaluate: test-split metrics of the candidate and the champion, and the gate decision."""

    metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None = None
    gate: dict[str, Any]


class ValidationScore(StageResult):
    """validation-score (sweeps): a trial's metrics on the validation split."""

    metric: str
    lower_is_better: bool
    value: float
    metrics: dict[str, Any]


class Registered(StageResult):
    """register: the version written (or why nothing was), and whether the alias moved to it."""

    registered: bool
    version: int | None = None
    uri: str | None = None
    existing: bool = False
    promoted: bool = False
    alias: str | None = None
    reason: str | None = None
    promotion_note: str | None = None
    metrics: dict[str, Any] | None = None
    approval: dict[str, Any] | None = Field(
        None, description="evaluation.approval: required and the gate proposed a promotion: status (pending, "
        "approved, rejected, timed_out) and, once decided, decided_by, decided_at, comment.")

    @property
    def awaits_approval(self) -> bool:
        return (self.approval or {}).get("status") == "pending"


class VersionEvaluation(StageResult):
    """evaluate-registered: a registered version scored on other labelled data, stored beside the version."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    version: int
    model_fingerprint: str
    task: str
    metric: str = Field(description="The version's gate metric (evaluation.metric): listed first.")
    lower_is_better: bool
    dataset_fingerprint: str = Field(description="SHA-256 over the data files' names and bytes (as ingest).")
    source: str = Field(description="The data source: a local path (made absolute) or s3:// URI.")
    rows: int
    metrics: dict[str, Any] = Field(description="The pipeline's metrics for the task (per-class report included).")
    evaluated_at: str
    code_version: str
    key: str = Field(description="registry/<name>/versions/<NNNNNN>/evaluations/<fp16>.json")
    uri: str


class Prediction(StageResult):
    """predict: the file written (input rows plus predictions), the version that predicted, and how fast."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    version: int
    task: str
    model_fingerprint: str
    input: str
    output: str
    metadata: str = Field(description="Where the version used is recorded: the Parquet output itself "
                                      "(key-value metadata 'tuneline'), else the sidecar <output>.meta.json.")
    rows: int
    columns: list[str] = Field(description="The prediction columns added to the input's.")
    batch_size: int
    device: str
    predict_seconds: float = Field(description="Predicting only (the model loaded).")
    rows_per_second: float = Field(description="rows / predict_seconds.")
    seconds: float = Field(description="The whole call: registry, reading, loading, predicting, writing.")
