"""The run config: YAML -> typed pydantic models, every knob beside its default.

Reads a YAML file (plus ``--set key.path=value`` overrides); writes nothing.
Unknown keys are rejected and all errors are reported at once with key paths.
"""

from __future__ import annotations

import enum
import warnings
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneline.errors import ConfigError
from tuneline.objectives import OBJECTIVES, all_metrics, lower_is_better
from tuneline.objectives import get as objective_named
from tuneline.storage import storage_root_or_default

PROBLEM_SEPARATOR = "\n"  # between the cross-field problems one validator reports


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# The task kinds: one objective each (tuneline/objectives/), listed as choices in the Prefect form.
Task = enum.Enum("Task", {name: name for name in OBJECTIVES}, type=str)
Task.__doc__ = "What the model learns: " + "; ".join(f"{n}: {o.description}" for n, o in OBJECTIVES.items())


class Precision(str, enum.Enum):
    auto = "auto"  # bf16 on a CUDA GPU that supports it, fp32 on CPU
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


# Every objective's gate metrics (classification: accuracy, f1_macro, ...; regression: mse, pearson, ...).
GateMetric = enum.Enum("GateMetric", {metric: metric for metric in all_metrics()}, type=str)
GateMetric.__doc__ = "A gate metric; which ones a task computes, and their direction, come from its objective."


class TargetScaling(str, enum.Enum):
    none = "none"
    standard = "standard"  # (y - mean) / std of the training split
    minmax = "minmax"  # (y - min) / (max - min) of the training split


class TrainingMethod(str, enum.Enum):
    full = "full"  # every weight trains
    freeze = "freeze"  # only the new head (plus model.unfreeze_top_layers encoder layers)
    lora = "lora"  # low-rank adapters (PEFT) on the attention projections, plus the head


class ReportTo(str, enum.Enum):
    tensorboard = "tensorboard"  # event files beside the candidate: candidates/<key>/tensorboard/
    mlflow = "mlflow"  # params and per-step metrics, then the test metrics, to $MLFLOW_TRACKING_URI


class Approval(str, enum.Enum):
    none = "none"  # the gate alone decides the promotion
    required = "required"  # a person approves or rejects a promotion the gate proposes, on the run's page


class Batching(str, enum.Enum):
    auto = "auto"  # the objective's fastest batching that keeps quality: length_grouped, or packed for causal_lm
    padded = "padded"  # rows in random order, each batch padded to its longest row
    length_grouped = "length_grouped"  # rows of similar length batched together, label-mixed, batches shuffled
    packed = "packed"  # causal_lm: rows concatenated without padding, attention kept within each row


class Attention(str, enum.Enum):
    auto = "auto"  # flash_attention_2 on CUDA when the flash-attn package is installed, else sdpa
    sdpa = "sdpa"  # torch's scaled_dot_product_attention (fused kernels on GPU)
    flash_attention_2 = "flash_attention_2"  # needs the flash-attn package and a CUDA GPU
    eager = "eager"  # the model's plain PyTorch attention (slowest; for debugging)


class Engine(str, enum.Enum):
    local = "local"  # a child process on the flow's machine (torchrun for training.processes > 1)
    ray = "ray"  # Ray Train workers on a Ray cluster (training.ray); pip install 'tuneline[ray]'


class DataEngine(str, enum.Enum):
    local = "local"  # the flow's machine: this process, and data.num_proc encoding processes
    ray = "ray"  # Ray Data on a Ray cluster (training.ray.address or $RAY_ADDRESS); pip install 'tuneline[ray]'


class ClassWeights(str, enum.Enum):
    none = "none"
    balanced = "balanced"  # n / (k * count_c) from the training split: rare classes weigh more


class DataFormat(str, enum.Enum):
    auto = "auto"  # from the file extension
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"
    parquet = "parquet"
    conll = "conll"  # token<TAB>tag per line, a blank line between sentences -> columns tokens, tags


