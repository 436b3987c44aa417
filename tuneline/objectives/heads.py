"""Objectives that put a new task head on a pretrained model: the shared half of classification,
regression and token classification (encoders and decoders alike).

Reads the base model folder and the prepared meta; writes model folders (``save_folder``).
A subclass names its ``AutoModelFor...`` class and PEFT task type, its head options and how
logits become metrics (and predictions); this module loads the model with that head, sets a pad
token where the model has none (Llama / Qwen / Mistral-style decoders), applies the training
method, scores a model folder with ``Trainer.predict`` and the same metric function training uses,
and runs one prediction batch (encode, forward, logits -> the subclass's columns).
"""

from __future__ import annotations

import json
import tempfile
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from tuneline.data.splits import INPUT, text_input
from tuneline.metrics import headline
from tuneline.models.base import portable_base_name, resolve_base_model
from tuneline.models.methods import apply_method
from tuneline.objectives.base import Objective, PredictionInputs, TrainerParts, adapter_base

if TYPE_CHECKING:
    import pandas as pd

    from tuneline.config import FinetuneConfig
    from tuneline.results import Prepared

ADAPTER_CONFIG = "adapter_config.json"


class HeadObjective(Objective):
    """A pretrained backbone plus a freshly initialised head (``AutoModelFor<Head>``)."""

    auto_model: ClassVar[str]  # e.g. "AutoModelForSequenceClassification"
    architecture_suffix: ClassVar[str]  # e.g. "ForSequenceClassification" (config.json architectures)
    peft_task_type: ClassVar[str]  # e.g. "SEQ_CLS"

    @abstractmethod
    def head_options(self, fitted: dict) -> dict:
        """``from_pretrained`` keyword arguments for the head (num_labels, id2label, problem_type)."""

    @abstractmethod
    def metrics_from(self, logits, labels, fitted: dict, model_config=None) -> dict:
        """Every metric of one split from the model's logits and the encoded labels (the one place they are
        computed: training's validation, sweeps and evaluation all call it). ``model_config``: the scored
        model's config (None while training: the model being trained)."""

    @abstractmethod
    def example_prediction(self, cfg: FinetuneConfig) -> list[str]:
        """The model card's example after loading (``model``, ``tokenizer``, ``torch``): one input, encoded and
        predicted, the result printed in the task's own terms (labels, numbers, tags)."""

    @abstractmethod
    def prediction_encoding(self, tokenizer, rows: pd.DataFrame, inputs: PredictionInputs):
        """One batch of rows as padded PyTorch tensors (a ``BatchEncoding``), cut at ``inputs.max_length``."""

    @abstractmethod
    def predictions_from(self, logits, encoded, rows: pd.DataFrame, inputs: PredictionInputs,
                         model_config) -> pd.DataFrame:
        """The batch's prediction columns from its logits (numpy, float32); ``model_config``: the task model's."""

    def configure_model(self, model, fitted: dict) -> None:
        """Anything the head needs in the model's config before training (e.g. target scaling)."""

    def loss(self, cfg: FinetuneConfig, train_set, fitted: dict):
        """A Trainer ``compute_loss_func`` (a per-batch mean), or None for the model's own loss."""
        return None

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def model_class(self):
        import transformers

        return getattr(transformers, self.auto_model)

    # -- prepare ---------------------------------------------------------------------------------
    def tokenizer(self, base: Path):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
        if tokenizer.pad_token is None:  # decoders (Llama, Qwen, Mistral, ...) ship without one
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    # -- train -----------------------------------------------------------------------------------
    def trainer_parts(self, cfg: FinetuneConfig, base: Path, prepared: Prepared, train_set, tokenizer) -> TrainerParts:
        fitted = prepared.fitted
        model, info = self.model_class().from_pretrained(base, output_loading_info=True,
                                                         **self.head_options(fitted))
        if model.config.pad_token_id is None:  # a decoder's head pools the last non-pad token
            model.config.pad_token_id = tokenizer.pad_token_id
        self.configure_model(model, fitted)
        new_weights = sorted(info["missing_keys"])  # the freshly initialised head
        model, trainable = apply_method(model, cfg.model, new_weights, self.peft_task_type)
        lora = cfg.model.method.value == "lora"
        loss = self.loss(cfg, train_set, fitted)

        def compute_metrics(eval_pred) -> dict:
            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            return headline(self.metrics_from(logits, eval_pred.label_ids, fitted))

        def save_folder(trained_model, folder: Path) -> None:
            save_head_model(trained_model, tokenizer, folder, cfg.model.base, lora, cfg.model.revision)

        return TrainerParts(model=model, collator=self.collator(tokenizer), compute_metrics=compute_metrics,
                            save_folder=save_folder, compute_loss=loss, loss_is_mean=True,
                            adapter=lora, trainable_parameters=trainable)

    # -- evaluate --------------------------------------------------------------------------------
    def score(self, model_dir: Path, dataset, prepared: Prepared, cfg: FinetuneConfig, split: str) -> dict:
        model, tokenizer = self.load(model_dir)
        logits, labels = predict_logits(model, dataset, self.collator(tokenizer))
        return self.metrics_from(logits, labels, prepared.fitted, task_config(model))

    # -- predict ---------------------------------------------------------------------------------
    def predict(self, model, tokenizer, rows: pd.DataFrame, inputs: PredictionInputs) -> pd.DataFrame:
        import torch

        if tokenizer.pad_token is None:  # as in training: decoders ship without one
            tokenizer.pad_token = tokenizer.eos_token
        encoded = self.prediction_encoding(tokenizer, rows, inputs)
        with torch.inference_mode():
            logits = model(**{k: v.to(model.device) for k, v in encoded.items()}).logits
        return self.predictions_from(logits.float().cpu().numpy(), encoded, rows, inputs, task_config(model))

    def champion_problem(self, manifest: dict, prepared: Prepared, cfg: FinetuneConfig) -> str | None:
        problem = super().champion_problem(manifest, prepared, cfg)
        if problem or not self.has_label_set:
            return problem
        theirs = registered_labels(manifest)
        if theirs != prepared.labels:
            return f"it predicts other labels: {theirs}"
        return None

    # -- load ------------------------------------------------------------------------------------
    def load(self, folder: Path):
        from transformers import AutoConfig, AutoTokenizer

        folder = Path(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if not (folder / ADAPTER_CONFIG).is_file():
            return self.model_class().from_pretrained(folder), tokenizer
        from peft import PeftModel

        settings = json.loads((folder / ADAPTER_CONFIG).read_text())
        base = resolve_base_model(settings["base_model_name_or_path"], settings.get("revision"))
        model = self.model_class().from_pretrained(base, config=AutoConfig.from_pretrained(folder))
        return PeftModel.from_pretrained(model, folder), tokenizer

    def load_example(self, folder: str, cfg: FinetuneConfig, adapter: bool) -> str:
        """The task model from the folder; an adapter: its base with the folder's head config, then the adapter."""
        head = self.auto_model
        if not adapter:
            lines = ["import torch", f"from transformers import AutoTokenizer, {head}", "",
                     f"folder = {folder!r}", f"model = {head}.from_pretrained(folder).eval()"]
        else:
            comments, base = adapter_base(cfg)
            lines = ["import torch", "from peft import PeftModel", f"from transformers import AutoConfig, "
                     f"AutoTokenizer, {head}", "", f"folder = {folder!r}", *comments,
                     f"base = {head}.from_pretrained({base}, config=AutoConfig.from_pretrained(folder))",
                     "model = PeftModel.from_pretrained(base, folder).eval()"]
        return "\n".join([*lines, "tokenizer = AutoTokenizer.from_pretrained(folder)", "",
                          *self.example_prediction(cfg)])

    def claims(self, folder_config: dict, adapter_config: dict | None) -> bool:
        if adapter_config is not None:  # the task model's config.json beside it may name only the backbone
            return adapter_config.get("task_type") == self.peft_task_type
        return any(a.endswith(self.architecture_suffix) for a in folder_config.get("architectures") or [])


class TextObjective(HeadObjective):
    """A head over one text (or a text pair) per row: ``data.text_column`` [+ ``text_pair_column``] -> label."""

    reads_text_pairs = True
    input_noun = "texts"
    pipeline_tag = "text-classification"  # the Hub files regression under it too (num_labels=1)
    auto_model = "AutoModelForSequenceClassification"  # one head for the whole text (pair)
    architecture_suffix = "ForSequenceClassification"
    peft_task_type = "SEQ_CLS"

    @abstractmethod
    def targets(self, rows: pd.DataFrame, cfg: FinetuneConfig, fitted: dict) -> list:
        """The encoded label of each row (a class id, a scaled number)."""

    def input_columns(self, cfg: FinetuneConfig) -> list[str]:
        data = cfg.data
        return [c for c in (data.text_column, data.text_pair_column, data.label_column) if c]

    def derive(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> pd.DataFrame:
        data = cfg.data
        frame = frame.copy()
        frame[INPUT] = text_input(frame, data.text_column, data.text_pair_column)
        labels = frame[data.label_column]
        frame[data.label_column] = labels.where(labels.isna(), labels.astype(str))
        return frame

    def expectations(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> list:
        import great_expectations.expectations as gxe

        data, limits = cfg.data, cfg.validation
        found = []
        for column in (c for c in (data.text_column, data.text_pair_column) if c):
            found += [
                gxe.ExpectColumnValuesToNotBeNull(column=column),
                gxe.ExpectColumnValuesToBeOfType(column=column, type_="str"),
                gxe.ExpectColumnValueLengthsToBeBetween(column=column, min_value=limits.min_text_length,
                                                        max_value=limits.max_text_length),
            ]
        found.append(gxe.ExpectColumnValuesToNotBeNull(column=data.label_column))
        return found

    def prediction_columns(self, data: dict, text_column: str | None = None,
                           text_pair_column: str | None = None) -> dict[str, str]:
        """The text (and pair) columns it was trained on; overriding the text keeps the pair unless named too."""
        columns = {"text": text_column or data["text_column"]}
        pair = text_pair_column or data.get("text_pair_column")
        return {**columns, "text_pair": pair} if pair else columns

    def example_encoding(self, cfg: FinetuneConfig) -> list[str]:
        """The card example's input (a text, and a second text for pairs), encoded as in training."""
        pair = cfg.data.text_pair_column
        return ['texts = ["Replace this with your text."]',
                *(['pairs = ["Replace this with the second text of the pair."]'] if pair else []),
                f"encoded = tokenizer(texts, {'pairs, ' if pair else ''}padding=True, truncation=True, "
                f'max_length={cfg.model.max_length}, return_tensors="pt")']

    def prediction_encoding(self, tokenizer, rows: pd.DataFrame, inputs: PredictionInputs):
        columns = inputs.columns
        pairs = rows[columns["text_pair"]].astype(str).tolist() if "text_pair" in columns else None
        return tokenizer(rows[columns["text"]].astype(str).tolist(), pairs, truncation=True,
                         max_length=inputs.max_length, padding=True, return_tensors="pt")

    def encode(self, rows: pd.DataFrame, cfg: FinetuneConfig, tokenizer, fitted: dict):
        from datasets import Dataset

        data = cfg.data
        columns = {"text": rows[data.text_column].astype(str).tolist()}
        if data.text_pair_column:
            columns["text_pair"] = rows[data.text_pair_column].astype(str).tolist()
        columns["labels"] = self.targets(rows, cfg, fitted)

        def encode_batch(batch):
            return tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=cfg.model.max_length)

        return Dataset.from_dict(columns).map(encode_batch, batched=True,
                                              remove_columns=[c for c in columns if c != "labels"])


def task_config(model):
    """The task model's config (labels, target scaling): under a PEFT wrapper, the wrapped model's."""
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def registered_labels(manifest: dict) -> list[str] | None:
    """The label set a registered version predicts (its prepared labels; older manifests: the confusion matrix)."""
    fitted = manifest.get("fitted") or {}
    if "labels" in fitted:
        return fitted["labels"]
    return ((manifest.get("metrics") or {}).get("confusion_matrix") or {}).get("labels")


def save_head_model(model, tokenizer, folder: Path, base: str, adapter: bool, revision: str | None = None) -> None:
    """A full model folder, or (adapter) adapter_config.json + adapter_model.safetensors plus the task model's
    config.json (labels, problem type, pad token) and the tokenizer. ``save_pretrained`` only: no pickles."""
    model.save_pretrained(folder)
    if adapter:
        task_model = model.get_base_model()
        task_model.config.architectures = [type(task_model).__name__]  # the head's class, not the backbone's
        task_model.config.save_pretrained(folder)
        adapter_config = folder / ADAPTER_CONFIG
        settings = json.loads(adapter_config.read_text())
        settings["base_model_name_or_path"] = portable_base_name(base)
        settings["revision"] = revision  # the pinned Hub commit (plain PEFT loads the same base)
        adapter_config.write_text(json.dumps(settings, indent=2, sort_keys=True))
    tokenizer.save_pretrained(folder)


def predict_logits(model, dataset, collator, batch_size: int = 64):
    """(logits, labels) of a model over an encoded split, batched by ``Trainer.predict`` (GPU when there is one)."""
    import torch
    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size, report_to="none",
                                 disable_tqdm=True, label_names=["labels"], use_cpu=not torch.cuda.is_available())
        output = Trainer(model=model.eval(), args=args, data_collator=collator).predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return logits, output.label_ids
