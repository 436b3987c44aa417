"""validate_frame (great-expectations) finds each kind of bad data; describe_failures says what and where."""

from __future__ import annotations

import pandas as pd
import pytest

from tuneline.config import parse_config
from tuneline.errors import ValidationFailed
from tuneline.stages.validate import describe_failures, raise_if_failed, validate_frame

LABELS = ["negative", "positive"]
PER_CLASS = 30


def config(data: dict | None = None, validation: dict | None = None):
    return parse_config({
        "name": "reviews",
        "data": {"source": "unused.csv", "labels": LABELS, **(data or {})},
        "validation": validation or {},
    })


def good_frame(per_class: int = PER_CLASS) -> pd.DataFrame:
    rows = [{"text": f"a {label} review, number {i}", "label": label} for i in range(per_class) for label in LABELS]
    return pd.DataFrame(rows)


def failed(report: dict) -> dict[str, dict]:
    """Failed results by expectation name."""
    return {r["expectation"]: r for r in report["results"] if not r["success"]}


def failure_line(report: dict, expectation: str) -> str:
    lines = [line for line in describe_failures(report).splitlines() if expectation in line]
    assert len(lines) == 1, describe_failures(report)
    return lines[0]


def test_good_data_passes_every_expectation():
    frame = good_frame()
    report = validate_frame(frame, config())
    assert report["success"] is True
    assert report["rows"] == len(frame)
    assert failed(report) == {}
    assert describe_failures(report) == ""
    names = {r["expectation"] for r in report["results"]}
    assert {"expect_column_to_exist", "expect_rows_per_class_to_be_at_least",
            "expect_train_texts_not_in_evaluation_splits"} <= names


def test_validate_frame_does_not_modify_the_callers_frame():
    frame = good_frame()
    before = frame.copy()
    validate_frame(frame, config())
    pd.testing.assert_frame_equal(frame, before)


def test_missing_text_column_is_named():
    frame = good_frame().rename(columns={"text": "review"})
    report = validate_frame(frame, config())
    assert report["success"] is False
    missing = failed(report)["expect_column_to_exist"]
    assert missing["column"] == "text"
    assert "'text'" in failure_line(report, "expect_column_to_exist")


def test_missing_label_column_is_named():
    frame = good_frame().rename(columns={"label": "sentiment"})
    report = validate_frame(frame, config())
    assert failed(report)["expect_column_to_exist"]["column"] == "label"


def test_null_texts_are_counted():
    frame = good_frame()
    frame.loc[[3, 10], "text"] = None
    report = validate_frame(frame, config())
    result = failed(report)["expect_column_values_to_not_be_null"]
    assert result["column"] == "text"
    assert result["unexpected_count"] == 2
    assert f"2 of {len(frame)} rows" in failure_line(report, "expect_column_values_to_not_be_null")


def test_too_long_text_is_counted_with_an_example():
    limit = 60
    frame = good_frame()
    long_text = "this review goes on and on " * 10
    assert len(long_text) > limit
    frame.loc[5, "text"] = long_text
    report = validate_frame(frame, config(validation={"max_text_length": limit}))
    result = failed(report)["expect_column_value_lengths_to_be_between"]
    assert result["unexpected_count"] == 1
    assert result["examples"] == [long_text]
    line = failure_line(report, "expect_column_value_lengths_to_be_between")
    assert f"1 of {len(frame)} rows" in line and "this review goes on" in line


def test_too_short_text_is_counted():
    frame = good_frame()
    frame.loc[[0, 1, 2], "text"] = "ok"
    report = validate_frame(frame, config(validation={"min_text_length": 3}))
    assert failed(report)["expect_column_value_lengths_to_be_between"]["unexpected_count"] == 3


def test_label_outside_the_configured_labels_is_named():
    frame = good_frame()
    frame.loc[7, "label"] = "neutral"
    report = validate_frame(frame, config(validation={"min_rows_per_class": 1}))
    result = failed(report)["expect_column_values_to_be_in_set"]
    assert result["column"] == "label"
    assert result["unexpected_count"] == 1
    line = failure_line(report, "expect_column_values_to_be_in_set")
    assert "'neutral'" in line and f"1 of {len(frame)} rows" in line


def test_numeric_labels_match_configured_labels():
    frame = good_frame()
    frame["label"] = frame["label"].map({"negative": 0, "positive": 1})
    report = validate_frame(frame, config(data={"labels": [0, 1]}))
    assert report["success"] is True, describe_failures(report)


