"""``training.engine: ray`` and ``data.engine: ray`` without a cluster: the config problems, the checks that fail a run before training
(no ray package, no address), the candidate's key, what the workers are sent, how the driver sorts a failure and
reads the workers' lines. The real cluster runs in tests/integration/test_ray_engine.py.
"""

from __future__ import annotations

import io
import sys

import pytest

from tuneline.config import parse_config
from tuneline.errors import ConfigError
from tuneline.results import Prepared
from tuneline.training import ray_launch
from tuneline.training.launcher import child_command, train_key
from tuneline.training.outcomes import EXIT_INPUT_ERROR, EXIT_OUT_OF_MEMORY


def config(**training):
    return parse_config({"name": "m", "data": {"source": "d.csv"}, "training": training})


def test_ray_engine_config_problems_name_the_setting_to_use():
    with pytest.raises(ConfigError) as refused:
        config(engine="ray", processes=4)
    assert ("training.processes: 4 starts torchrun processes on the flow's machine; with training.engine: ray set "
            "training.ray.workers: 4 instead") in str(refused.value)
    with pytest.raises(ConfigError, match=r"training.precision: fp16 needs CUDA GPUs; set training.ray.use_gpu"):
        config(engine="ray", precision="fp16")
    with pytest.raises(ConfigError, match=r"training.ray.workers: Input should be greater than or equal to 1"):
        config(engine="ray", ray={"workers": 0})
    with pytest.raises(ConfigError, match=r"training.ray.nodes: unknown key"):
        config(engine="ray", ray={"nodes": 2})
    settings = config(engine="ray", precision="fp16", ray={"use_gpu": True, "resources_per_worker": {"CPU": 4}})
    assert settings.training.ray.resources_per_worker == {"CPU": 4.0}
    assert config(processes=4).training.engine.value == "local", "local is the default"


def test_ray_engine_without_the_ray_package_is_one_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"training.engine: ray needs the ray package, which is not installed "
                                          r"here .*; pip install 'tuneline\[ray\]', or set training.engine: local"):
        ray_launch.check(config(engine="ray", ray={"address": "ray://head:10001"}).training)


def test_ray_engine_needs_a_cluster_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    training = config(engine="ray").training
    with pytest.raises(ConfigError, match=r"set training.ray.address \(e.g. ray://raycluster-head-svc:10001\) or "
                                          r"\$RAY_ADDRESS"):
        ray_launch.cluster_address(training)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert ray_launch.cluster_address(training) == "ray://head:10001"
    assert ray_launch.cluster_address(config(engine="ray", ray={"address": "head:6379"}).training) == "head:6379"


def test_the_ray_driver_is_the_training_child():
    command = child_command("/tmp/spec.json", config(engine="ray").training)
    assert command[1:] == ["-m", "tuneline.training.ray_engine", "/tmp/spec.json"]
    assert child_command("/tmp/spec.json", config().training)[1:] == ["-m", "tuneline.training.process",
                                                                      "/tmp/spec.json"]