class DataConfig(_Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    source: str = Field(description="File or directory (CSV, TSV, JSONL, Parquet) holding the labelled data.")
    format: DataFormat = Field(DataFormat.auto, description="File format; auto goes by extension (.csv .tsv .jsonl .parquet).")
    text_column: str = Field("text", description="Column with the input text.")
    text_pair_column: str | None = Field(None, description="Optional second text column (sentence pairs).")
    label_column: str = Field("label", description="Column with the target label (a number for task: regression).")
    labels: list[str] | None = Field(None, description="Allowed labels in id order; inferred (sorted) from the data when empty.")
    split_column: str | None = Field(
        None, description="Optional column with a predefined split (train / validation / test) per row."
    )
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of rows held out to monitor training.")
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of rows held out for the final evaluation.")
    seed: int = Field(42, description="Seed of the deterministic stratified split.")
    prompt_column: str = Field("prompt", description="causal_lm: column with the instruction (the user turn).")
    response_column: str = Field("response", description="causal_lm: column with the answer the model learns.")
    messages_column: str | None = Field(
        None, description="causal_lm: a chat column instead (list of {role, content}); the last assistant turn "
        "is the response, everything before it the prompt."
    )
    scale_targets: TargetScaling = Field(
        TargetScaling.none, description="Regression: scale targets with training-split statistics (saved in the "
        "model's config as tuneline_target_scaling; predictions are un-scaled)."
    )
    batch_rows: int = Field(
        50_000, ge=1, description="Rows that ingest, validate and prepare hold in memory at a time (fewer when rows "
        "are wide: about 32 MB of data a batch); memory follows this, not the dataset's size. Never changes a result."
    )
    num_proc: int | None = Field(
        None, ge=1, le=64, description="Processes that encode (tokenize) the rows in prepare (each extra one holds "
        "200-300 MB); none: one per CPU core, at most 4, for 200,000 rows or more, else 1. With engine ray: at most "
        "this many Ray workers encode (none: one per CPU of the cluster). Never changes a result."
    )
    engine: DataEngine = Field(
        DataEngine.local, description="Where prepare splits and tokenizes: local (this machine), or ray (Ray Data on "
        "the cluster of training.ray.address / $RAY_ADDRESS, for data too large for one machine; the workers read the "
        "snapshot from the storage root). Never changes a result: both write the same files."
    )

    # Settings that change how the data stages run, never what they write: left out of their cache keys.
    RUN_SETTINGS: ClassVar[frozenset[str]] = frozenset({"batch_rows", "num_proc", "engine"})

    def output_settings(self) -> dict:
        """The settings that decide what validate and prepare write (their cache keys): all but RUN_SETTINGS."""
        return self.model_dump(mode="json", exclude=set(self.RUN_SETTINGS))

    @field_validator("labels")
    @classmethod
    def _labels_once_each(cls, labels: list[str] | None) -> list[str] | None:
        repeated = sorted({label for label in labels or [] if labels.count(label) > 1})
        if repeated:  # a repeated label would take a class id that no row can ever get
            raise ValueError(f"{repeated} listed more than once; each label needs exactly one id")
        return labels

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> DataConfig:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError("validation_fraction + test_fraction must leave at least 10% of rows for training")
        return self


class ValidationConfig(_Section):
    min_rows: int = Field(20, ge=1, description="Fewer rows than this cannot train anything useful.")
    min_rows_per_class: int = Field(5, ge=1, description="Each label needs this many rows to be split and learned.")
    min_text_length: int = Field(1, ge=0, description="Texts shorter than this (characters) are an error.")
    max_text_length: int = Field(100_000, ge=1, description="Texts longer than this (characters) are an error.")
    max_duplicate_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of rows whose text repeats an earlier row; real corpora have a few."
    )
    check_split_overlap: bool = Field(True, description="Fail if a text appears in both training and evaluation splits.")
    target_min: float | None = Field(None, description="Regression: targets below this are an error (none: no bound).")
    target_max: float | None = Field(None, description="Regression: targets above this are an error (none: no bound).")


