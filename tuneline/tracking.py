"""Experiment tracking (``training.report_to``): what the flow checks first, and what the parent adds after training.

Reads the environment (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``) and the candidate's training record;
writes TensorBoard event files from an attempt's scratch folder to ``candidates/<key>/tensorboard/`` (non-local
roots) and the test metrics to the candidate's MLflow run. The training child's side, HF's own TensorBoard and
MLflow callbacks pointed at the candidate, is ``tuneline.training.reporting``.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Callable

from tuneline import keys
from tuneline.config import FinetuneConfig, ReportTo, learning_rate
from tuneline.errors import ConfigError, redact_urls
from tuneline.metrics import headline
from tuneline.results import Trained
from tuneline.storage import LocalStorage, Storage

# A tracker's packages (any one will do: HF's TensorBoardCallback takes tensorboard or tensorboardX) and the extra
# that installs them.
PACKAGES = {ReportTo.tensorboard: ("tensorboard", "tensorboardX"), ReportTo.mlflow: ("mlflow",)}


def check_reporting(cfg: FinetuneConfig) -> None:
    """Refuse, before any work, trackers whose package is missing and mlflow without a tracking server."""
    problems = []
    for tracker in cfg.training.report_to:
        if not any(installed(package) for package in PACKAGES[tracker]):
            problems.append(f"training.report_to: {tracker.value} needs the {PACKAGES[tracker][0]} package, which "
                            f"is not installed here: pip install 'tuneline[{tracker.value}]'")
    if ReportTo.mlflow in cfg.training.report_to and not tracking_uri():
        problems.append("training.report_to: mlflow logs to the tracking server in $MLFLOW_TRACKING_URI, which is "
                        "not set (e.g. http://mlflow.internal:5000, or sqlite:////abs/path/mlflow.db for a local "
                        "store)")
    if problems:
        raise ConfigError("\n".join(problems))


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def experiment_name(cfg: FinetuneConfig) -> str:
    """``$MLFLOW_EXPERIMENT_NAME``, else the registered model's name: one experiment per model."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or cfg.name


def run_tags(cfg: FinetuneConfig, candidate_uri: str) -> dict[str, str]:
    """Tags on a candidate's MLflow run: which model, task, base and candidate folder it is."""
    return {"tuneline.model": cfg.name, "tuneline.task": cfg.task.value, "tuneline.base_model": cfg.model.base,
            "tuneline.method": cfg.model.method.value, "tuneline.candidate": candidate_uri}


def publish_tensorboard(storage: Storage, scratch: Path, prefix: str, log_line: Callable[[str], None]) -> None:
    """Upload an attempt's event files to the candidate's logdir (non-local roots: a local root is written in place).

    Best effort, also after a failed attempt: the curves are worth keeping, but never worth failing a training for.
    """
    local = scratch / "tensorboard"
    if isinstance(storage, LocalStorage) or not local.is_dir() or not any(local.rglob("*")):
        return
    try:
        storage.put_dir(local, keys.tensorboard(prefix))
    except Exception as err:  # noqa: BLE001 - the storage may be why the attempt failed
        log_line(f"TensorBoard event files not uploaded to {storage.uri(keys.tensorboard(prefix))} "
                 f"({type(err).__name__}: {redact_urls(str(err))})")


def log_test_metrics(cfg: FinetuneConfig, trained: Trained, metrics: dict) -> str | None:
    """Add the test split's headline metrics (as ``test_<metric>``, at the last training step) to the candidate's
    MLflow run; a new run when training was reused from one that did not report to this server. Where the run is
    (``run_url``), or None when mlflow is not in ``training.report_to``."""
    if ReportTo.mlflow not in cfg.training.report_to:
        return None
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri())
    run = _existing_run(client, trained.mlflow_run_id) or _run_for_reused_training(client, cfg, trained)
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[Metric(f"test_{name}", float(value), now, trained.global_step)
                                               for name, value in headline(metrics).items()])
    return run_url(run.info.run_id, run.info.experiment_id)


def run_url(run_id: str, experiment_id: str | None) -> str:
    """The run's page in the MLflow UI (http servers), else the tracking URI and the run's id; no credentials."""
    uri = redact_urls(tracking_uri() or "")
    if uri.startswith(("http://", "https://")) and experiment_id:
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{uri} run {run_id}"


def _existing_run(client, run_id: str | None):
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:  # recorded on another tracking server, or deleted
        return None
    return run if run.info.lifecycle_stage == "active" else None


def _run_for_reused_training(client, cfg: FinetuneConfig, trained: Trained):
    """A run for a training this run reused: its settings as parameters, so the test metrics have a home."""
    name = experiment_name(cfg)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id, tags={**run_tags(cfg, trained.model_uri.rsplit("/model", 1)[0]),
                                                 "tuneline.training": "reused (trained by an earlier run)"})
    params = {"learning_rate": learning_rate(cfg), "global_step": trained.global_step,
              "batch_size": trained.batch_size, "gradient_accumulation": trained.gradient_accumulation,
              **{f"training.{k}": v for k, v in cfg.training.result_settings().items()}}
    from mlflow.entities import Param

    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    client.set_terminated(run.info.run_id)
    return run
