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
