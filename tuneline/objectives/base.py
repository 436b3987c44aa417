"""The objective interface: everything that differs between task kinds, behind one class.

Reads and writes nothing itself. The general stages (validate, prepare, train, evaluate, gate,
register, sweep, load) hold no task-kind branches: they ask the run's objective. An objective is
stateless; the catalogue in ``tuneline.objectives`` holds one instance per task kind.

What an objective answers, in pipeline order:

- config: its gate metrics (and their direction), defaults for unset keys, the settings it refuses;
- validate: the columns it reads, derived columns (``_input``: a row's input as one string, for
  duplicate and split-overlap checks; ``_stratum``: what the split stratifies on), its expectations
  and extra checks;
- prepare: what is fitted on the training split (labels, target scaling), the tokenizer, encoding;
- train: the model, collator, loss and metrics the shared Trainer loop uses;
- evaluate: scoring a model folder on a split (the same metrics as training's), a reference model
  scored beside the candidate, whether a champion is comparable;
- register / load: the folder to register, and loading a registered folder;
- predict: the input columns a batch prediction reads, and one batch's predictions in the task's own
  form (``tuneline.stages.predict`` does the reading, batching, ordering and writing).

Objectives receive the run config (``tuneline.config.FinetuneConfig``) but never import it: the
config asks the objective, so the dependency points one way only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from tuneline import keys
from tuneline.errors import ConfigError

if TYPE_CHECKING:  # for annotations only: the config imports the objectives, never the reverse
    import pandas as pd

    from tuneline.config import FinetuneConfig
    from tuneline.models.base import ResolvedBase
    from tuneline.results import Prepared, Trained
    from tuneline.storage import Storage

HIGHER, LOWER = "higher", "lower"


@dataclass
class TrainerParts:
    """What an objective contributes to the shared training loop (``tuneline.training.loop``)."""

    model: Any
    collator: Any
    compute_metrics: Callable[[Any], dict] | None  # EvalPrediction -> scalar metrics (validation, early stopping)
    save_folder: Callable[[Any, Path], None]  # (trained model, folder): safetensors only
    compute_loss: Callable | None = None  # Trainer's compute_loss_func (e.g. class-weighted cross-entropy)
    # The training loss (compute_loss, else the model's own) is a per-batch mean: the Trainer must divide it by
    # the accumulation steps itself. False: the model normalizes by num_items_in_batch (HF causal LMs).
    loss_is_mean: bool = False
    adapter: bool = False  # the saved folder is a PEFT adapter
    trainable_parameters: int | None = None
    model_columns: list[str] | None = None  # the dataset columns the model reads (None: every column)
    # called with the model once its attention kernel is set (training.attention); raises ConfigError when the model
    # cannot train with these parts (e.g. packed rows that would attend to each other)
    check_model: Callable[[Any], None] | None = None


@dataclass
class PredictionInputs:
    """What a batch prediction reads from each row, and how: from the registered version's config."""

    columns: dict[str, str]  # role -> input column, e.g. {"text": "SMS"}; each must exist and hold no nulls
    max_length: int  # tokens per input, as in training: longer inputs are cut
    max_new_tokens: int = 32  # causal_lm: the length limit of a generated answer


def refuse_text_pair(objective: str, text_pair_column: str | None) -> None:
    """A text pair column named for an objective that reads one input per row."""
    if text_pair_column:
        raise ConfigError(f"--text-pair-column: task {objective} reads one input per row, not a text pair")