class LoraSettings(_Section):
    r: int = Field(8, ge=1, le=1024, description="Adapter rank; 8 is plenty for a classification or regression head.")
    alpha: float = Field(16, gt=0, description="Scale of the adapter update (alpha / r); 2 x r is the usual choice.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] | None = Field(
        None, description="Module names that get adapters; none: per architecture (BERT: query, key, value)."
    )


class ModelConfig(_Section):
    base: str = Field(
        "all-MiniLM-L6-v2",
        description="Pretrained model: a Hub id (ORG/NAME), a local folder, s3://bucket/prefix/, "
        "registry:NAME@ALIAS or registry:NAME:VERSION (continue a registered model), or an embedded name "
        "(all-MiniLM-L6-v2, SmolLM2-135M-Instruct).",
    )
    revision: str | None = Field(
        None, description="Hub branch, tag or commit of model.base (none: main); a run pins it to the commit."
    )
    token_secret: str | None = Field(
        None, description="Name of a Prefect Secret block holding a Hugging Face token (else $HF_TOKEN); used "
        "only to download model.base, never logged or stored."
    )
    max_length: int = Field(128, ge=8, le=8192, description="Tokens per example; longer texts are truncated.")
    method: TrainingMethod = Field(TrainingMethod.full, description="full | freeze (head only) | lora (adapters).")
    unfreeze_top_layers: int = Field(0, ge=0, description="freeze: also train this many top encoder layers.")
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(), description="lora: adapter settings.")


class RaySettings(_Section):
    address: str | None = Field(
        None, description="The Ray cluster: ray://HEAD:10001 (Ray Client, e.g. a KubeRay head service) or HEAD:6379 "
        "(the GCS, from inside the cluster); none: $RAY_ADDRESS, and an error when that is unset too. Where the "
        "training runs, never what it learns."
    )
    workers: int = Field(
        2, ge=1, le=1024, description="Ray Train workers: data-parallel training processes, one torch rank each (the "
        "effective batch is batch_size x workers x gradient_accumulation)."
    )
    use_gpu: bool = Field(
        False, description="One GPU per worker (NCCL; precision auto: bf16 where the GPU has it); false: CPU workers "
        "(gloo, fp32)."
    )
    resources_per_worker: dict[str, float] | None = Field(
        None, description='Ray resources each worker reserves, e.g. {"CPU": 8, "memory": 32e9}; none: Ray Train\'s '
        "default (1 CPU, plus 1 GPU with use_gpu)."
    )


