"""Faults in data files: one clear error naming file, column and line, raised once (never retried).

Before: mixed types in a JSONL column escaped as pyarrow's ArrowTypeError and duplicate CSV columns as a
ValueError; both were classed as transient and retried with backoff (about 50 s) before failing.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_config, task_runs_of
from tuneline.config import parse_config
from tuneline.errors import DataError

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(source, tmp_path):
    """The error of a finetune run on ``source`` with 3 attempts configured, and how often ingest ran."""
    from flows.finetune import finetune

    raw = make_config(source, tmp_path / "store", retries={"attempts": 3, "backoff_seconds": 5})
    state = finetune(config=parse_config(raw), return_state=True)
    with pytest.raises(DataError) as failure:
        state.result()
    [ingest] = [r for r in task_runs_of(state.state_details.flow_run_id, "ingest") if r.task_key.startswith("ingest")]
    return str(failure.value), (ingest.state_name, ingest.run_count)


def test_a_jsonl_column_with_mixed_types_names_file_column_and_line(tmp_path):
    rows = [{"text": f"review {i}", "label": "positive" if i % 2 else "negative"} for i in range(30)]
    rows[17]["text"] = 17  # a number where every other row has text
    source = tmp_path / "reviews.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    message, attempts = run(source, tmp_path)
    assert str(source) in message and "line 18" in message and "'text'" in message and "line 1 " in message
    assert attempts == ("Failed", 1), "a data error is not retried"


def test_duplicate_csv_columns_after_trimming_are_named(tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("text,label, text\n" + "".join(f"review {i},negative,x\n" for i in range(30)))
    message, attempts = run(source, tmp_path)
    assert str(source) in message and "['text']" in message and "more than once" in message
    assert attempts == ("Failed", 1)
