"""Real data: SMS spam (13% minority class) with the project's default training settings.

Trains on a stratified 1,000-row sample and scores 1,000 held-out messages; the
defaults must not collapse to the majority class. Skips when ../shared/data is absent.
"""

from __future__ import annotations

import csv

import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from tests.conftest import SHARED_DATA
from tuneline.config import parse_config

SMS = SHARED_DATA / "sms_spam" / "SMSSpamCollection"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not SMS.exists(), reason=f"real data not present: {SMS} (../shared/data is not checked out)"),
]


def sms_sample(target, seed: int = 0):
    """1,000 training rows (of which 10% validation) and 1,000 held-out test rows, stratified, no shared text."""
    messages = pd.read_csv(SMS, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    messages = messages.drop_duplicates("SMS")  # the corpus repeats 403 messages; keep each text once
    train, rest = train_test_split(messages, train_size=1000, stratify=messages["Label"], random_state=seed)
    test, _ = train_test_split(rest, train_size=1000, stratify=rest["Label"], random_state=seed)
    train_part, validation = train_test_split(train, test_size=100, stratify=train["Label"], random_state=seed)
    frame = pd.concat([train_part.assign(split="train"), validation.assign(split="validation"),
                       test.assign(split="test")])
    frame.to_csv(target, sep="\t", index=False, quoting=csv.QUOTE_NONE)
    return frame


@pytest.mark.usefixtures("prefect_harness")
def test_sms_spam_defaults_reach_macro_f1(tmp_path, storage_root):
    from flows.finetune import finetune

    sample = sms_sample(tmp_path / "sms.tsv")
    assert (sample["split"] == "test").sum() == 1000
    config = parse_config({
        "name": "sms-spam",
        "data": {"source": str(tmp_path / "sms.tsv"), "text_column": "SMS", "label_column": "Label",
                 "split_column": "split"},
        "evaluation": {"metric": "f1_macro", "minimum": 0.93},
        "storage": str(storage_root),
    })
    summary = finetune(config=config)

    assert summary["metrics"]["support"] == 1000
    assert summary["metrics"]["f1_macro"] >= 0.93, summary["metrics"]
    assert summary["version"] == 1 and summary["gate"]["passed"]
