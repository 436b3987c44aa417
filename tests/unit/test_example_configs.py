"""Every example config (examples/*.yaml) is valid, its data is there, and an end-to-end test runs it.

The flow runs themselves are in tests/e2e (one per example, each with its own checks of the registered
model); this loop makes sure a new or renamed example cannot be left out of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO
from tuneline.config import load_config

EXAMPLE_CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
E2E_SOURCES = {path: path.read_text() for path in (REPO / "tests" / "e2e").glob("test_*.py")}


def test_there_are_examples():
    assert len(EXAMPLE_CONFIGS) >= 8


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda path: path.name)
def test_each_example_is_valid_and_run_end_to_end(path: Path):
    config = load_config(path)
    assert Path(config.data.source).exists(), f"{path.name}: data.source {config.data.source} is missing"
    runners = [test.name for test, source in E2E_SOURCES.items() if f'"{path.name}"' in source]
    assert runners, f"no test in tests/e2e runs {path.name} through the flow"
