"""The training child's work: one HF Trainer loop for every objective, with checkpoints and resume.

Reads the spec the parent wrote (config, prepared meta, storage root, candidate prefix), the
encoded splits under ``prepared/<key>`` and the base model folder; writes checkpoints to
``candidates/<key>/checkpoints/``, then the model folder to ``candidates/<key>/model`` and
``training.json`` beside it (rank 0 only under torchrun). The objective supplies the model, collator,
loss and metrics (``TrainerParts``); early stopping (``training.early_stopping_patience``) scores the
gate metric on the validation split and restores the best checkpoint at the end.

Test hooks (inert unless their variable is set; read only here, in the training child):
``TUNELINE_FAULT_OOM_AT_STEP=N`` raises ``torch.OutOfMemoryError`` at the end of step N while no earlier
attempt has hit out-of-memory (``oom_retries`` is 0), so the OOM retry path can be caused on a CPU
(tests/faults/test_oom_retry.py); the retry, with the halved batch, trains on.
``TUNELINE_FAULT_INPUT_ERROR_RANK=R`` makes rank R alone fail at its first step with the input error a bad
batch raises, so a data error in one of several data-parallel processes can be caused
(tests/faults/test_ddp.py): the attempt must fail as an input error, not be retried.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from tuneline import keys, objectives
from tuneline.config import FinetuneConfig, learning_rate, parse_config
from tuneline.data.encoded import load_split
from tuneline.fingerprints import files_fingerprint, folder_files
from tuneline.models.base import resolve_base
from tuneline.results import Prepared
from tuneline.storage import Storage, open_storage
from tuneline.training.checkpoints import CheckpointStore, checkpoint_callback, step_of
from tuneline.training.batching import LengthGroupedSampler
from tuneline.training.launcher import resolve_precision
from tuneline.training.outcomes import PROGRESS_PREFIX, TrainingInputError
from tuneline.training.reporting import Reporting
from tuneline.training.speed import Throughput, recorded_settings, set_attention, speed_settings


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
            "greater_is_better": not objectives.lower_is_better(metric)}


def logging_every(cfg: FinetuneConfig, train_rows: int, batch_size: int, accumulation: int) -> int:
    """Steps between loss logs: every 10, or often enough for about 20 points on a short run's curve."""
    steps = int(cfg.training.epochs * max(1, -(-train_rows // (batch_size * accumulation))))
    return max(1, min(10, steps // 20))


def training_arguments(cfg: FinetuneConfig, output_dir: Path, precision: str, has_eval: bool,
                       batch_size: int, accumulation: int, train_rows: int = 0, reporting: dict | None = None):
    import torch
    from transformers import TrainingArguments

    t = cfg.training
    schedule = evaluation_schedule(cfg, has_eval, train_rows, batch_size, accumulation)
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        learning_rate=learning_rate(cfg),
        per_device_train_batch_size=batch_size,
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
        logging_steps=logging_every(cfg, train_rows, batch_size, accumulation),
        disable_tqdm=True,
        **speed_settings(t, batch_size),  # TF32, fused AdamW, loader workers, compile, ... (training/speed.py)
        # training.report_to and the run's name: HF's TensorBoard / MLflow callbacks (training/reporting.py)
        **(reporting or {"report_to": "none"}),
    )


def progress_callback(throughput: Throughput):
    """A TrainerCallback printing ``PROGRESS {json}`` at each log step (the parent turns it into progress)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:
                return
            report = {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
                      "loss": (logs or {}).get("loss"), "eval_loss": (logs or {}).get("eval_loss"),
                      "tokens_per_second": throughput.tokens_per_second()}
            print(PROGRESS_PREFIX + json.dumps(report), flush=True)

    return Progress()


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
    key = keys.oom_adjustment(prefix)
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


FAULT_OOM_AT_STEP = "TUNELINE_FAULT_OOM_AT_STEP"  # test hooks: see the module docstring
FAULT_INPUT_ERROR_RANK = "TUNELINE_FAULT_INPUT_ERROR_RANK"


def injected_faults(plan: dict) -> list:
    """Test hooks: out-of-memory at step ``$TUNELINE_FAULT_OOM_AT_STEP`` (first OOM only); an input error in
    rank ``$TUNELINE_FAULT_INPUT_ERROR_RANK`` at its first step."""
    at, rank = os.environ.get(FAULT_OOM_AT_STEP), os.environ.get(FAULT_INPUT_ERROR_RANK)
    import torch
    from transformers import TrainerCallback

    class InjectedOutOfMemory(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(at):
                raise torch.OutOfMemoryError(f"{FAULT_OOM_AT_STEP}={at}: injected at step {state.global_step}")

    class InjectedInputError(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            raise TrainingInputError(f"{FAULT_INPUT_ERROR_RANK}={rank}: a bad batch in rank {rank} (injected)")

    return ([InjectedOutOfMemory()] if at and not plan["oom_retries"] else []) + (
        [InjectedInputError()] if rank is not None and rank == os.environ.get("RANK", "0") else [])


def is_main_process() -> bool:
    """Rank 0 under torchrun (one process per GPU), or the only process: the one that writes results."""
    return int(os.environ.get("RANK", "0")) == 0


def trainer_class():
    """HF's Trainer, serving ``training.batching: length_grouped`` batches and counting the tokens it trains on."""
    from transformers import Trainer

    class TunelineTrainer(Trainer):
        batching = "padded"
        throughput = None

        def _get_train_sampler(self, train_dataset=None):
            if self.batching != "length_grouped":
                return super()._get_train_sampler(train_dataset)
            return LengthGroupedSampler(self.train_dataset if train_dataset is None else train_dataset,
                                        self.args.train_batch_size,
                                        self.args.data_seed or self.args.seed)

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.throughput.count(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    return TunelineTrainer


def build_trainer(cfg: FinetuneConfig, prepared: Prepared, storage: Storage, store: CheckpointStore, plan: dict,
                  precision: str, throughput: Throughput, callbacks: list, reporting: dict | None = None):
    """(Trainer, the objective's TrainerParts) over the prepared train / validation splits."""
    objective = objectives.get(prepared.objective)
    base = resolve_base(cfg.model, cfg.storage_root()).folder
    tokenizer = objective.tokenizer(base)
    train_set, eval_set = load_split(storage, prepared, "train"), load_split(storage, prepared, "validation")
    if train_set is None:
        raise TrainingInputError("the training split is empty: lower data.validation_fraction / test_fraction")
    parts = objective.trainer_parts(cfg, base, prepared, train_set, tokenizer)
    attention = set_attention(parts.model, cfg.training.attention.value)
    if parts.check_model:
        parts.check_model(parts.model)
    if parts.model_columns:
        train_set = train_set.select_columns(parts.model_columns)
        eval_set = eval_set.select_columns(parts.model_columns) if eval_set is not None else None
    if cfg.training.early_stopping_patience:
        if eval_set is None:
            raise TrainingInputError("training.early_stopping_patience needs a validation split; it is empty "
                                     "(raise data.validation_fraction or add rows with split 'validation')")
        callbacks = [*callbacks, early_stopping_callback(cfg.training.early_stopping_patience)]
    trainer = trainer_class()(
        model=parts.model,
        args=training_arguments(cfg, store.local, precision, eval_set is not None, plan["batch_size"],
                                plan["gradient_accumulation"], len(train_set), reporting),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=parts.collator,
        processing_class=tokenizer,
        compute_metrics=parts.compute_metrics if eval_set is not None else None,
        compute_loss_func=parts.compute_loss,
        callbacks=callbacks,
    )
    if parts.loss_is_mean:  # e.g. BERT's classification loss: its forward takes **kwargs, so the Trainer would
        trainer.model_accepts_loss_kwargs = False  # pass num_items_in_batch, count the mean as scaled and not divide
        trainer.loss_is_scaled_for_ga = False  # it by the accumulation steps: loss and gradients x accumulation
    trainer.batching, trainer.throughput = objective.batching(cfg), throughput
    trainer.settings = recorded_settings(trainer.args, trainer.batching, attention)
    return trainer, parts


def validation_record(trainer, cfg: FinetuneConfig, global_step: int) -> dict:
    """training.json's view of the validation split: the curve, the final metrics, the best checkpoint."""
    if trainer.eval_dataset is None:
        return {}
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    last = evals[-1] if evals and evals[-1].get("step") == global_step else trainer.evaluate()
    final = {k.removeprefix("eval_"): v for k, v in last.items()
             if k.startswith("eval_") and isinstance(v, (int, float)) and not k.endswith(("_runtime", "per_second"))}
    final = objectives.get(cfg.task.value).describe_validation(final)
    metric = cfg.evaluation.metric.value
    best = trainer.state.best_model_checkpoint
    return {
        "eval_loss": final.get("loss"),
        # the validation curve, across resumes (the history travels in the checkpoint's trainer_state)
        "evaluations": [{"step": h["step"], "loss": h["eval_loss"], metric: h.get(f"eval_{metric}")} for h in evals],
        "validation_metrics": final or None,
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": Path(best).name if best else None,
    }


def fine_tune(spec: dict) -> dict:
    """The child's work: train from the base model (or resume), then save and record the model (rank 0)."""
    import torch
    from transformers import set_seed

    cfg, prepared, prefix = parse_config(spec["config"]), Prepared(**spec["prepared"]), spec["prefix"]
    storage = open_storage(spec["storage_root"])
    store = CheckpointStore(storage, prefix, Path(spec["scratch"]))
    if is_main_process():
        store.discard_incomplete()
    resume = store.newest_complete()
    plan = batch_plan(storage, prefix, cfg)
    precision = resolve_precision(cfg.training.precision)
    set_seed(cfg.training.seed)
    checkpointing = checkpoint_callback(store, cfg.training.checkpoint_every_minutes)
    reporting = Reporting(cfg, storage, prefix, Path(spec["scratch"]))
    throughput = Throughput(int(os.environ.get("WORLD_SIZE", "1")))
    trainer, parts = build_trainer(cfg, prepared, storage, store, plan, precision, throughput,
                                   [checkpointing, progress_callback(throughput), *reporting.configure(),
                                    *injected_faults(plan)], reporting.arguments())
    if resume:
        print(f"resuming from {resume.name}", flush=True)
    started = time.perf_counter()
    failed = True
    try:
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        failed = False
    except torch.OutOfMemoryError:
        if is_main_process():
            storage.write_json(keys.oom_adjustment(prefix), halve_batch(plan))
        raise
    finally:
        reporting.training_ended(trainer, failed)
    if checkpointing.preempted:
        return {"preempted": True}
    if not is_main_process():
        return {"rank": int(os.environ["RANK"])}
    finished = time.perf_counter()
    train_seconds = round(finished - started, 2)
    throughput = trainer.throughput.record(finished - (trainer.throughput.started or started),
                                           sum(p.numel() for p in trainer.model.parameters()), trainer.args.device)
    validation = validation_record(trainer, cfg, output.global_step)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        parts.save_folder(trainer.model, model_dir)
        fingerprint = files_fingerprint(folder_files(model_dir))
        storage.put_dir(model_dir, keys.candidate_model(prefix))
    result = {
        "key": prefix,
        "model_uri": storage.uri(keys.candidate_model(prefix)),
        "model_fingerprint": fingerprint,
        "objective": prepared.objective,
        "method": cfg.model.method.value,
        "learning_rate": learning_rate(cfg),
        "precision": precision,
        "device": str(trainer.args.device),
        "processes": trainer.args.world_size,
        "global_step": output.global_step,
        "max_steps": trainer.state.max_steps,
        "resumed_from_step": step_of(resume.name) if resume else 0,
        "batch_size": plan["batch_size"],
        "gradient_accumulation": plan["gradient_accumulation"],
        "effective_batch_size": plan["batch_size"] * plan["gradient_accumulation"] * trainer.args.world_size,
        "oom_retries": plan["oom_retries"],
        "train_loss": output.training_loss,
        "train_seconds": train_seconds,
        **throughput,  # tokens/s, samples/s, padding efficiency, peak memory, MFU (this attempt's steps)
        "settings": trainer.settings,
        "trainable_parameters": parts.trainable_parameters,
        "adapter": parts.adapter,
        "stopped_early": output.global_step < trainer.state.max_steps,
        **validation,
        "train_losses": [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h],
        **reporting.record(),
    }
    storage.write_json(keys.training_record(prefix), result)
    store.clear()  # the model is stored; its checkpoints are no longer needed
    return result
