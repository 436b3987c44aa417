"""Training on a Ray cluster (``training.engine: ray``): the Ray driver, run as the training child process, and its
Ray Train workers, which run the same ``fine_tune(spec)`` as the local engine.

Reads the spec the launcher wrote (``python -m tuneline.training.ray_engine SPEC``, in place of
``tuneline.training.process``), ``training.ray`` and ``$RAY_ADDRESS``. The workers read the prepared splits and the
base model and write checkpoints, the model folder and ``training.json`` to the storage root (rank 0 only), as
local training does, so the root must be reachable from them: a local path on a one-machine cluster, ``s3://``
across machines. The driver writes ``error.txt``, ``input-error.txt`` and ``exit-kind`` beside the spec and exits
with the local child's codes; Ray Train's own run folder (``RunConfig.storage_path``, which every node must reach)
is ``candidates/<key>/ray/``, removed once training succeeded.

- Driver: connects to the cluster (``training.ray.address``, else ``$RAY_ADDRESS``) and runs a Ray Train
  ``TorchTrainer`` with ``training.ray.workers`` workers (``use_gpu``, ``resources_per_worker``). Ray forwards
  what the workers print to the driver (``log_to_driver``), which prints it: the run's log and the ``PROGRESS``
  lines reach the flow as the local child's do, and the launcher's streaming, time budget, stall watchdog,
  SIGTERM and lease handling apply unchanged. Worker lines keep Ray's ``(RayTrainWorker pid=...)`` prefix;
  progress lines lose it.
- Workers: Ray Train creates the torch process group (gloo on CPU, NCCL with ``use_gpu``) and sets RANK,
  WORLD_SIZE, LOCAL_RANK and MASTER_ADDR, which the HF Trainer takes up as it does torchrun's. Each worker gets
  a scratch folder of its own (the driver's may be on another machine); rank 0 publishes TensorBoard files from
  it, as the launcher does for the local engine. Ray Train's HF helpers (``prepare_trainer``,
  ``RayTrainReportCallback``) are not used: the data is not a Ray Dataset, and checkpoints go to the storage
  root through ``CheckpointStore``, so that both engines resume from the same checkpoints.
- Outcomes: an input error (``TunelineError``) in any worker exits 2, never retried; CUDA out of memory 75 (the
  retry halves the batch); anything else (a worker killed, a node lost, the cluster unreachable) 1, which the
  launcher raises as ``TrainingInterrupted``: Prefect retries, and the retry resumes from the newest complete
  checkpoint in storage. Ray Train restarts nothing itself (``max_failures=0``): Prefect's retries are the one
  retry policy.
- Stopping: SIGTERM to the driver (time budget, stall, cancellation) asks every worker, through a small actor,
  to save a checkpoint and stop (``checkpoints.STOP_REQUESTED``, every rank at the same step): exit 143. A driver
  that is killed takes its workers along: Ray ends a job's actors with its driver, and a worker that loses the
  actor exits at once without writing more.
- Environment: the workers run with the cluster's environment plus tuneline's own settings (``TUNELINE_*``, the
  Hugging Face offline switches, ``AWS_ENDPOINT_URL`` / ``AWS_REGION``, MLflow's URI). Secrets are never sent (a
  job's runtime environment is shown in Ray's dashboard): S3 keys and Hugging Face tokens come from the cluster
  (its pods' environment, an IAM role).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from tuneline.config import parse_config
from tuneline.errors import TunelineError, redact_urls
from tuneline.storage import open_storage
from tuneline.tracking import publish_tensorboard
from tuneline.training.checkpoints import STOP_REQUESTED
from tuneline.training.loop import fine_tune, is_main_process
from tuneline.training.outcomes import (EXIT_INPUT_ERROR, EXIT_ORPHANED, EXIT_OUT_OF_MEMORY, EXIT_PREEMPTED,
                                        PARENT_PID_ENV, PROGRESS_PREFIX)
from tuneline.training.process import exit_with_the_launcher
from tuneline.training.ray_launch import check_reachable, cluster_address, require_ray

# Set in the driver before Ray is imported (an operator's own value wins).
DRIVER_ENV = {
    "RAY_DEDUP_LOGS": "0",  # every worker's lines, not "[repeated 2x across cluster]"
    "RAY_COLOR_PREFIX": "0",  # no ANSI colours around the worker prefix in the run's log
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # a worker's print stays a print (Ray Train forwards this to the workers)
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # workers run the cluster's python, also when the flow runs under `uv run`
}
# Sent to the workers (the job's runtime environment): tuneline's settings, never a secret.
FORWARDED_PREFIXES = ("TUNELINE_",)
FORWARDED = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
             "AWS_REGION", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"}
NOT_FORWARDED = {PARENT_PID_ENV, "TUNELINE_CACHE"}  # this machine's process and folder
SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "KEY_ID", "ACCESS_KEY", "CREDENTIAL")
# What Ray puts before a worker's line on the driver: "(RayTrainWorker pid=123, ip=10.0.0.2) ".
WORKER_PREFIX = re.compile(r"^\([^()]*pid=[^()]*\) ")
COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # Ray's own log lines are coloured


def worker_environment(environ: dict[str, str]) -> dict[str, str]:
    """The variables the workers get from the flow's machine: tuneline's settings, no secrets (by name, or a URL
    with credentials in it)."""
    chosen = {name: value for name, value in environ.items()
              if (name.startswith(FORWARDED_PREFIXES) or name in FORWARDED) and name not in NOT_FORWARDED
              and not any(word in name.upper() for word in SECRET_WORDS) and redact_urls(value) == value}
    return {**chosen, "PYTHONUNBUFFERED": "1"}  # a worker's stdout is a file: lines reach the driver as printed


class WorkerLines(io.TextIOBase):
    """The driver's stdout or stderr, into which Ray prints the workers' lines: without colour codes, and
    ``PROGRESS`` lines without Ray's worker prefix, so the launcher reads them as a local child's."""

    def __init__(self, stream):
        self.stream, self.pending, self.lock = stream, "", threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            *lines, self.pending = (self.pending + text).split("\n")
            for line in lines:
                line = COLOURS.sub("", line)
                bare = WORKER_PREFIX.sub("", line, count=1)
                self.stream.write((bare if bare.startswith(PROGRESS_PREFIX) else line) + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return False


class WorkerFailure(Exception):
    """An input error ("input") or CUDA out of memory ("oom") in a worker, as the driver sorts failures."""

    def __init__(self, kind: str, message: str):
        super().__init__(kind, message)
        self.kind, self.message = kind, message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


# -- the workers ----------------------------------------------------------------


def train_worker(config: dict) -> dict:
    """One Ray Train worker: ``fine_tune`` in this worker's rank, with a scratch folder of its own."""
    watch_the_driver(config["stop"])
    scratch = Path(tempfile.mkdtemp(prefix="tuneline-ray-"))
    spec = {**config["spec"], "scratch": str(scratch)}
    try:
        return fine_tune(spec)
    except TunelineError as err:
        raise WorkerFailure("input", str(err)) from None
    except Exception as err:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            raise WorkerFailure("oom", str(err)) from None
        raise
    finally:
        if is_main_process():  # the rank that writes TensorBoard files (non-local roots: into the scratch folder)
            publish_tensorboard(open_storage(spec["storage_root"]), scratch, spec["prefix"], print)
        shutil.rmtree(scratch, ignore_errors=True)