def test_train_key_has_the_workers_and_their_precision_not_the_engine_or_the_cluster(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # this machine's GPUs do not decide a Ray training's key
    prepared = Prepared(key="prepared/abc", uri="file:///x", objective="classification", dataset_fingerprint="fp",
                        counts={"train": 10, "validation": 2, "test": 2}, fitted={"labels": ["a", "b"]})
    two_workers = train_key(prepared, config(engine="ray", ray={"workers": 2}))
    assert two_workers != train_key(prepared, config()), "one local process: another effective batch"
    assert two_workers == train_key(prepared, config(engine="ray", ray={"workers": 2, "address": "ray://a:1",
                                                                         "resources_per_worker": {"CPU": 8}}))
    assert two_workers != train_key(prepared, config(engine="ray", ray={"workers": 4})), "the effective batch"
    assert two_workers != train_key(prepared, config(engine="ray", ray={"workers": 2, "use_gpu": True}))
    assert {"engine", "ray"}.isdisjoint(config().training.result_settings()), "earlier keys stay as they were"
    assert train_key(prepared, config(ray={"workers": 8})) == train_key(prepared, config()), "unused unless ray"


def test_workers_get_tunelines_settings_never_a_secret():
    from tuneline.training.ray_engine import worker_environment

    sent = worker_environment({
        "TUNELINE_S3_ATTEMPTS": "2", "TUNELINE_FAULT_INPUT_ERROR_RANK": "1", "HF_HUB_OFFLINE": "1",
        "AWS_ENDPOINT_URL": "http://s3:8333", "AWS_REGION": "eu-central-1", "MLFLOW_TRACKING_URI": "http://ml:5000",
        "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cret", "HF_TOKEN": "hf_x", "RAY_AUTH_TOKEN": "t",
        "TUNELINE_ALERT_WEBHOOK_URL_SECRET": "x", "TUNELINE_PARENT_PID": "12", "TUNELINE_CACHE": "/home/me/.cache",
        "HF_ENDPOINT": "https://user:pw@hub.corp", "PATH": "/usr/bin", "HOME": "/home/me"})
    assert sent == {"TUNELINE_S3_ATTEMPTS": "2", "TUNELINE_FAULT_INPUT_ERROR_RANK": "1", "HF_HUB_OFFLINE": "1",
                    "AWS_ENDPOINT_URL": "http://s3:8333", "AWS_REGION": "eu-central-1",
                    "MLFLOW_TRACKING_URI": "http://ml:5000", "PYTHONUNBUFFERED": "1"}


class WorkerGroupFailed(Exception):
    """Stands for ray.train.WorkerGroupError: the failure of each rank that failed."""

    def __init__(self, failures: dict):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


def test_the_driver_sorts_worker_failures_like_the_local_child(tmp_path):
    from tuneline.training.ray_engine import WorkerFailure, failed

    peer_gone = RuntimeError("gloo: Connection reset by peer")
    code = failed(WorkerGroupFailed({0: peer_gone, 1: WorkerFailure("input", "a bad batch in rank 1")}), tmp_path)
    assert code == EXIT_INPUT_ERROR, "an input error in any rank: not retried"
    assert (tmp_path / "input-error.txt").read_text() == "a bad batch in rank 1"
    assert (tmp_path / "exit-kind").read_text() == "input"

    oom = tmp_path / "oom"
    oom.mkdir()
    assert failed(WorkerGroupFailed({0: WorkerFailure("oom", "CUDA out of memory")}), oom) == EXIT_OUT_OF_MEMORY
    assert (oom / "exit-kind").read_text() == "oom" and (oom / "error.txt").read_text() == "CUDA out of memory"

    killed = tmp_path / "killed"
    killed.mkdir()
    assert failed(WorkerGroupFailed({1: RuntimeError("The actor died unexpectedly")}), killed) == 1, "transient"
    assert not (killed / "exit-kind").exists() and "Training failed" in (killed / "error.txt").read_text()


def test_progress_lines_from_workers_reach_the_launcher_bare():
    from tuneline.training.ray_engine import WorkerLines

    out = io.StringIO()
    lines = WorkerLines(out)
    lines.write('(RayTrainWorker pid=7, ip=10.0.0.2) PROGRESS {"step": 1}\n\x1b[36m(RayTrainWorker pid=7)\x1b[0m sa')
    lines.write("ved\n")
    assert out.getvalue() == 'PROGRESS {"step": 1}\n(RayTrainWorker pid=7) saved\n'


def test_prepare_on_ray_without_ray_or_a_cluster_fails_before_any_work(monkeypatch, tmp_path, demo_csv):
    from tuneline.data.ingest import ingest_dataset
    from tuneline.stages.prepare import prepare_splits
    from tuneline.storage import LocalStorage

    storage = LocalStorage(tmp_path / "store")
    dataset = ingest_dataset(str(demo_csv), storage)
    raw = {"name": "m", "data": {"source": str(demo_csv), "engine": "ray"}, "storage": str(tmp_path / "store")}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"^data.engine: ray needs a cluster: set training.ray.address"):
        prepare_splits(storage, dataset, parse_config(raw))
    with pytest.raises(ConnectionError, match=r"cannot reach the Ray cluster at 127.0.0.1:1\b"):  # transient
        prepare_splits(storage, dataset, parse_config({**raw, "training": {"ray": {"address": "127.0.0.1:1"}}}))
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"data.engine: ray needs the ray package.*or set data.engine: local"):
        prepare_splits(storage, dataset, parse_config(raw))
    assert not (tmp_path / "store" / "prepared").exists(), "nothing written"
    assert parse_config(raw).data.output_settings() == parse_config(
        {**raw, "data": {**raw["data"], "engine": "local"}}).data.output_settings(), "the engine is not in the key"
