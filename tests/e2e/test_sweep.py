"""``tuneline sweep``: one child flow run per grid point, the best by validation metric registered alone.

Tiny: 100 reviews, 32 tokens, one epoch per trial, two learning rates (one too small to learn).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLES
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_sweep_registers_only_the_best_trial_and_lists_every_trial(tmp_path, storage_root, capsys):
    from flows.cli import main

    rows = (EXAMPLES / "data" / "reviews.csv").read_text().splitlines()
    source = tmp_path / "reviews.csv"
    source.write_text("\n".join(rows[:101]) + "\n")  # header + 100 rows
    code = main(["sweep", str(EXAMPLES / "sweep.yaml"), "--grid", "training.learning_rate=1e-6,3e-4",
                 "--set", f"data.source={source}", "--set", f"storage={storage_root}",
                 "--set", "model.max_length=32", "--set", "evaluation.minimum=0.0",
                 "--max-concurrent", "2", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    trials = summary["trials"]
    assert [t["parameters"] for t in trials] == [{"training.learning_rate": 1e-6}, {"training.learning_rate": 3e-4}]
    assert all(t["status"] == "completed" and isinstance(t["validation"], float) for t in trials)
    best = summary["sweep"]["best_trial"]
    assert summary["sweep"]["validation_metric"] == "f1_macro"
    assert trials[best]["validation"] == max(t["validation"] for t in trials)
    assert trials[0]["model_fingerprint"] != trials[1]["model_fingerprint"]
    for stage in ("ingest", "validate", "preprocess"):  # shared: the second trial reuses the first's
        assert trials[0]["stages"][stage]["status"] == "ran"
        assert trials[1]["stages"][stage]["status"] == "cached"

    registry = Registry(LocalStorage(storage_root))
    assert registry.versions("demo-sentiment-sweep") == [1]
    manifest = registry.manifest("demo-sentiment-sweep", 1)
    assert manifest["config"]["training"]["learning_rate"] == trials[best]["parameters"]["training.learning_rate"]
    assert manifest["training"]["model_fingerprint"] == trials[best]["model_fingerprint"]
    assert summary["version"] == 1 and summary["gate"]["passed"]
    assert set(summary["stages"]) == {"evaluate", "register"}