class TrainingConfig(_Section):
    epochs: float = Field(3, gt=0, le=100, description="Passes over the training split.")
    learning_rate: float | None = Field(
        None, gt=0, lt=1, description="Peak AdamW rate; none: the method's default (full 1e-4, freeze 1e-3, lora "
        "2e-3: fewer trained weights take larger steps; measured in benchmarks/learning_rates.py)."
    )
    batch_size: int = Field(16, ge=1, description="Examples per device per step.")
    gradient_accumulation: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps with a linearly rising rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    seed: int = Field(42, description="Seed for weight init of the new head and data order.")
    precision: Precision = Field(Precision.auto, description="auto: bf16 on a capable GPU, fp32 on CPU.")
    checkpoint_every_steps: int | None = Field(
        200, ge=1, description="Checkpoint (weights, optimizer, scheduler, RNG, data position) every N steps."
    )
    checkpoint_every_minutes: float | None = Field(
        10, gt=0, description="...and at least this often, so a crash never loses more than this much work."
    )
    timeout_minutes: float | None = Field(
        None, gt=0, description="Training time budget of one run, all its attempts together: then the training "
        "process checkpoints and stops, and the run fails without retry (a new run resumes); none: no limit."
    )
    stall_minutes: float | None = Field(
        30, gt=0, description="A training process that prints nothing for this long is hung: it is stopped "
        "(checkpoint first) and the attempt retried; none: never."
    )
    stop_grace_seconds: float = Field(
        30, ge=1, le=3600, description="Time a training process gets to save a checkpoint and exit after SIGTERM "
        "(timeout, stall, cancellation, preemption) before it is killed."
    )
    class_weights: ClassWeights = Field(ClassWeights.none, description="Classification: weigh the loss by class.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without a better gate metric on the validation "
        "split, and keep the best checkpoint; none: off."
    )
    processes: int | None = Field(
        None, ge=1, le=256, description="Data-parallel training processes (torchrun; each trains on its share of "
        "every step's rows, the effective batch being batch_size x processes x gradient_accumulation); none: one "
        "per visible GPU, 1 without a GPU. On CPU, N > 1 runs N gloo processes: the multi-GPU code path."
    )
    batching: Batching = Field(
        Batching.auto, description="How rows become batches: auto (length_grouped; packed for causal_lm), padded, "
        "length_grouped (similar lengths together, classes mixed in every batch, batch order shuffled: less padding, "
        "same quality), packed (causal_lm: no padding at all). training.json records the padding efficiency."
    )
    attention: Attention = Field(
        Attention.auto, description="Attention kernel: auto (flash_attention_2 on CUDA when installed, else sdpa), "
        "sdpa, flash_attention_2, eager."
    )
    compile: bool = Field(False, description="torch.compile the model (minutes of warm-up; faster long runs on GPU).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: far less memory, about 30% slower; for "
        "models that do not fit otherwise."
    )
    dataloader_workers: int | None = Field(
        None, ge=0, le=64, description="Processes preparing batches; none: 2 on a CUDA GPU (with pinned memory), 0 "
        "on CPU (the training threads need the cores)."
    )
    engine: Engine = Field(
        Engine.local, description="What runs the training: local (a child process on the flow's machine, torchrun for "
        "processes > 1) or ray (the same training on a Ray cluster's workers, see training.ray; the storage root must "
        "be reachable from them: s3:// across machines). The same training loop, checkpoints and resume either way."
    )
    ray: RaySettings = Field(
        default_factory=lambda: RaySettings(), description="engine ray: the cluster and the workers."
    )
    report_to: list[ReportTo] = Field(
        [], description="Experiment trackers the Trainer also logs to: tensorboard (event files in "
        "candidates/<key>/tensorboard/; pip install 'tuneline[tensorboard]') and mlflow (parameters, metrics per "
        "step and the test metrics, in the experiment named like the model at $MLFLOW_TRACKING_URI; pip install "
        "'tuneline[mlflow]'); empty: none. The run page draws the training curves either way."
    )

    @field_validator("report_to")
    @classmethod
    def _each_tracker_once(cls, trackers: list[ReportTo]) -> list[ReportTo]:
        return list(dict.fromkeys(trackers))

    def result_settings(self) -> dict:
        """The settings that change the trained weights (checkpoint cadence, timeouts and reporting do not).

        The engine and its ``ray`` section are left out: what of them changes weights, the number of training
        processes (``ray.workers``) and the precision the workers resolve (``ray.use_gpu``), is in the train key
        (tuneline/training/launcher.py), as the local engine's processes and precision are."""
        return self.model_dump(mode="json", exclude={"checkpoint_every_steps", "checkpoint_every_minutes",
                                                     "timeout_minutes", "stall_minutes", "stop_grace_seconds",
                                                     "report_to", "dataloader_workers", "engine", "ray"})


# training.learning_rate when unset, per model.method (README "Learning-rate defaults" has the measurements).
METHOD_LEARNING_RATES = {"full": 1e-4, "freeze": 1e-3, "lora": 2e-3}


