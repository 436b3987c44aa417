"""Train, as the parent sees it: pick the candidate's key, hold its lease, launch the child, stream it, read the outcome.

Reads the prepared meta and the config; writes ``candidates/<key>/train.log`` once the child has
succeeded (the child writes the model folder, ``training.json`` and the checkpoints) and
``candidates/<key>/lease.json`` while it trains (``lease.py``: one writer per candidate, a second
run with the same key waits, then reuses the result). Training runs in a child process
(``python -m tuneline.training.process SPEC``, the entry point ``torchrun`` launches on several GPUs; with
``training.engine: ray``, the Ray driver ``python -m tuneline.training.ray_engine SPEC``), so a crash, an OOM
or a kill never takes the flow down; the exit code decides whether the attempt is retried.
``training.timeout_minutes`` is the budget of all attempts of one run together.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from tuneline import keys, objectives
from tuneline.config import Engine, FinetuneConfig, Precision, TrainingConfig, learning_rate
from tuneline.errors import ConfigError
from tuneline.results import Prepared, Trained
from tuneline.storage import Storage
from tuneline.tracking import check_reporting, publish_tensorboard
from tuneline.training import lease, ray_launch
from tuneline.training.child import RateLimitedLog, run_process
from tuneline.training.gpu_launch import training_command, training_processes
from tuneline.training.outcomes import (EXIT_INPUT_ERROR, EXIT_KINDS, EXIT_OUT_OF_MEMORY, EXIT_PREEMPTED,
                                        PARENT_PID_ENV, PROGRESS_PREFIX, OutOfMemory, TrainingInputError,
                                        TrainingInterrupted, TrainingStopped, TrainingTimedOut)

# Seconds the attempts of one run have trained each candidate, in this process (Prefect retries a task in
# the process of its flow run): what is left of training.timeout_minutes for the next attempt.
SPENT_S: dict[str, float] = {}


def resolve_precision(precision: Precision) -> str:
    """'bf16' on a CUDA GPU that has it when auto, else 'fp32'; fp16 needs CUDA."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == Precision.auto:
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == Precision.fp16 and not cuda:
        raise ConfigError("training.precision: fp16 needs a CUDA GPU; use auto, fp32 or bf16")
    return precision.value


def train_key(prepared: Prepared, cfg: FinetuneConfig) -> str:
    """Everything that changes the trained weights: data, model and training settings, the resolved precision,
    the number of training processes and, with early stopping, the metric and how often it is evaluated."""
    early_stopping = None
    if cfg.training.early_stopping_patience:
        early_stopping = {"metric": cfg.evaluation.metric.value, "every_steps": cfg.training.checkpoint_every_steps}
    model = cfg.model.model_dump(mode="json", exclude={"token_secret"})  # where a token comes from is not the model
    precision, processes = planned_run(cfg.training)
    return keys.cache_key(keys.TRAIN_VERSION, prepared.objective, prepared.key, model,
                          cfg.training.result_settings(), learning_rate(cfg), precision, processes, early_stopping)


def planned_run(training: TrainingConfig) -> tuple[str, int]:
    """(precision, training processes): on this machine (local), or on the Ray workers (ray), whose hardware the
    flow's machine may not have. The engine itself and the cluster's address are not part of the key."""
    if training.engine == Engine.ray:
        return ray_launch.planned_precision(training), training.ray.workers
    return resolve_precision(training.precision), training_processes(training.processes)


def child_command(spec_path: Path, training: TrainingConfig) -> list[str]:
    """The training child: ``tuneline.training.process`` (under torchrun for several processes), or the Ray driver."""
    if training.engine == Engine.ray:
        return ray_launch.ray_command(str(spec_path))
    return training_command(spec_path, training_processes(training.processes))


def candidate_prefix(prepared: Prepared, cfg: FinetuneConfig, run_id: str | None) -> str:
    """Content-keyed, so a retry or a re-run finds finished work; per run when caching is off."""
    return keys.candidate_prefix(train_key(prepared, cfg), None if cfg.cache else run_id)


def progress_lines(log_line: Callable[[str], None], on_progress: Callable[[dict], None] | None):
    """Route the child's ``PROGRESS {json}`` lines to ``on_progress``; everything else to the (rate-limited) log.

    Reporting is best effort: a line that is not progress JSON is logged as text, and a failing
    ``on_progress`` (e.g. the Prefect API is down) is logged once per kind and ignored. Neither may stop
    the log reader, since a reader that stops leaves the child blocked on a full pipe.
    """
    limited = RateLimitedLog(log_line)
    reported: set[str] = set()

    def route(line: str) -> None:
        if not line.startswith(PROGRESS_PREFIX):
            limited(line)
            return
        try:
            report = json.loads(line[len(PROGRESS_PREFIX):])
        except ValueError:
            limited(line)
            return
        if on_progress is None:
            return
        try:
            on_progress(report)
        except Exception as err:  # noqa: BLE001 - progress must never stop training
            kind = type(err).__name__
            if kind not in reported:
                reported.add(kind)
                log_line(f"progress not reported ({kind}: {err}); training goes on")

    return route