class Objective(ABC):
    """One task kind. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    pipeline_tag: ClassVar[str]  # the Hugging Face task of its models, for model cards ("text-classification")
    metrics: ClassVar[dict[str, str]]  # gate metric -> HIGHER or LOWER is better
    default_metric: ClassVar[str]
    defaults: ClassVar[dict[str, dict]] = {}  # config section -> values for keys the user left unset
    methods: ClassVar[tuple[str, ...]] = ("full", "freeze", "lora")
    input_noun: ClassVar[str] = "inputs"  # what a row's input is called in reports ("texts", "prompts")
    has_label_set: ClassVar[bool] = False  # data.labels names the allowed labels (or tags)
    scales_targets: ClassVar[bool] = False  # data.scale_targets, validation.target_min / target_max
    weighs_classes: ClassVar[bool] = False  # training.class_weights
    reads_text_pairs: ClassVar[bool] = False  # data.text_pair_column
    merges_adapters: ClassVar[bool] = False  # register.merge
    stops_early: ClassVar[bool] = True  # training.early_stopping_patience
    # training.batching choices; the first is what ``auto`` means (tuneline.training.batching builds them)
    batchings: ClassVar[tuple[str, ...]] = ("length_grouped", "padded")

    # -- config ----------------------------------------------------------------------------------
    def config_problems(self, cfg: FinetuneConfig) -> list[str]:
        """Settings this objective cannot honour, each as ``key.path: why``."""
        problems, task = [], f"task: {self.name}"
        if cfg.model.method.value not in self.methods:
            problems.append(f"model.method: {task} trains with {' or '.join(self.methods)}, not {cfg.model.method.value}")
        if cfg.data.labels and not self.has_label_set:
            problems.append(f"data.labels: {task} has no label set")
        if not self.scales_targets:
            if cfg.data.scale_targets.value != "none":
                problems.append(f"data.scale_targets: not for {task} (only for task: regression)")
            if cfg.validation.target_min is not None or cfg.validation.target_max is not None:
                problems.append(f"validation.target_min/target_max: not for {task} (only for task: regression)")
        if not self.weighs_classes and cfg.training.class_weights.value != "none":
            problems.append(f"training.class_weights: not for {task} (only for task: classification)")
        if not self.reads_text_pairs and cfg.data.text_pair_column:
            problems.append(f"data.text_pair_column: not for {task}")
        if not self.merges_adapters and cfg.register.merge:
            problems.append(f"register.merge: not for {task}")
        if not self.stops_early and cfg.training.early_stopping_patience:
            problems.append(f"training.early_stopping_patience: not supported for {task} yet")
        if cfg.training.batching.value not in ("auto", *self.batchings):
            problems.append(f"training.batching: {task} batches with {', '.join(self.batchings)} (or auto), not "
                            f"{cfg.training.batching.value}")
        return problems

    def batching(self, cfg: FinetuneConfig) -> str:
        """The run's batching: training.batching, ``auto`` being this objective's first choice."""
        chosen = cfg.training.batching.value
        return self.batchings[0] if chosen == "auto" else chosen

    # -- validate and split ----------------------------------------------------------------------
    @abstractmethod
    def input_columns(self, cfg: FinetuneConfig) -> list[str]:
        """The configured columns this objective reads (each must exist)."""

    @abstractmethod
    def derive(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> pd.DataFrame:
        """A copy with the INPUT and STRATUM columns (and any the expectations need). Never raises on bad rows.

        Called on one batch of rows at a time, so a row's derived values may depend on that row only: STRATUM is a
        category, or a number that the split bins into quantiles over all rows (``tuneline.data.splits``)."""

    @abstractmethod
    def expectations(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> list:
        """great-expectations expectations on the derived frame (columns exist, nulls, types, lengths, sets)."""

    def report_column(self, column: str | None, cfg: FinetuneConfig) -> str | None:
        """The configured column a report entry on a derived column stands for (how the user knows it)."""
        return column

    def checks(self, frame: pd.DataFrame, cfg: FinetuneConfig, before: list[dict] | None = None) -> list[dict]:
        """Checks great-expectations cannot express, as report entries (``expectation``, ``success``, ...).

        Validation reads a dataset batch by batch: ``frame`` is one derived batch (its index: the rows' positions
        in the dataset) and ``before`` the entries this method returned for the batches before it (None for the
        first); the entries returned cover every row so far (counts summed, the first examples kept)."""
        return []

    def fitted_data_settings(self, fitted: dict) -> dict:
        """``data`` settings that hold new labelled data to what a registered version was fitted on (scoring
        it on other data): its label set, so a label it never learnt fails validation instead of encoding."""
        return {"labels": list(fitted["labels"])} if self.has_label_set and fitted.get("labels") else {}

    # -- prepare ---------------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
        """Parameters fitted on the training rows (``frame`` is every row: the label set may need it). The prepare
        stage passes only the ``fit_columns`` of the derived rows (the text stays on disk)."""
        return {}

    def fit_columns(self, cfg: FinetuneConfig) -> list[str]:
        """The derived columns ``fit`` reads (labels, targets, tags): prepare keeps these of every row (as shared
        values, a few bytes a row), so ``fit`` sees all rows at once without the dataset in memory."""
        return []

    @abstractmethod
    def tokenizer(self, base: Path):
        """The base model's fast tokenizer, ready for this objective (e.g. a pad token on a decoder)."""

    @abstractmethod
    def encode(self, rows: pd.DataFrame, cfg: FinetuneConfig, tokenizer, fitted: dict):
        """One split as a ``datasets.Dataset`` the collator can batch (``labels`` included)."""

    def encoded_stats(self, splits: dict, cfg: FinetuneConfig) -> dict:
        """Facts about the encoded splits for the prepared meta; raises DataError when they are unusable."""
        return {}

    # -- train -----------------------------------------------------------------------------------
    @abstractmethod
    def trainer_parts(self, cfg: FinetuneConfig, base: Path, prepared: Prepared, train_set, tokenizer) -> TrainerParts:
        """The model (with its head, and which weights train), collator, metrics and saver."""

    def describe_validation(self, metrics: dict) -> dict:
        """The validation metrics training.json records, from the Trainer's final evaluation."""
        return metrics

    # -- evaluate --------------------------------------------------------------------------------
    @abstractmethod
    def score(self, model_dir: Path, dataset, prepared: Prepared, cfg: FinetuneConfig, split: str) -> dict:
        """Metrics of a model folder on one encoded split: the same metrics training reports."""

    def score_settings(self, cfg: FinetuneConfig):
        """Evaluation settings that change a score (part of its cache key)."""
        return None

    def reference_model(self, cfg: FinetuneConfig) -> ResolvedBase | None:
        """A model scored beside the candidate on the test split (causal_lm: the base); None: none."""
        return None

    def with_reference(self, metrics: dict, reference: dict | None) -> dict:
        """The candidate's metrics combined with the reference model's (e.g. the improvement over it)."""
        return metrics

    def champion_problem(self, manifest: dict, prepared: Prepared, cfg: FinetuneConfig) -> str | None:
        """Why the registered champion cannot be scored on this test split, or None when it can."""
        if manifest.get("task") not in (None, self.name):
            return f"it was trained for task {manifest.get('task')}"
        return None

    def ranking_metric(self, cfg: FinetuneConfig) -> tuple[str, bool]:
        """(metric a sweep ranks trials by on the validation split, lower is better)."""
        metric = cfg.evaluation.metric.value
        return metric, self.metrics[metric] == LOWER

    # -- register and load -----------------------------------------------------------------------
    def registrable_folder(self, storage: Storage, trained: Trained, cfg: FinetuneConfig) -> Path:
        """The folder to register: by default the candidate's model folder."""
        return storage.local_dir(keys.candidate_model(trained.key))

    @abstractmethod
    def load(self, folder: Path):
        """(model, tokenizer) from a model folder this objective wrote (full model or adapter)."""

    @abstractmethod
    def load_example(self, folder: str, cfg: FinetuneConfig, adapter: bool) -> str:
        """Python that loads a registered folder (pulled to ``folder``) with plain transformers (and peft for an
        adapter) and predicts once: the "How to load" section of the version's model card."""

    @abstractmethod
    def claims(self, folder_config: dict, adapter_config: dict | None) -> bool:
        """Whether a model folder (its config.json / adapter_config.json) was written by this objective."""

    # -- predict ---------------------------------------------------------------------------------
    @abstractmethod
    def prediction_columns(self, data: dict, text_column: str | None = None,
                           text_pair_column: str | None = None) -> dict[str, str]:
        """The input columns a prediction reads, by role, from the registered ``data`` config section (a dict;
        ``{}`` for a pushed folder: the config defaults). ``text_column`` / ``text_pair_column`` override it."""

    @abstractmethod
    def predict(self, model, tokenizer, rows: pd.DataFrame, inputs: PredictionInputs) -> pd.DataFrame:
        """One batch's predictions: new columns, one row per input row (same index), in the task's own form."""


def adapter_base(cfg: FinetuneConfig) -> tuple[list[str], str]:
    """How a load example names an adapter's base model: (comment lines, ``from_pretrained`` arguments).
    A Hub id (embedded models by theirs) at the run's pinned revision, else the folder a user must fetch first."""
    from tuneline.models.base import portable_base_name

    base, revision = cfg.model.base, cfg.model.revision
    if base.startswith("registry:"):
        reference = base.removeprefix("registry:")
        local = reference.replace(":", "-v").replace("@", "-")
        return [f"# the base model is the registered {reference}: tuneline models pull {reference} {local}",
                "# (when that version is itself an adapter, use tuneline.load_model instead)"], repr(local)
    if base.startswith("s3://"):
        return [f"# the base model is the folder {base}: download it first, e.g. aws s3 cp --recursive "
                f"{base} base-model"], repr("base-model")
    arguments = repr(portable_base_name(base))
    return [], arguments + (f", revision={revision!r}" if revision else "")
