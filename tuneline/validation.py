"""Validate a dataset snapshot with great-expectations before any training.

Reads the ingested snapshot and the config; writes ``validation/<key>/report.json``
(one entry per expectation: success, counts, example values). GX runs in
an ephemeral context, imported lazily (it takes seconds and hundreds of MB).
"""

from __future__ import annotations

import os

import pandas as pd

from tuneline.config import FinetuneConfig, Task
from tuneline.errors import ValidationFailed
from tuneline.fingerprints import content_key
from tuneline.ingest import load_dataset_frame
from tuneline.splits import SPLITS, assign_splits, input_key
from tuneline.storage import Storage

MAX_EXAMPLES = 5
NUMERIC_TARGET = "_target"  # regression: the label column parsed as numbers (unparseable -> null)


def _gx_batch(frame: pd.DataFrame, name: str):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    return asset.add_batch_definition_whole_dataframe(name).get_batch(batch_parameters={"dataframe": frame})


def _row_expectations(cfg: FinetuneConfig, frame: pd.DataFrame) -> list:
    import great_expectations.expectations as gxe

    data, limits = cfg.data, cfg.validation
    text_columns = [c for c in (data.text_column, data.text_pair_column) if c]
    required = [*text_columns, data.label_column] + ([data.split_column] if data.split_column else [])
    expectations = [gxe.ExpectColumnToExist(column=c) for c in required]
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=limits.min_rows))
    present = set(frame.columns)
    for column in (c for c in text_columns if c in present):
        expectations += [
            gxe.ExpectColumnValuesToNotBeNull(column=column),
            gxe.ExpectColumnValuesToBeOfType(column=column, type_="str"),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=column, min_value=limits.min_text_length, max_value=limits.max_text_length
            ),
        ]
    if data.label_column in present:
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=data.label_column))
        if cfg.task == Task.regression:
            if limits.target_min is not None or limits.target_max is not None:
                expectations.append(gxe.ExpectColumnValuesToBeBetween(
                    column=NUMERIC_TARGET, min_value=limits.target_min, max_value=limits.target_max))
        elif data.labels:
            expectations.append(gxe.ExpectColumnValuesToBeInSet(column=data.label_column, value_set=data.labels))
    if data.split_column and data.split_column in present:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column=data.split_column, value_set=list(SPLITS)))
    if "_input" in present:
        expectations.append(
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column="_input", min_value=1.0 - limits.max_duplicate_fraction
            )
        )
    return expectations


def _summarise(result) -> dict:
    config = result.expectation_config
    details = result.result or {}
    entry = {
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "success": bool(result.success),
    }
    for src, dst in (("observed_value", "observed"), ("unexpected_count", "unexpected_count"),
                     ("element_count", "element_count")):
        if details.get(src) is not None:
            entry[dst] = details[src]
    examples = details.get("partial_unexpected_list")
    if examples:
        entry["examples"] = [None if pd.isna(v) else v for v in examples[:MAX_EXAMPLES]]
    if result.exception_info and result.exception_info.get("raised_exception"):
        entry["error"] = result.exception_info.get("exception_message")
    return entry