def train_candidate(storage: Storage, prepared: Prepared, cfg: FinetuneConfig, log_line: Callable[[str], None] = print,
                    run_id: str | None = None, on_progress: Callable[[dict], None] | None = None) -> Trained:
    """Train once per (prepared data, settings) in a child process; resume from its newest checkpoint.

    ``on_progress`` receives ``{"step", "max_steps", "epoch", "loss"}`` as training advances.
    """
    objectives.get(prepared.objective)  # an unknown objective fails here, not in the child
    check_reporting(cfg)
    if cfg.training.engine == Engine.ray:
        ray_launch.check(cfg.training)  # no ray package, no cluster address: one ConfigError now, never retried
    prefix = candidate_prefix(prepared, cfg, run_id)
    record = keys.training_record(prefix)
    if cfg.cache and storage.exists(record):
        return Trained(**storage.read_json(record), reused=True)
    with lease.held(storage, keys.training_lease(prefix), log_line) as held:
        if storage.exists(record):  # trained by the run that held the lease while this one waited
            return Trained(**storage.read_json(record), reused=True)
        scratch = Path(tempfile.mkdtemp(prefix="tuneline-train-"))
        try:
            return run_attempt(storage, prepared, cfg, prefix, scratch, log_line, on_progress, held,
                               budget=f"{run_id}:{prefix}")
        finally:  # scratch holds checkpoint copies on S3 roots: never left behind, whatever happened
            publish_tensorboard(storage, scratch, prefix, log_line)  # the attempt's event files (non-local roots)
            shutil.rmtree(scratch, ignore_errors=True)


def run_attempt(storage: Storage, prepared: Prepared, cfg: FinetuneConfig, prefix: str, scratch: Path,
                log_line: Callable[[str], None], on_progress: Callable[[dict], None] | None,
                held: lease.Lease, budget: str) -> Trained:
    """One training attempt in a child process; its failure carries the log's last lines and where the log is."""
    settings = cfg.training
    timeout = None
    if settings.timeout_minutes:
        timeout = settings.timeout_minutes * 60 - SPENT_S.get(budget, 0.0)
        if timeout <= 0:
            raise TrainingTimedOut(f"training.timeout_minutes={settings.timeout_minutes} is spent by this run's "
                                   "earlier attempts; a new run resumes from the last checkpoint")
    spec = {"config": cfg.model_dump(mode="json"), "prepared": prepared.model_dump(mode="json"),
            "storage_root": storage.root_uri, "prefix": prefix, "scratch": str(scratch)}
    (scratch / "spec.json").write_text(json.dumps(spec))
    log, started = scratch / "train.log", time.monotonic()
    try:
        ended = run_process(child_command(scratch / "spec.json", settings), progress_lines(log_line, on_progress), log,
                            timeout_s=timeout, stall_s=settings.stall_minutes and settings.stall_minutes * 60,
                            grace_s=settings.stop_grace_seconds, stop=held.lost,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", PARENT_PID_ENV: str(os.getpid())},
                            on_start=lambda pid: (scratch / "pid").write_text(str(pid)))
    finally:
        SPENT_S[budget] = SPENT_S.get(budget, 0.0) + time.monotonic() - started
    kind = scratch / "exit-kind"
    code = ended.code
    code = EXIT_KINDS.get(kind.read_text().strip(), code) if code and kind.exists() else code  # torchrun, ray: 1
    error = scratch / ("input-error.txt" if code == EXIT_INPUT_ERROR else "error.txt")  # the rank that had it
    message = error.read_text() if error.exists() else ""
    if ended.stopped_for == "stop":  # its writes may no longer be its own: nothing more is uploaded
        raise TrainingInterrupted(f"another process took over {storage.uri(held.key)} (this one had not renewed "
                                  f"it for {held.ttl_s:.0f}s): this attempt stopped without writing more")
    if code == 0:
        storage.put_file(log, keys.training_log(prefix))
        return Trained(**storage.read_json(keys.training_record(prefix)))
    where = f"log: {keep_failed_log(storage, log, prefix)}\n{last_lines(log)}"
    if code == EXIT_INPUT_ERROR:
        raise TrainingInputError(message)
    if code == EXIT_OUT_OF_MEMORY:
        raise OutOfMemory(f"{message or 'CUDA out of memory'}; {where}")
    if ended.stopped_for == "timeout":
        raise TrainingTimedOut(f"training used its whole training.timeout_minutes={settings.timeout_minutes} "
                               f"(all attempts of this run together) and stopped after saving a checkpoint; a new "
                               f"run resumes from it; {where}")
    if ended.stopped_for == "stopping":
        raise TrainingStopped(f"stopped with the process (SIGTERM) after saving a checkpoint; a new run resumes "
                              f"from it; {where}")
    if ended.stopped_for == "stall":
        raise TrainingInterrupted(f"the training process printed nothing for training.stall_minutes="
                                  f"{settings.stall_minutes} and was stopped (hung?); {where}")
    raise TrainingInterrupted(f"training process ended with {describe_exit(code)}; {where}")


def keep_failed_log(storage: Storage, log: Path, prefix: str) -> str:
    """The failed attempt's whole log, uploaded beside the candidate (the worker's disk is not kept)."""
    key = keys.failed_training_log(prefix, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    try:
        storage.put_file(log, key)
    except Exception as err:  # noqa: BLE001 - the storage may be the reason the attempt failed
        return f"not uploaded ({type(err).__name__}); it was {log}"
    return storage.uri(key)


def last_lines(log: Path, count: int = 20) -> str:
    """The end of the child's log: the traceback a rate-limited run log may have dropped."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-count:])


def describe_exit(code: int) -> str:
    import signal

    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return "SIGTERM (preempted; checkpoint saved)" if code == EXIT_PREEMPTED else f"exit code {code}"