def learning_rate(cfg: FinetuneConfig) -> float:
    """The peak rate a run trains with: training.learning_rate, else its method's default."""
    return cfg.training.learning_rate or METHOD_LEARNING_RATES[cfg.model.method.value]


class RetryConfig(_Section):
    attempts: int = Field(3, ge=1, le=20, description="Tries per stage for transient failures (outages, kills, OOM).")
    backoff_seconds: float = Field(
        10, ge=0, description="First retry delay; doubles each retry, with +-50% jitter."
    )


class EvaluationConfig(_Section):
    metric: GateMetric = Field(
        GateMetric.f1_macro, description="Metric the gate compares, on the test split; unset: the task's default (classification f1_macro, regression pearson, causal_lm perplexity_improvement, token_classification entity_f1)."
    )
    minimum: float = Field(0.0, ge=-1, le=1, description="Higher-is-better metrics: the candidate must reach this.")
    maximum: float | None = Field(
        None, ge=0, description="Lower-is-better metrics (mse, rmse, mae): the candidate must stay at or below this."
    )
    margin: float = Field(0.0, ge=0, description="...and beat the champion by more than this to be promoted.")
    generations: int = Field(3, ge=0, le=50, description="causal_lm: test prompts answered (greedy) and kept with the version.")
    max_new_tokens: int = Field(32, ge=1, le=1024, description="causal_lm: length limit of those answers.")
    champion_alias: str = Field(
        "production", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Alias of the current champion; a winning candidate is promoted to it.",
    )
    approval: Approval = Field(
        Approval.none, description="none: a candidate that beats the champion is promoted at once; required: it is "
        "registered, then the run pauses until a person approves (promoted) or rejects (not promoted) on the run's "
        "page in the Prefect UI; who, when and why go into the alias history."
    )
    approval_timeout_hours: float = Field(
        24, gt=0, le=24 * 30, description="approval: required: with no decision after this many hours the version "
        "stays registered and is not promoted (the run completes, reporting the timeout)."
    )


class RegisterConfig(_Section):
    keep_failed: bool = Field(False, description="Register a candidate that failed the gate (marked as failed).")
    merge: bool = Field(False, description="LoRA: also register the merged full model (in merged/ beside the adapter).")


with warnings.catch_warnings():  # a field named "register" shadows ABCMeta.register; harmless on instances
    warnings.filterwarnings("ignore", message='Field name "register"')

    class FinetuneConfig(_Section):
        name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="Registered model name.")
        task: Task = Field(Task.classification, description="What the model learns.")
        data: DataConfig
        validation: ValidationConfig = ValidationConfig()
        model: ModelConfig = ModelConfig()
        training: TrainingConfig = TrainingConfig()
        evaluation: EvaluationConfig = EvaluationConfig()
        register: RegisterConfig = RegisterConfig()
        retries: RetryConfig = RetryConfig()
        cache: bool = Field(True, description="Reuse a stage's stored output when its inputs are unchanged.")
        storage: str | None = Field(None, description="Storage root: a path or s3://bucket/prefix (else $TUNELINE_STORAGE).")

        def storage_root(self) -> str:
            return storage_root_or_default(self.storage)

        @model_validator(mode="before")
        @classmethod
        def _objective_defaults(cls, raw: Any) -> Any:
            """Unset keys take the objective's defaults: its gate metric, and e.g. causal_lm's base model."""
            if not isinstance(raw, dict):
                return raw
            objective = OBJECTIVES.get(str(getattr(raw.get("task"), "value", raw.get("task") or "classification")))
            if objective is None:
                return raw  # the task field reports the unknown name
            defaults = {**objective.defaults,
                        "evaluation": {"metric": objective.default_metric, **objective.defaults.get("evaluation", {})}}
            raw = dict(raw)
            for section, values in defaults.items():
                given = raw.get(section)
                if given is None:
                    given = {}
                if isinstance(given, dict):
                    raw[section] = {**values, **{k: v for k, v in given.items() if v is not None or k not in values}}
            return raw

        @model_validator(mode="after")
        def _settings_fit_the_task(self) -> FinetuneConfig:
            problems = task_problems(self)
            if problems:
                raise ValueError(PROBLEM_SEPARATOR.join(problems))
            return self


