"""Train: fine-tune a pretrained encoder for sequence classification or regression with HF Trainer.

The model (head, and full / freeze / lora training) comes from ``tuneline.model_setup``;
early stopping (``training.early_stopping_patience``) scores the gate metric on the
validation split and restores the best checkpoint at the end.

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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuneline.base_models import resolve_base_model
from tuneline.checkpoints import CheckpointStore, checkpoint_callback, step_of
from tuneline.config import FinetuneConfig, Precision, lower_is_better, parse_config
from tuneline.errors import ConfigError, TunelineError
from tuneline.fingerprints import content_key, files_fingerprint, folder_files
from tuneline.gpu_launch import training_command
from tuneline.launcher import RateLimitedLog, run_process
from tuneline.model_setup import build_model, class_weight_loss, portable_base_name
from tuneline.preprocess import load_split
from tuneline.storage import Storage, open_storage

TRAIN_VERSION = 1
EXIT_INPUT_ERROR = 2  # deterministic: bad config or data; retrying cannot help
EXIT_OUT_OF_MEMORY = 75  # CUDA OOM; the next attempt halves the per-device batch
EXIT_PREEMPTED = 143  # SIGTERM: a checkpoint was written before exiting
EXIT_KINDS = {"input": EXIT_INPUT_ERROR, "oom": EXIT_OUT_OF_MEMORY, "preempted": EXIT_PREEMPTED}
PROGRESS_PREFIX = "PROGRESS "  # a child's stdout line carrying JSON progress for the parent


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

def progress_lines(log_line: Callable[[str], None], on_progress: Callable[[dict], None] | None):
    """Route the child's ``PROGRESS {json}`` lines to ``on_progress``; everything else to the (rate-limited) log."""
    limited = RateLimitedLog(log_line)

    def route(line: str) -> None:
        if line.startswith(PROGRESS_PREFIX):
            if on_progress:
                on_progress(json.loads(line[len(PROGRESS_PREFIX):]))
        else:
            limited(line)

    return route


def train_candidate(storage: Storage, prepared: dict, cfg: FinetuneConfig, log_line: Callable[[str], None] = print,
                    run_id: str | None = None, on_progress: Callable[[dict], None] | None = None) -> dict:
    """Train once per (prepared data, settings) in a child process; resume from its newest checkpoint.

    ``on_progress`` receives ``{"step", "max_steps", "epoch", "loss"}`` as training advances.
    """
    prefix = candidate_prefix(prepared, cfg, run_id)
    if cfg.cache and storage.exists(f"{prefix}/training.json"):
        return {**storage.read_json(f"{prefix}/training.json"), "reused": True}
    scratch = Path(tempfile.mkdtemp(prefix="tuneline-train-"))
    spec = {"config": cfg.model_dump(mode="json"), "prepared": prepared, "storage_root": storage.root_uri,
            "prefix": prefix, "scratch": str(scratch)}
    (scratch / "spec.json").write_text(json.dumps(spec))
    timeout = cfg.training.timeout_minutes * 60 if cfg.training.timeout_minutes else None
    code, timed_out = run_process(training_command(scratch / "spec.json"),
                                  progress_lines(log_line, on_progress), scratch / "train.log", timeout_s=timeout,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                  on_start=lambda pid: (scratch / "pid").write_text(str(pid)))
    error, kind = scratch / "error.txt", scratch / "exit-kind"
    message = error.read_text() if error.exists() else ""
    code = EXIT_KINDS.get(kind.read_text().strip(), code) if code and kind.exists() else code  # torchrun says 1
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