def watch_the_driver(stop, poll_s: float = 0.5) -> None:
    """Set ``STOP_REQUESTED`` when the driver asks; exit at once when its actor is gone (so is the driver)."""
    import ray

    def watch() -> None:
        while True:
            try:
                asked = ray.get(stop.is_set.remote(), timeout=60)
            except ray.exceptions.GetTimeoutError:
                continue
            except Exception:  # noqa: BLE001 - the actor died with its driver
                print("the Ray driver is gone: stopping without writing anything more", flush=True)
                os._exit(EXIT_ORPHANED)
            if asked:
                STOP_REQUESTED.set()
                return
            time.sleep(poll_s)

    threading.Thread(target=watch, name="driver-watchdog", daemon=True).start()


# -- the driver -----------------------------------------------------------------


def stop_flag(ray):
    """A tiny actor the driver sets on SIGTERM and the workers poll."""
    @ray.remote(num_cpus=0)
    class StopFlag:
        def __init__(self):
            self.asked = False

        def set(self) -> None:
            self.asked = True

        def is_set(self) -> bool:
            return self.asked

    return StopFlag.remote()


def forward_sigterm(stop) -> None:
    """SIGTERM (time budget, stall, cancellation): the workers save a checkpoint and stop; fit() then returns."""
    asked = threading.Event()

    def tell_the_workers() -> None:
        asked.wait()
        print("SIGTERM received: the workers save a checkpoint, then stop", flush=True)
        stop.set.remote()

    threading.Thread(target=tell_the_workers, name="sigterm-forwarder", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: asked.set())