def task_problems(cfg: FinetuneConfig) -> list[str]:
    """Settings that do not fit together (metric vs task, gate bound vs metric direction, ...), keyed by path."""
    objective = objective_named(cfg.task.value)
    metric, ev = cfg.evaluation.metric.value, cfg.evaluation
    problems = []
    if metric not in objective.metrics:
        problems.append(f"evaluation.metric: {metric} is not a {objective.name} metric; use one of "
                        f"{sorted(objective.metrics)}")
    if lower_is_better(metric):
        if ev.minimum != 0:
            problems.append(f"evaluation.minimum: {metric} is lower-is-better; set evaluation.maximum instead")
    elif ev.maximum is not None:
        problems.append(f"evaluation.maximum: {metric} is higher-is-better; set evaluation.minimum instead")
    tv = cfg.validation
    if tv.target_min is not None and tv.target_max is not None and tv.target_min > tv.target_max:
        problems.append("validation.target_min: greater than validation.target_max")
    if cfg.training.early_stopping_patience and not cfg.data.split_column and cfg.data.validation_fraction == 0:
        problems.append("training.early_stopping_patience: needs a validation split (data.validation_fraction > 0)")
    if cfg.model.unfreeze_top_layers and cfg.model.method != TrainingMethod.freeze:
        problems.append("model.unfreeze_top_layers: only for model.method: freeze")
    if cfg.training.engine == Engine.ray and (cfg.training.processes or 1) > 1:
        problems.append(f"training.processes: {cfg.training.processes} starts torchrun processes on the flow's "
                        f"machine; with training.engine: ray set training.ray.workers: {cfg.training.processes} "
                        "instead (or training.engine: local)")
    if cfg.training.engine == Engine.ray and cfg.training.precision == Precision.fp16 and not cfg.training.ray.use_gpu:
        problems.append("training.precision: fp16 needs CUDA GPUs; set training.ray.use_gpu: true, or use auto, "
                        "fp32 or bf16")
    return problems + objective.config_problems(cfg)


def format_validation_error(err: ValidationError, where: str) -> str:
    lines = [f"invalid config in {where} ({count_problems(err)} problem(s)):"]
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if not item["loc"] and item["type"] == "value_error":  # cross-field checks: "key.path: why; ..."
            lines += [f"  {problem}" for problem in message.removeprefix("Value error, ").split(PROBLEM_SEPARATOR)]
            continue
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def count_problems(err: ValidationError) -> int:
    return sum(item["msg"].count(PROBLEM_SEPARATOR) + 1 if not item["loc"] and item["type"] == "value_error" else 1
               for item in err.errors())


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` override in place; the value is parsed as YAML."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else None


def parse_config(raw: Any, where: str = "config") -> FinetuneConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config in {where}: expected a mapping of keys, got {type(raw).__name__}")
    try:
        return FinetuneConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None


def load_config(path: str | Path, overrides: list[str] = ()) -> FinetuneConfig:
    """Read a YAML config, apply overrides, validate. Relative data paths resolve against the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if isinstance(raw, dict):
        for assignment in overrides:
            apply_override(raw, assignment)
        _resolve_relative_source(raw, path.parent)
    return parse_config(raw, where=str(path))


def _resolve_relative_source(raw: dict[str, Any], base_dir: Path) -> None:
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), str):
        source = data["source"]
        if "://" not in source and not Path(source).is_absolute():  # the config's folder wins over the cwd
            candidate = base_dir / source
            if candidate.exists():
                data["source"] = str(candidate.resolve())
