"""Train: fine-tune a pretrained encoder for sequence classification with HF Trainer.

Reads the tokenized splits under ``prepared/<key>`` and the base model folder;
writes checkpoints to ``candidates/<key>/checkpoints/``, then the fine-tuned model
(safetensors, tokenizer, config with id2label / label2id) to ``candidates/<key>/model``
and ``training.json`` beside it. Training runs in a child process
(``python -m tuneline.train_process SPEC``, the entry point ``torchrun`` launches on
several GPUs); this module holds both the parent's launcher and the child's work.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from tuneline.base_models import resolve_base_model
from tuneline.checkpoints import CheckpointStore, checkpoint_callback, step_of
from tuneline.config import FinetuneConfig, Precision, parse_config
from tuneline.errors import ConfigError, TunelineError
from tuneline.fingerprints import content_key, files_fingerprint, folder_files
from tuneline.launcher import RateLimitedLog, run_process
from tuneline.preprocess import load_split
from tuneline.storage import Storage, open_storage

TRAIN_VERSION = 1
EXIT_INPUT_ERROR = 2  # deterministic: bad config or data; retrying cannot help
EXIT_OUT_OF_MEMORY = 75  # CUDA OOM; the next attempt halves the per-device batch
EXIT_PREEMPTED = 143  # SIGTERM: a checkpoint was written before exiting


class TrainingInputError(TunelineError):
    """The training process rejected its input (never retried)."""


class TrainingInterrupted(RuntimeError):
    """The training process was killed, preempted or timed out (retried; resumes from a checkpoint)."""


class OutOfMemory(RuntimeError):
    """CUDA ran out of memory (retried with half the per-device batch, same effective batch)."""


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
    return content_key(prepared["key"], cfg.model, cfg.training.result_settings(), TRAIN_VERSION)


def candidate_prefix(prepared: dict, cfg: FinetuneConfig, run_id: str | None) -> str:
    """Content-keyed, so a retry or a re-run finds finished work; per run when caching is off."""
    key = train_key(prepared, cfg)
    return f"candidates/{key}" if cfg.cache or not run_id else f"candidates/{key}-run-{run_id[:8]}"


# -- the parent: launch, stream, interpret ----------------------------------------------------

def train_candidate(storage: Storage, prepared: dict, cfg: FinetuneConfig, log_line: Callable[[str], None] = print,
                    run_id: str | None = None) -> dict:
    """Train once per (prepared data, settings) in a child process; resume from its newest checkpoint."""
    prefix = candidate_prefix(prepared, cfg, run_id)
    if cfg.cache and storage.exists(f"{prefix}/training.json"):
        return {**storage.read_json(f"{prefix}/training.json"), "reused": True}
    scratch = Path(tempfile.mkdtemp(prefix="tuneline-train-"))
    spec = {"config": cfg.model_dump(mode="json"), "prepared": prepared, "storage_root": storage.root_uri,
            "prefix": prefix, "scratch": str(scratch)}
    (scratch / "spec.json").write_text(json.dumps(spec))
    timeout = cfg.training.timeout_minutes * 60 if cfg.training.timeout_minutes else None
    code, timed_out = run_process([sys.executable, "-m", "tuneline.train_process", str(scratch / "spec.json")],
                                  RateLimitedLog(log_line), scratch / "train.log", timeout_s=timeout,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                  on_start=lambda pid: (scratch / "pid").write_text(str(pid)))
    error = scratch / "error.txt"
    message = error.read_text() if error.exists() else ""
    if code == 0:
        storage.put_file(scratch / "train.log", f"{prefix}/train.log")
        shutil.rmtree(scratch, ignore_errors=True)
        return {**storage.read_json(f"{prefix}/training.json"), "reused": False}
    if code == EXIT_INPUT_ERROR:
        raise TrainingInputError(message)
    if code == EXIT_OUT_OF_MEMORY:
        raise OutOfMemory(message or "CUDA out of memory")
    if timed_out:
        raise TrainingInterrupted(f"training exceeded training.timeout_minutes={cfg.training.timeout_minutes}")
    raise TrainingInterrupted(f"training process ended with {describe_exit(code)}; log: {scratch / 'train.log'}"
                              + (f"\n{message}" if message else ""))


def describe_exit(code: int) -> str:
    import signal

    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return "SIGTERM (preempted; checkpoint saved)" if code == EXIT_PREEMPTED else f"exit code {code}"


# -- the child: train with checkpoints -------------------------------------------------------

def training_arguments(cfg: FinetuneConfig, output_dir: Path, precision: str, has_eval: bool,
                       batch_size: int, accumulation: int):
    import torch
    from transformers import TrainingArguments

    t = cfg.training
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=max(batch_size, 32),
        gradient_accumulation_steps=accumulation,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a share of all steps
        weight_decay=t.weight_decay,
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="steps" if t.checkpoint_every_steps else "no",
        save_steps=t.checkpoint_every_steps or 500,
        save_total_limit=None,  # CheckpointStore prunes, and only after a newer checkpoint is complete
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
    )


def batch_plan(storage: Storage, prefix: str, cfg: FinetuneConfig) -> dict:
    """Per-device batch and accumulation, as adjusted by earlier out-of-memory attempts."""
    key = f"{prefix}/oom-adjustment.json"
    if storage.exists(key):
        return storage.read_json(key)
    return {"batch_size": cfg.training.batch_size, "gradient_accumulation": cfg.training.gradient_accumulation,
            "oom_retries": 0}


def halve_batch(plan: dict) -> dict:
    """Half the per-device batch, double the accumulation: the effective batch stays the same."""
    if plan["batch_size"] <= 1:
        raise TrainingInputError("CUDA out of memory even at a per-device batch of 1; use a smaller model or "
                                 "model.max_length")
    return {"batch_size": plan["batch_size"] // 2, "gradient_accumulation": plan["gradient_accumulation"] * 2,
            "oom_retries": plan["oom_retries"] + 1}


def fine_tune(spec: dict) -> dict:
    """The child's work: full fine-tune from the base model (or resume), then save and record the model."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, set_seed)

    cfg, prepared, prefix = parse_config(spec["config"]), spec["prepared"], spec["prefix"]
    storage = open_storage(spec["storage_root"])
    store = CheckpointStore(storage, prefix, Path(spec["scratch"]))
    store.discard_incomplete()
    resume = store.newest_complete()
    plan = batch_plan(storage, prefix, cfg)
    base, labels = resolve_base_model(cfg.model.base), prepared["labels"]
    precision = resolve_precision(cfg.training.precision)
    set_seed(cfg.training.seed)
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    eval_set = load_split(storage, prepared, "validation")
    checkpointing = checkpoint_callback(store, cfg.training.checkpoint_every_minutes)
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, store.local, precision, eval_set is not None, plan["batch_size"],
                                plan["gradient_accumulation"]),
        train_dataset=load_split(storage, prepared, "train"),
        eval_dataset=eval_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[checkpointing],
    )
    if resume:
        print(f"resuming from {resume.name}", flush=True)
    started = time.perf_counter()
    try:
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.OutOfMemoryError:
        storage.write_json(f"{prefix}/oom-adjustment.json", halve_batch(plan))
        raise
    if checkpointing.preempted:
        return {"preempted": True}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        # save_pretrained, not Trainer.save_model: the latter adds training_args.bin, a pickle.
        trainer.model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        fingerprint = files_fingerprint(folder_files(model_dir))
        storage.put_dir(model_dir, f"{prefix}/model")
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    result = {
        "key": prefix,
        "model_uri": storage.uri(f"{prefix}/model"),
        "model_fingerprint": fingerprint,
        "precision": precision,
        "device": str(trainer.args.device),
        "global_step": output.global_step,
        "max_steps": trainer.state.max_steps,
        "resumed_from_step": step_of(resume.name) if resume else 0,
        "batch_size": plan["batch_size"],
        "gradient_accumulation": plan["gradient_accumulation"],
        "oom_retries": plan["oom_retries"],
        "train_loss": output.training_loss,
        "train_seconds": round(time.perf_counter() - started, 2),
        "samples_per_second": output.metrics.get("train_samples_per_second"),
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
    }
    storage.write_json(f"{prefix}/training.json", result)
    store.clear()  # the model is stored; its checkpoints are no longer needed
    return result