def test_too_many_duplicates_are_detected():
    frame = good_frame()
    copies = 20
    frame.loc[: copies - 1, "text"] = "the same text again"
    unique_share = frame["text"].nunique() / len(frame)
    report = validate_frame(frame, config(validation={"max_duplicate_fraction": 0.2}))
    result = failed(report)["expect_column_proportion_of_unique_values_to_be_between"]
    assert result["observed"] == pytest.approx(unique_share)
    assert "observed" in failure_line(report, "expect_column_proportion_of_unique_values_to_be_between")


def test_a_few_duplicates_are_tolerated():
    frame = good_frame()
    frame.loc[[0, 2], "text"] = frame.loc[4, "text"]  # same label, so the split keeps them together
    report = validate_frame(frame, config(validation={"max_duplicate_fraction": 0.2}))
    assert report["success"] is True, describe_failures(report)


def test_too_few_rows_for_a_class_are_counted_and_named():
    small = 3
    frame = pd.concat([good_frame(), pd.DataFrame({"text": [f"meh {i}" for i in range(small)], "label": "neutral"})],
                      ignore_index=True)
    report = validate_frame(frame, config(data={"labels": [*LABELS, "neutral"]},
                                          validation={"min_rows_per_class": 5}))
    result = failed(report)["expect_rows_per_class_to_be_at_least"]
    assert result["observed"]["neutral"] == small
    assert result["examples"] == ["neutral"]
    line = failure_line(report, "expect_rows_per_class_to_be_at_least")
    assert "'neutral': 3" in line and "minimum 5" in line


def test_a_single_label_cannot_train_a_classifier():
    frame = good_frame()
    frame["label"] = "positive"
    report = validate_frame(frame, config())
    assert "at least two distinct labels" in failure_line(report, "expect_rows_per_class_to_be_at_least")


def test_too_few_rows_overall_are_detected():
    frame = good_frame(per_class=6)
    report = validate_frame(frame, config(validation={"min_rows": 20}))
    assert failed(report)["expect_table_row_count_to_be_between"]["observed"] == len(frame)


def predefined_split_frame() -> pd.DataFrame:
    frame = good_frame()
    frame["split"] = (["train"] * 8 + ["validation"] + ["test"]) * (len(frame) // 10)
    return frame


def test_predefined_split_without_overlap_passes():
    report = validate_frame(predefined_split_frame(), config(data={"split_column": "split"}))
    assert report["success"] is True, describe_failures(report)


def test_same_text_in_train_and_test_is_a_split_overlap():
    frame = predefined_split_frame()
    train_row = frame.index[frame["split"] == "train"][0]
    test_row = frame.index[frame["split"] == "test"][0]
    leaked = frame.loc[test_row, "text"]
    frame.loc[train_row, ["text", "label"]] = [leaked, frame.loc[test_row, "label"]]
    report = validate_frame(frame, config(data={"split_column": "split"}))
    result = failed(report)["expect_train_texts_not_in_evaluation_splits"]
    assert result["unexpected_count"] == 1
    assert result["examples"] == [leaked]
    assert leaked in failure_line(report, "expect_train_texts_not_in_evaluation_splits")


def test_split_overlap_check_can_be_switched_off():
    frame = predefined_split_frame()
    frame.loc[0, "text"] = frame.loc[frame["split"] == "test", "text"].iloc[0]
    report = validate_frame(frame, config(data={"split_column": "split"}, validation={"check_split_overlap": False}))
    assert report["success"] is True, describe_failures(report)


def test_unknown_split_name_is_named():
    frame = predefined_split_frame()
    frame.loc[4, "split"] = "dev"
    report = validate_frame(frame, config(data={"split_column": "split"}))
    result = failed(report)["expect_column_values_to_be_in_set"]
    assert result["column"] == "split" and result["examples"] == ["dev"]


def test_raise_if_failed_lists_each_failed_expectation():
    frame = good_frame()
    frame.loc[0, "text"] = None
    frame.loc[1, "label"] = "neutral"
    report = validate_frame(frame, config(validation={"min_rows_per_class": 1}))
    failures = failed(report)
    assert len(failures) >= 2
    with pytest.raises(ValidationFailed) as caught:
        raise_if_failed(report, "/store/validation/abc/report.json")
    message = str(caught.value)
    assert f"({len(failures)} expectation(s))" in message
    assert "/store/validation/abc/report.json" in message
    for name in failures:
        assert name in message
    assert "'neutral'" in message


def test_raise_if_failed_is_silent_on_good_data():
    report = validate_frame(good_frame(), config())
    assert raise_if_failed(report, "unused") is None
