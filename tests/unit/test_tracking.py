"""training.report_to without a server: the setting, the checks at flow start, the child's environment for HF's
callbacks, and the curves picture (the real MLflow server and event files:
tests/integration/test_experiment_tracking.py)."""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import make_config
from tuneline import keys, tracking
from tuneline.config import ReportTo, parse_config
from tuneline.curves import MAX_POINTS, nice_ticks, points, training_curves_svg
from tuneline.errors import ConfigError
from tuneline.storage import LocalStorage
from tuneline.training.reporting import Reporting

SVG = "{http://www.w3.org/2000/svg}"


def config(tmp_path, **training):
    return parse_config(make_config(tmp_path / "data.csv", tmp_path / "store", training=training))


def test_report_to_lists_each_tracker_once_and_leaves_the_train_key_alone(tmp_path):
    plain, tracked = config(tmp_path), config(tmp_path, report_to=["mlflow", "tensorboard", "mlflow"])
    assert plain.training.report_to == []
    assert tracked.training.report_to == [ReportTo.mlflow, ReportTo.tensorboard]
    assert tracked.training.result_settings() == plain.training.result_settings(), "reporting changes no weight"
    with pytest.raises(ConfigError, match=r"training\.report_to\.0: Input should be 'tensorboard' or 'mlflow'"):
        config(tmp_path, report_to=["wandb"])


def test_a_tracker_without_its_package_or_server_is_refused_naming_the_extra(tmp_path, monkeypatch):
    cfg = config(tmp_path, report_to=["tensorboard", "mlflow"])
    monkeypatch.setattr(tracking, "installed", lambda package: False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError) as refused:
        tracking.check_reporting(cfg)
    problems = str(refused.value).splitlines()
    assert problems[0].startswith("training.report_to: tensorboard needs the tensorboard package")
    assert problems[0].endswith("pip install 'tuneline[tensorboard]'")
    assert problems[1].endswith("pip install 'tuneline[mlflow]'")
    assert "MLFLOW_TRACKING_URI" in problems[2]

    monkeypatch.setattr(tracking, "installed", lambda package: package == "tensorboardX")  # HF takes either
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    tracking.check_reporting(config(tmp_path, report_to=["tensorboard"]))
    tracking.check_reporting(config(tmp_path))  # nothing to report: nothing to check


def test_run_links_name_the_mlflow_ui_page_without_credentials(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://ml:s3cret@mlflow.example.com/")
    assert tracking.run_url("r1", "7") == "https://***@mlflow.example.com/#/experiments/7/runs/r1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////data/mlflow.db")
    assert tracking.run_url("r1", "7") == "sqlite:////data/mlflow.db run r1"


@pytest.fixture
def environment(monkeypatch):
    """os.environ as the training child has it; restored after the test."""
    for name in ("MLFLOW_RUN_ID", "MLFLOW_MAX_LOG_PARAMS", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TAGS",
                 "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setattr(os, "environ", os.environ.copy())
    return os.environ


def test_the_child_points_hf_callbacks_at_the_candidate_and_reopens_its_run(tmp_path, environment):
    cfg = config(tmp_path, report_to=["tensorboard", "mlflow"])
    storage, prefix = LocalStorage(tmp_path / "store"), "candidates/abc"
    reporting = Reporting(cfg, storage, prefix, tmp_path / "scratch")

    assert reporting.arguments() == {"report_to": ["tensorboard", "mlflow"], "run_name": "test-model-abc"}
    assert len(reporting.configure()) == 1, "the callback keeping the MLflow run's id"
    assert environment["TENSORBOARD_LOGGING_DIR"] == str(storage.local_dir(keys.tensorboard(prefix)))
    assert environment["MLFLOW_EXPERIMENT_NAME"] == "test-model"
    assert json.loads(environment["MLFLOW_TAGS"])["tuneline.candidate"] == storage.uri(prefix)
    assert "MLFLOW_RUN_ID" not in environment, "the first attempt starts a run"
    assert reporting.record() == {"tensorboard_uri": storage.uri(keys.tensorboard(prefix)), "mlflow_run_id": None,
                                  "mlflow_experiment_id": None}

    storage.write_json(keys.mlflow_run(prefix), {"run_id": "r1", "experiment": "test-model",
                                                 "tracking_uri": "http://127.0.0.1:5000"})
    Reporting(cfg, storage, prefix, tmp_path / "scratch").configure()
    assert (environment["MLFLOW_RUN_ID"], environment["MLFLOW_MAX_LOG_PARAMS"]) == ("r1", "0")

    environment["MLFLOW_TRACKING_URI"] = "http://elsewhere:5000"  # that run is on another server
    assert Reporting(cfg, storage, prefix, tmp_path / "scratch").earlier_run() is None
    assert Reporting(config(tmp_path), storage, prefix, tmp_path).report_to == ["none"]


def test_event_files_go_to_the_scratch_folder_on_s3_roots(tmp_path, monkeypatch):
    from tuneline.storage import open_storage
    from tuneline.training.reporting import tensorboard_dir

    for name, value in {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(name, value)
    assert tensorboard_dir(open_storage("s3://bucket/root"), "candidates/abc", tmp_path) == tmp_path / "tensorboard"
    local = LocalStorage(tmp_path / "store")
    assert tensorboard_dir(local, "candidates/abc", tmp_path) == local.local_dir("candidates/abc/tensorboard")


def test_curves_picture_draws_loss_per_step_and_the_validation_metric_per_evaluation():
    losses = [{"step": s, "loss": 0.7 - s / 100} for s in range(1, 41)]
    evaluations = [{"step": 20, "loss": 0.6, "f1_macro": 0.7}, {"step": 40, "loss": 0.5, "f1_macro": None}]
    svg = ET.fromstring(training_curves_svg(losses, evaluations, "f1_macro"))
    lines = svg.findall(f".//{SVG}polyline")
    assert len(lines) == 3, "training loss, validation loss, validation f1_macro"
    assert len(lines[0].get("points").split()) == 40 and len(lines[2].get("points").split()) == 1
    titles = [t.text for t in svg.iter(f"{SVG}text")]
    assert "loss" in titles and "validation f1_macro" in titles and "training" in titles
    assert svg.get("width") == "760"

    only_losses = ET.fromstring(training_curves_svg(losses, [], "f1_macro"))
    assert only_losses.get("width") == "380" and len(only_losses.findall(f".//{SVG}polyline")) == 1
    assert training_curves_svg([], [], "f1_macro") is None


def test_long_curves_are_thinned_and_ticks_are_round():
    long = [{"step": s, "loss": 1 / s} for s in range(1, 5001)] + [{"step": 5001, "loss": math.nan}]
    thinned = points(long, "loss")
    assert len(thinned) <= MAX_POINTS + 1 and thinned[0][0] == 1 and thinned[-1][0] == 5000
    assert nice_ticks(0.0, 18.0) == [0, 5, 10, 15, 20]
    assert nice_ticks(0.612, 0.698) == [0.6, 0.65, 0.7]
    assert nice_ticks(3.0, 3.0)[0] < 3.0 < nice_ticks(3.0, 3.0)[-1]
