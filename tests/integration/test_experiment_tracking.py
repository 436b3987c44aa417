"""Experiment tracking for real: a local MLflow tracking server started here, TensorBoard event files, the curves
image on the run page.

One tiny training (9 steps) through the finetune flow (Prefect test harness) with ``training.report_to: [mlflow,
tensorboard]`` whose first attempt runs out of memory at step 6 (the child's test hook, after the checkpoint at
step 4), so the retry resumes: both attempts must land in ONE MLflow run and one TensorBoard logdir. Read back
through ``MlflowClient``, TensorBoard's event-file loader and the Prefect client.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import make_config
from tuneline.config import parse_config
from tuneline.errors import ConfigError
from tuneline.storage import LocalStorage
from tuneline.training.loop import FAULT_OOM_AT_STEP

pytestmark = pytest.mark.usefixtures("prefect_harness")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on loopback over SQLite and a local artifact folder, started in the background: it takes
    10-20 s to migrate its database and start, which the flow's first stages overlap (the training child's MLflow
    client retries a refused connection, with the short backoff the test sets)."""

    def __init__(self, home):
        self.home, self.port = home, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
             "1", "--backend-store-uri", f"sqlite:///{home}/mlflow.db",
             "--default-artifact-root", str(home / "artifacts")],
            stdout=(home / "server.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # tracking only: no job runner

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy: {(self.home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)  # the CLI and the uvicorn process it started
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


def scalars(logdir) -> dict[str, list[int]]:
    """Every scalar tag in the event files under ``logdir`` and the steps it was written at, over all files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    found: dict[str, list[int]] = {}
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(event.step)
    return found


@pytest.mark.slow
def test_mlflow_tensorboard_and_the_curves_image_across_a_resumed_training(demo_csv, tmp_path, tiny_bert,
                                                                         mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    from flows.finetune import finetune

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")  # while the server starts: retry after 0, 2, 4, 8 s
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv(FAULT_OOM_AT_STEP, "6")  # the first attempt dies at step 6, the retry resumes from step 4
    root = tmp_path / "store"
    cfg = parse_config(make_config(
        demo_csv, root, name="tracked", model={"base": str(tiny_bert), "max_length": 32},
        training={"epochs": 0.5, "batch_size": 16, "checkpoint_every_steps": 4, "checkpoint_every_minutes": None,
                  "report_to": ["mlflow", "tensorboard"]},
        evaluation={"metric": "f1_macro", "minimum": 0.0}, retries={"attempts": 2, "backoff_seconds": 0}))

    state = finetune(config=cfg, return_state=True)
    mlflow_server.wait_healthy()
    summary = state.result()

    assert summary["stages"]["train"]["attempts"] == 2 and summary["stages"]["train"]["resumed_from_step"] == 4
    [record_file] = root.glob("candidates/*/training.json")
    record, candidate = json.loads(record_file.read_text()), record_file.parent
    assert record["global_step"] == 9, "half of 280 rows / 16 per step"

    # MLflow: one run for both attempts, in the experiment named like the model
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("tracked")
    [run] = client.search_runs([experiment.experiment_id])
    recorded = json.loads((candidate / "mlflow-run.json").read_text())
    assert run.info.run_id == record["mlflow_run_id"] == recorded["run_id"]
    assert record["mlflow_experiment_id"] == recorded["experiment_id"] == experiment.experiment_id
    assert run.info.status == "FINISHED"
    assert float(run.data.params["learning_rate"]) == record["learning_rate"]
    assert run.data.params["per_device_train_batch_size"] == "16", "logged once, by the first attempt"
    assert run.data.tags["tuneline.model"] == "tracked"
    assert run.data.tags["tuneline.candidate"] == LocalStorage(root).uri(str(candidate.relative_to(root)))
    loss_steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "loss")})
    assert loss_steps == list(range(1, 10)), "a loss per step (a short run), before and after the resume"
    test_metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    assert test_metrics["test_f1_macro"] == pytest.approx(summary["metrics"]["f1_macro"])
    assert test_metrics["test_accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
    print("MLflow run", run.info.run_id, "metrics", json.dumps(run.data.metrics, sort_keys=True),
          "loss history", [(m.step, round(m.value, 4)) for m in client.get_metric_history(run.info.run_id, "loss")])

    # TensorBoard: both attempts' event files in the candidate's logdir
    logdir = candidate / "tensorboard"
    assert record["tensorboard_uri"] == LocalStorage(root).uri(str(logdir.relative_to(root)))
    assert len(list(logdir.rglob("events.out.tfevents.*"))) == 2, "one event file per attempt"
    steps = scalars(logdir)
    assert sorted(set(steps["train/loss"])) == list(range(1, 10)), steps.get("train/loss")
    assert "eval/f1_macro" in steps

    # The run page: the curves image, where the trackers are, and the same in the run log
    flow_run_id = state.state_details.flow_run_id
    APILogWorker.drain_all()
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    [curves] = [a for a in artifacts if a.key == "tracked-training-curves"]
    assert curves.type == "markdown"
    image = re.search(r"!\[[^\]]*\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", curves.data)
    svg = ET.fromstring(base64.b64decode(image[1]))
    assert svg.tag.endswith("svg") and len(svg.findall(".//{http://www.w3.org/2000/svg}polyline")) == 3
    assert f"tensorboard --logdir {record['tensorboard_uri']}" in curves.data
    assert f"#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}" in curves.data
    run_log = "\n".join(log.message for log in logs)
    assert f"tensorboard --logdir {record['tensorboard_uri']}" in run_log
    assert f"test metrics logged to MLflow run {mlflow_server.uri}/#/experiments/" in run_log


def test_mlflow_without_a_tracking_server_is_refused_before_any_stage(demo_csv, tmp_path, monkeypatch):
    from flows.finetune import finetune

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "store"
    state = finetune(config=parse_config(make_config(demo_csv, root, training={"report_to": ["mlflow"]})),
                     return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match=r"training\.report_to: mlflow .* \$MLFLOW_TRACKING_URI, which is not set"):
        state.result()
    assert not root.exists(), "no stage ran"


def test_on_s3_each_attempts_event_files_are_uploaded_beside_the_earlier_ones(s3_root, tmp_path):
    from tuneline.storage import open_storage
    from tuneline.tracking import publish_tensorboard

    storage, prefix, logged = open_storage(s3_root), "candidates/k", []
    for attempt in (1, 2):  # each attempt has a fresh scratch folder with its own event file
        scratch = tmp_path / f"scratch-{attempt}"
        (scratch / "tensorboard").mkdir(parents=True)
        (scratch / "tensorboard" / f"events.out.tfevents.{attempt}").write_bytes(b"event")
        publish_tensorboard(storage, scratch, prefix, logged.append)
    assert storage.list_keys("candidates/k/tensorboard") == [
        "candidates/k/tensorboard/events.out.tfevents.1", "candidates/k/tensorboard/events.out.tfevents.2"]
    assert logged == []
