"""Real data: WNUT-17 (noisy user text, six entity types) as CoNLL, token classification with the defaults.

The 1,009 sentences of ``emerging.dev.conll`` are split 80 / 10 / 10 by the pipeline (seeded, grouped by
sentence text). A model that tags every token with the majority tag ("O") finds no entity (entity F1 0);
the fine-tuned model must clearly beat it. Skips when ../shared/data is absent.
"""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA
from tuneline.config import parse_config
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

WNUT = SHARED_DATA / "wnut17" / "emerging.dev.conll"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not WNUT.exists(), reason=f"real data not present: {WNUT} (../shared/data is not checked out)"),
]

MINIMUM_ENTITY_F1 = 0.25  # the majority-tag baseline scores 0.0; measured here: 0.369 (101 test sentences)


@pytest.mark.usefixtures("prefect_harness")
def test_wnut17_defaults_beat_the_majority_tag_baseline(storage_root):
    from flows.finetune import finetune
    from tuneline.objectives.token_classification import entity_metrics, majority_baseline

    config = parse_config({
        "name": "wnut17",
        "task": "token_classification",
        "data": {"source": str(WNUT), "format": "conll"},
        "evaluation": {"minimum": MINIMUM_ENTITY_F1},
        "storage": str(storage_root),
    })
    summary = finetune(config=config)
    metrics = Registry(LocalStorage(storage_root)).manifest("wnut17", summary["version"])["metrics"]
    assert 95 <= metrics["sentences"] <= 110 and metrics["support"] > 50, metrics
    assert metrics["entity_f1"] >= MINIMUM_ENTITY_F1, metrics
    assert set(metrics["per_type"]) <= {"person", "location", "group", "creative-work", "corporation", "product"}

    from tuneline.data.conll import read_conll

    tags = list(read_conll(WNUT)["tags"])
    baseline = entity_metrics(tags, majority_baseline(tags))
    assert baseline["f1"] == 0.0 and metrics["entity_f1"] > baseline["f1"] + 0.1