def _class_counts_check(frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
    counts = frame[cfg.data.label_column].dropna().astype(str).value_counts()
    small = counts[counts < cfg.validation.min_rows_per_class]
    return {
        "expectation": "expect_rows_per_class_to_be_at_least",
        "column": cfg.data.label_column,
        "success": len(counts) >= 2 and small.empty,
        "observed": {str(k): int(v) for k, v in counts.items()},
        "minimum": cfg.validation.min_rows_per_class,
        **({"examples": list(small.index[:MAX_EXAMPLES])} if not small.empty else {}),
        **({"error": "need at least two distinct labels"} if len(counts) < 2 else {}),
    }


def _numeric_target_check(frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
    """Regression: every non-null target parses as a finite number."""
    raw = frame[cfg.data.label_column]
    bad = raw[raw.notna() & frame[NUMERIC_TARGET].isna()]
    return {
        "expectation": "expect_column_values_to_be_numeric",
        "column": cfg.data.label_column,
        "success": bad.empty,
        "unexpected_count": int(len(bad)),
        "element_count": int(raw.notna().sum()),
        **({"examples": [str(v) for v in bad.iloc[:MAX_EXAMPLES]]} if not bad.empty else {}),
    }


def _overlap_expectation(frame: pd.DataFrame, cfg: FinetuneConfig):
    """Texts of the training split must not appear in validation or test (checked on the train rows)."""
    import great_expectations.expectations as gxe

    splits = assign_splits(frame, cfg.data, numeric_target=cfg.task == Task.regression)
    evaluation_inputs = sorted(set(frame.loc[splits.isin(["validation", "test"]), "_input"]))
    train_rows = frame.loc[splits == "train", ["_input"]].reset_index(drop=True)
    expectation = gxe.ExpectColumnValuesToNotBeInSet(column="_input", value_set=evaluation_inputs)
    return train_rows, expectation


def validate_frame(frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
    """Run every expectation; returns {'success', 'rows', 'results': [...]} (never raises on bad data)."""
    if cfg.task == Task.causal_lm:  # prompt/response (or chat) rows: no label checks
        from tuneline.instructions import validate_instruction_frame

        return validate_instruction_frame(frame, cfg)
    data = cfg.data
    frame = frame.copy()
    columns_ok = all(c in frame.columns for c in (data.text_column, data.label_column))
    pair_ok = not data.text_pair_column or data.text_pair_column in frame.columns
    if columns_ok and pair_ok:
        frame["_input"] = input_key(frame, data)
    regression = cfg.task == Task.regression
    if data.label_column in frame.columns:
        labels = frame[data.label_column]
        frame[data.label_column] = labels.where(labels.isna(), labels.astype(str))
        if regression:
            numbers = pd.to_numeric(frame[data.label_column].str.strip(), errors="coerce")
            frame[NUMERIC_TARGET] = numbers.where(numbers.abs() != float("inf"))
    batch = _gx_batch(frame, "dataset")
    suite_results = batch.validate(_expectation_suite(_row_expectations(cfg, frame)), result_format="SUMMARY")
    results = [_summarise(r) for r in suite_results.results]
    if data.label_column in frame.columns:
        results.append(_numeric_target_check(frame, cfg) if regression else _class_counts_check(frame, cfg))
    row_checks_ok = all(r["success"] for r in results)
    if cfg.validation.check_split_overlap and row_checks_ok and "_input" in frame.columns:
        train_rows, expectation = _overlap_expectation(frame, cfg)
        entry = _summarise(_gx_batch(train_rows, "train_split").validate(expectation, result_format="SUMMARY"))
        entry["expectation"] = "expect_train_texts_not_in_evaluation_splits"
        results.append(entry)
    return {"success": all(r["success"] for r in results), "rows": len(frame), "results": results}


def _expectation_suite(expectations: list):
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="tuneline_dataset")
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def describe_failures(report: dict) -> str:
    """One line per failed expectation: what, where, how many, and a few offending values."""
    lines = []
    for r in report["results"]:
        if r["success"]:
            continue
        where = f" on column {r['column']!r}" if r.get("column") else ""
        detail = []
        if "unexpected_count" in r:
            detail.append(f"{r['unexpected_count']} of {r.get('element_count', report['rows'])} rows")
        elif "observed" in r:
            detail.append(f"observed {r['observed']}")
        if "minimum" in r:
            detail.append(f"minimum {r['minimum']}")
        if r.get("examples"):
            detail.append("e.g. " + ", ".join(repr(v)[:80] for v in r["examples"]))
        if r.get("error"):
            detail.append(r["error"])
        lines.append(f"  - {r['expectation']}{where}: " + "; ".join(detail))
    return "\n".join(lines)


def raise_if_failed(report: dict, report_uri: str) -> None:
    if not report["success"]:
        failed = sum(not r["success"] for r in report["results"])
        raise ValidationFailed(
            f"data validation failed ({failed} expectation(s)); report: {report_uri}\n" + describe_failures(report)
        )


def report_key(dataset: dict, cfg: FinetuneConfig) -> str:
    """Where the report of this (dataset, data and validation settings) is stored, passed or failed."""
    return f"validation/{content_key(dataset['fingerprint'], cfg.data, cfg.validation)}/report.json"


def validate_dataset(storage: Storage, dataset: dict, cfg: FinetuneConfig) -> dict:
    """Validate a snapshot once per (dataset, data and validation settings); the report is stored.

    Raises ``ValidationFailed`` (deterministic: same data, same verdict) when any expectation fails.
    """
    key = report_key(dataset, cfg)
    reused = cfg.cache and storage.exists(key)
    report = storage.read_json(key) if reused else validate_frame(load_dataset_frame(storage, dataset), cfg)
    if not reused:
        storage.write_json(key, report)
    raise_if_failed(report, storage.uri(key))
    met = sum(r["success"] for r in report["results"])
    return {"report_uri": storage.uri(key), "success": True, "expectations": met, "reused": reused}
