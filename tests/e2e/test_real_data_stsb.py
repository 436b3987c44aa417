"""Real data: STS-B sentence-pair similarity (0-5) as regression, with the project's default settings.

Trains on 2,000 STS-B training pairs (200 of them held out as validation) and scores a
1,000-pair sample of the STS-B test file; Pearson correlation must reach 0.75. Skips
when ../shared/data/stsb_en is absent. About 3 minutes on 2 idle CPU cores (Pearson 0.787).
"""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from tests.conftest import SHARED_DATA
from tuneline.config import parse_config

STSB = SHARED_DATA / "stsb_en"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not (STSB / "stsb-en-train.csv").exists(),
                       reason=f"real data not present: {STSB} (../shared/data is not checked out)"),
]


def read_stsb(name: str) -> pd.DataFrame:
    """The header-less STS-B CSV (sentence1, sentence2, similarity_score)."""
    return pd.read_csv(STSB / f"stsb-en-{name}.csv", header=None, names=["sentence1", "sentence2", "score"],
                       dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL)


def stsb_sample(target, seed: int = 0) -> pd.DataFrame:
    """2,000 training pairs (200 of them validation) and 1,000 test pairs, no pair in two splits."""
    train = read_stsb("train").drop_duplicates(["sentence1", "sentence2"]).sample(2000, random_state=seed)
    test = read_stsb("test").drop_duplicates(["sentence1", "sentence2"])
    in_train = test.set_index(["sentence1", "sentence2"]).index.isin(train.set_index(["sentence1", "sentence2"]).index)
    test = test[~in_train].sample(1000, random_state=seed)  # STS-B repeats a few pairs across its files
    split = ["validation"] * 200 + ["train"] * 1800
    frame = pd.concat([train.assign(split=split), test.assign(split="test")])
    frame.to_csv(target, index=False)
    return frame


@pytest.mark.usefixtures("prefect_harness")
def test_stsb_regression_defaults_reach_pearson(tmp_path, storage_root):
    from flows.finetune import finetune

    sample = stsb_sample(tmp_path / "stsb.csv")
    assert (sample["split"] == "test").sum() == 1000
    config = parse_config({
        "name": "stsb",
        "task": "regression",
        "data": {"source": str(tmp_path / "stsb.csv"), "text_column": "sentence1", "text_pair_column": "sentence2",
                 "label_column": "score", "split_column": "split"},
        "validation": {"target_min": 0, "target_max": 5},
        "evaluation": {"metric": "pearson", "minimum": 0.75},
        "storage": str(storage_root),
    })
    summary = finetune(config=config)

    print("STS-B test metrics:", summary["metrics"], "train seconds:", summary["stages"]["train"]["seconds"])
    assert summary["metrics"]["support"] == 1000
    assert summary["metrics"]["pearson"] >= 0.75, summary["metrics"]
    assert summary["version"] == 1 and summary["gate"]["passed"]
