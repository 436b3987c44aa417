"""Train: fine-tune a pretrained encoder for sequence classification with HF Trainer.

Reads the tokenized splits under ``prepared/<key>`` and the base model folder;
writes the fine-tuned model (safetensors, tokenizer, config with id2label /
label2id) to ``candidates/<key>/model`` and a ``training.json`` beside it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tuneline.base_models import resolve_base_model
from tuneline.config import FinetuneConfig, Precision
from tuneline.errors import ConfigError
from tuneline.fingerprints import content_key, files_fingerprint, folder_files
from tuneline.preprocess import load_split
from tuneline.storage import Storage

TRAIN_VERSION = 1


def resolve_precision(precision: Precision) -> str:
    """'bf16' on a CUDA GPU that has it when auto, else 'fp32'; fp16 needs CUDA."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == Precision.auto:
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == Precision.fp16 and not cuda:
        raise ConfigError("training.precision: fp16 needs a CUDA GPU; use auto, fp32 or bf16")
    return precision.value


def train_key(prepared: dict, cfg: FinetuneConfig) -> str:
    return content_key(prepared["key"], cfg.model, cfg.training, TRAIN_VERSION)


def training_arguments(cfg: FinetuneConfig, output_dir: Path, precision: str, has_eval: bool):
    import torch
    from transformers import TrainingArguments

    t = cfg.training
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=max(t.batch_size, 32),
        gradient_accumulation_steps=t.gradient_accumulation,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a share of all steps
        weight_decay=t.weight_decay,
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
    )


def fine_tune(train_set, eval_set, labels: list[str], cfg: FinetuneConfig, model_dir: Path) -> dict:
    """Full fine-tune from the base model; saves the model folder and returns training stats."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, set_seed)

    base = resolve_base_model(cfg.model.base)
    precision = resolve_precision(cfg.training.precision)
    set_seed(cfg.training.seed)
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(
            model=model,
            args=training_arguments(cfg, Path(scratch), precision, eval_set is not None),
            train_dataset=train_set,
            eval_dataset=eval_set,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
        )
        started = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - started
        # save_pretrained, not Trainer.save_model: the latter adds training_args.bin, a pickle.
        trainer.model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    return {
        "precision": precision,
        "device": str(trainer.args.device),
        "global_step": output.global_step,
        "train_loss": output.training_loss,
        "train_seconds": round(seconds, 2),
        "samples_per_second": output.metrics.get("train_samples_per_second"),
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
    }


def train_candidate(storage: Storage, prepared: dict, cfg: FinetuneConfig) -> dict:
    """Train once per (prepared data, model and training settings); returns the candidate's key and stats."""
    prefix = f"candidates/{train_key(prepared, cfg)}"
    if storage.exists(f"{prefix}/training.json"):
        return {**storage.read_json(f"{prefix}/training.json"), "reused": True}
    train_set = load_split(storage, prepared, "train")
    eval_set = load_split(storage, prepared, "validation")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        stats = fine_tune(train_set, eval_set, prepared["labels"], cfg, model_dir)
        fingerprint = files_fingerprint(folder_files(model_dir))
        storage.put_dir(model_dir, f"{prefix}/model")
    result = {"key": prefix, "model_uri": storage.uri(f"{prefix}/model"), "model_fingerprint": fingerprint, **stats}
    storage.write_json(f"{prefix}/training.json", result)
    return {**result, "reused": False}