def evaluation_schedule(cfg: FinetuneConfig, has_eval: bool, train_rows: int, batch_size: int,
                        accumulation: int) -> dict:
    """Eval / save strategies. Early stopping evaluates and checkpoints together every N steps, N being
    ``checkpoint_every_steps`` or one epoch, whichever is shorter, so the best checkpoint always exists."""
    t = cfg.training
    if not (t.early_stopping_patience and has_eval):
        return {"eval_strategy": "epoch" if has_eval else "no",
                "save_strategy": "steps" if t.checkpoint_every_steps else "no",
                "save_steps": t.checkpoint_every_steps or 500}
    steps_per_epoch = max(1, -(-train_rows // (batch_size * accumulation)))
    every = min(t.checkpoint_every_steps or steps_per_epoch, steps_per_epoch)
    metric = cfg.evaluation.metric.value
    return {"eval_strategy": "steps", "eval_steps": every, "save_strategy": "steps", "save_steps": every,
            "load_best_model_at_end": True, "metric_for_best_model": metric,
            "greater_is_better": not lower_is_better(metric)}


def training_arguments(cfg: FinetuneConfig, output_dir: Path, precision: str, has_eval: bool,
                       batch_size: int, accumulation: int, train_rows: int = 0):
    import torch
    from transformers import TrainingArguments

    t = cfg.training
    schedule = evaluation_schedule(cfg, has_eval, train_rows, batch_size, accumulation)
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
        **schedule,
        label_names=["labels"],  # explicit: a PEFT-wrapped model hides its forward signature
        save_total_limit=None,  # CheckpointStore prunes, and only after a newer checkpoint is complete
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
    )


def progress_callback():
    """A TrainerCallback printing ``PROGRESS {json}`` at each log step (the parent turns it into progress)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:
                return
            report = {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
                      "loss": (logs or {}).get("loss"), "eval_loss": (logs or {}).get("eval_loss")}
            print(PROGRESS_PREFIX + json.dumps(report), flush=True)

    return Progress()


def metrics_function(prepared: dict):
    """``compute_metrics`` for the Trainer: the tuneline metrics on the validation split (original units)."""
    from tuneline.metrics import classification_metrics, headline, regression_metrics
    from tuneline.targets import unscale

    def compute(eval_pred) -> dict:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, tuple) else logits
        if prepared.get("task") == "regression":
            scaling = prepared.get("target_scaling")
            return regression_metrics(unscale(labels, scaling), unscale(logits[:, 0], scaling))
        return headline(classification_metrics(labels, logits.argmax(-1), prepared["labels"]))

    return compute


def early_stopping_callback(patience: int):
    """HF's EarlyStoppingCallback whose patience counter survives a resume (restored from trainer_state)."""
    from transformers import EarlyStoppingCallback

    class ResumableEarlyStopping(EarlyStoppingCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            saved = (state.stateful_callbacks or {}).get(type(self).__name__)
            saved = saved[0] if isinstance(saved, list) and saved else saved
            if isinstance(saved, dict):
                self.early_stopping_patience_counter = saved.get("attributes", {}).get(
                    "early_stopping_patience_counter", 0)
            return super().on_train_begin(args, state, control, **kwargs)

    return ResumableEarlyStopping(early_stopping_patience=patience)


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


def save_model_folder(model, tokenizer, model_dir: Path, cfg: FinetuneConfig) -> None:
    """A full model folder, or (lora) adapter_config.json + adapter_model.safetensors plus the task model's
    config.json (labels, problem type, target scaling) and the tokenizer."""
    model.save_pretrained(model_dir)
    if cfg.model.method.value == "lora":
        model.get_base_model().config.save_pretrained(model_dir)
        adapter_config = model_dir / "adapter_config.json"
        settings = json.loads(adapter_config.read_text())
        settings["base_model_name_or_path"] = portable_base_name(cfg.model.base)
        adapter_config.write_text(json.dumps(settings, indent=2, sort_keys=True))
    tokenizer.save_pretrained(model_dir)


@dataclass
class TrainerSetup:
    """What a task contributes to the shared training loop in ``fine_tune``."""

    trainer: Any
    save_folder: Callable[[Path], None]  # writes the model folder (safetensors only) to the given path
    extra_result: Callable[[Any], dict]  # the task's own training.json fields, given Trainer.train's output


def is_main_process() -> bool:
    """Rank 0 under torchrun (one process per GPU), or the only process: the one that writes results."""
    return int(os.environ.get("RANK", "0")) == 0


def fine_tune(spec: dict) -> dict:
    """The child's work: train from the base model (or resume), then save and record the model (rank 0)."""
    import torch
    from transformers import set_seed

    cfg, prepared, prefix = parse_config(spec["config"]), spec["prepared"], spec["prefix"]
    storage = open_storage(spec["storage_root"])
    store = CheckpointStore(storage, prefix, Path(spec["scratch"]))
    if is_main_process():
        store.discard_incomplete()
    resume = store.newest_complete()
    plan = batch_plan(storage, prefix, cfg)
    precision = resolve_precision(cfg.training.precision)
    set_seed(cfg.training.seed)
    checkpointing = checkpoint_callback(store, cfg.training.checkpoint_every_minutes)
    if cfg.task.value == "causal_lm":  # instruction tuning of a decoder
        from tuneline.causal_lm import causal_lm_setup as task_setup
    else:
        task_setup = encoder_setup
    setup = task_setup(cfg, prepared, storage, store, plan, precision, [checkpointing, progress_callback()])
    if resume:
        print(f"resuming from {resume.name}", flush=True)
    started = time.perf_counter()
    try:
        output = setup.trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.OutOfMemoryError:
        if is_main_process():
            storage.write_json(f"{prefix}/oom-adjustment.json", halve_batch(plan))
        raise
    if checkpointing.preempted:
        return {"preempted": True}
    if not is_main_process():
        return {"rank": int(os.environ["RANK"])}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        setup.save_folder(model_dir)
        fingerprint = files_fingerprint(folder_files(model_dir))
        storage.put_dir(model_dir, f"{prefix}/model")
    trainer = setup.trainer
    result = {
        "key": prefix,
        "model_uri": storage.uri(f"{prefix}/model"),
        "model_fingerprint": fingerprint,
        "method": cfg.model.method.value,
        "precision": precision,
        "device": str(trainer.args.device),
        "processes": trainer.args.world_size,
        "global_step": output.global_step,
        "max_steps": trainer.state.max_steps,
        "resumed_from_step": step_of(resume.name) if resume else 0,
        "batch_size": plan["batch_size"],
        "gradient_accumulation": plan["gradient_accumulation"],
        "oom_retries": plan["oom_retries"],
        "train_loss": output.training_loss,
        "train_seconds": round(time.perf_counter() - started, 2),
        "samples_per_second": output.metrics.get("train_samples_per_second"),
        **setup.extra_result(output),
    }
    storage.write_json(f"{prefix}/training.json", result)
    store.clear()  # the model is stored; its checkpoints are no longer needed
    return result


def encoder_setup(cfg: FinetuneConfig, prepared: dict, storage: Storage, store: CheckpointStore, plan: dict,
                  precision: str, callbacks: list) -> TrainerSetup:
    """Sequence classification or regression on an encoder: full, freeze or lora (``tuneline.model_setup``)."""
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer

    base, labels = resolve_base_model(cfg.model.base), prepared["labels"]
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    model, trainable = build_model(cfg, base, prepared)
    train_set, eval_set = load_split(storage, prepared, "train"), load_split(storage, prepared, "validation")
    if cfg.training.early_stopping_patience and eval_set is None:
        raise TrainingInputError("training.early_stopping_patience needs a validation split; it is empty "
                                 "(raise data.validation_fraction or add rows with split 'validation')")
    if cfg.training.early_stopping_patience:
        callbacks = [*callbacks, early_stopping_callback(cfg.training.early_stopping_patience)]
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, store.local, precision, eval_set is not None, plan["batch_size"],
                                plan["gradient_accumulation"], len(train_set)),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=metrics_function(prepared) if eval_set is not None else None,
        compute_loss_func=class_weight_loss(cfg, train_set, labels),
        callbacks=callbacks,
    )
    if trainer.compute_loss_func is not None:
        trainer.loss_is_scaled_for_ga = False  # the class-weighted loss is a per-batch mean

    def extra_result(output) -> dict:
        evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        best = trainer.state.best_model_checkpoint
        metric = cfg.evaluation.metric.value
        return {
            "eval_loss": evals[-1]["eval_loss"] if evals else None,
            # the validation curve, across resumes (the history travels in the checkpoint's trainer_state)
            "evaluations": [{"step": h["step"], "loss": h["eval_loss"], metric: h.get(f"eval_{metric}")}
                            for h in evals],
            "trainable_parameters": trainable,
            "stopped_early": output.global_step < trainer.state.max_steps,
            "best_metric": trainer.state.best_metric,
            "best_checkpoint": Path(best).name if best else None,
        }

    # save_pretrained, not Trainer.save_model: the latter adds training_args.bin, a pickle.
    return TrainerSetup(trainer, lambda folder: save_model_folder(trainer.model, tokenizer, folder, cfg),
                        extra_result)