def train_on_cluster(spec: dict, folder: Path) -> int:
    """Run the spec's training on the cluster's workers; the exit code the launcher reads."""
    cfg = parse_config(spec["config"])
    settings, address = cfg.training.ray, cluster_address(cfg.training)
    for name, value in DRIVER_ENV.items():  # before ray is imported: it reads some of them then
        os.environ.setdefault(name, value)
    require_ray()
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_reachable(address)
    sys.stdout, sys.stderr = WorkerLines(sys.stdout), WorkerLines(sys.stderr)
    ray.init(address=address, log_to_driver=True, runtime_env={"env_vars": worker_environment(dict(os.environ))})
    print(f"training on the Ray cluster at {redact_urls(address)}: {settings.workers} worker(s), "
          f"{'one GPU' if settings.use_gpu else 'CPU only'} each", flush=True)
    stop = stop_flag(ray)
    forward_sigterm(stop)
    storage = open_storage(spec["storage_root"])
    run_folder = f"{spec['prefix']}/ray"
    # the workers read the storage root the launcher resolved (a relative or default root means nothing there)
    worker_spec = {**spec, "config": {**spec["config"], "storage": spec["storage_root"]}}
    trainer = TorchTrainer(
        train_worker, train_loop_config={"spec": worker_spec, "stop": stop},
        scaling_config=ScalingConfig(num_workers=settings.workers, use_gpu=settings.use_gpu,
                                     resources_per_worker=settings.resources_per_worker),
        run_config=RunConfig(name="train", storage_path=storage.uri(run_folder),
                             failure_config=FailureConfig(max_failures=0)),  # Prefect's retries are the retries
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        return failed(err, folder)
    if (result.return_value or {}).get("preempted"):
        (folder / "exit-kind").write_text("preempted")
        return EXIT_PREEMPTED
    storage.delete_prefix(run_folder)
    return 0


def failed(err: Exception, folder: Path) -> int:
    """Write what the launcher reads of a failed training and return its exit code: input error in any worker
    first, then out of memory, else a transient failure."""
    failures = list((getattr(err, "worker_failures", None) or {}).values())
    for kind, code in (("input", EXIT_INPUT_ERROR), ("oom", EXIT_OUT_OF_MEMORY)):
        found = [f for f in failures if isinstance(f, WorkerFailure) and f.kind == kind]
        if found:
            (folder / ("input-error.txt" if kind == "input" else "error.txt")).write_text(found[0].message)
            (folder / "exit-kind").write_text(kind)
            print(f"training failed: {found[0]}", flush=True)
            return code
    message = redact_urls(f"{type(err).__name__}: {err}")
    (folder / "error.txt").write_text(message)
    print(message, flush=True)
    return 1


def main(spec_path: str) -> int:
    exit_with_the_launcher()
    spec_file = Path(spec_path)
    try:
        return train_on_cluster(json.loads(spec_file.read_text()), spec_file.parent)
    except TunelineError as err:  # no ray package, no cluster address, a config the driver refuses
        for name in ("input-error.txt", "error.txt"):
            spec_file.with_name(name).write_text(str(err))
        spec_file.with_name("exit-kind").write_text("input")
        print(f"error: {err}", flush=True)
        return EXIT_INPUT_ERROR
    except Exception as err:  # e.g. the cluster cannot be reached: transient, retried
        traceback.print_exc()
        message = redact_urls(f"{type(err).__name__}: {err}")
        spec_file.with_name("error.txt").write_text(message)
        print(message, flush=True)
        return 1


if __name__ == "__main__":
    # Run through the importable module, not __main__: Ray pickles train_worker and WorkerFailure by reference.
    from tuneline.training import ray_engine

    sys.exit(ray_engine.main(sys.argv[1]))
