"""Validate a dataset snapshot with great-expectations before any training.

Reads the ingested snapshot and the config; writes ``validation/<key>/report.json`` (one entry
per expectation: success, counts, example values). The general checks live here (columns
present, enough rows, few duplicates, split values, no input shared between training and
evaluation splits); the objective adds its own (labels, targets, conversations, tags). The key
covers the dataset, the data and validation settings, the objective and this stage's version,
so a verdict is never reused for another task kind.
"""

from __future__ import annotations

import pandas as pd

from tuneline import keys, objectives
from tuneline.config import FinetuneConfig
from tuneline.data.expectations import MAX_EXAMPLES, run_expectations
from tuneline.data.ingest import load_dataset_frame
from tuneline.data.splits import INPUT, SPLITS, assign_splits
from tuneline.errors import ValidationFailed
from tuneline.results import Dataset, Validated
from tuneline.storage import Storage


def general_expectations(frame: pd.DataFrame, cfg: FinetuneConfig, columns: list[str]) -> list:
    import great_expectations.expectations as gxe

    data, limits = cfg.data, cfg.validation
    found = [gxe.ExpectColumnToExist(column=c) for c in columns]
    found.append(gxe.ExpectTableRowCountToBeBetween(min_value=limits.min_rows))
    if data.split_column and data.split_column in frame.columns:
        found.append(gxe.ExpectColumnValuesToBeInSet(column=data.split_column, value_set=list(SPLITS)))
    if INPUT in frame.columns:
        found.append(gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column=INPUT, min_value=1.0 - limits.max_duplicate_fraction))
    return found


def scalar_view(frame: pd.DataFrame) -> pd.DataFrame:
    """What great-expectations sees: list-like cells (token lists, chat turns) as text; GX wants scalars."""
    view = frame.copy()
    for column in view.columns:
        if view[column].dtype == object and view[column].map(lambda v: isinstance(v, (list, tuple, dict))
                                                             or hasattr(v, "__array__")).any():
            view[column] = view[column].map(lambda v: None if v is None else str(list(v) if hasattr(v, "__array__")
                                                                                  else v))
    return view


def overlap_check(frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
    """No training input also appears in the validation or test split (checked on the train rows)."""
    splits = assign_splits(frame, cfg.data)
    held_out = set(frame.loc[splits.isin(["validation", "test"]), INPUT])
    leaked = frame.loc[(splits == "train") & frame[INPUT].isin(held_out), INPUT]
    noun = objectives.get(cfg.task.value).input_noun
    return {"expectation": f"expect_train_{noun}_not_in_evaluation_splits", "column": INPUT,
            "success": leaked.empty, "unexpected_count": int(len(leaked)),
            "element_count": int((splits == "train").sum()),
            **({"examples": [str(v)[:80] for v in leaked.iloc[:MAX_EXAMPLES]]} if not leaked.empty else {})}


def validate_frame(frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
    """Run every expectation; returns {'success', 'rows', 'results': [...]} (never raises on bad data)."""
    objective = objectives.get(cfg.task.value)
    columns = objective.input_columns(cfg) + ([cfg.data.split_column] if cfg.data.split_column else [])
    readable = all(c in frame.columns for c in objective.input_columns(cfg))
    derived = objective.derive(frame, cfg) if readable else frame.copy()
    expectations = general_expectations(derived, cfg, columns)
    if readable:
        expectations += objective.expectations(derived, cfg)
    results = run_expectations(scalar_view(derived), expectations)
    for entry in results:
        entry["column"] = objective.report_column(entry.get("column"), cfg)
    if readable:
        results += objective.checks(derived, cfg)
    if cfg.validation.check_split_overlap and readable and all(r["success"] for r in results):
        results.append(overlap_check(derived, cfg))
    return {"success": all(r["success"] for r in results), "rows": len(frame), "results": results}


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


def report_key(dataset: Dataset, cfg: FinetuneConfig) -> str:
    """Where the report of this (dataset, objective, data and validation settings) is stored, passed or failed."""
    key = keys.cache_key(keys.VALIDATE_VERSION, cfg.task.value, dataset.fingerprint, cfg.data, cfg.validation)
    return keys.validation_report(key)


def validate_dataset(storage: Storage, dataset: Dataset, cfg: FinetuneConfig) -> Validated:
    """Validate a snapshot once per (dataset, objective, settings); the report is stored.

    Raises ``ValidationFailed`` (deterministic: same data, same verdict) when any expectation fails.
    """
    key = report_key(dataset, cfg)
    reused = cfg.cache and storage.exists(key)
    report = storage.read_json(key) if reused else validate_frame(load_dataset_frame(storage, dataset), cfg)
    if not reused:
        storage.write_json(key, report)
    raise_if_failed(report, storage.uri(key))
    met = sum(r["success"] for r in report["results"])
    return Validated(report_key=key, report_uri=storage.uri(key), success=True, expectations=met, reused=reused)
