"""Validate a dataset snapshot with great-expectations before any training.

Reads the ingested snapshot and the config; writes ``validation/<key>/report.json`` (one entry
per expectation: success, counts, example values). The general checks live here (columns
present, enough rows, few duplicates, split values, no input shared between training and
evaluation splits); the objective adds its own (labels, targets, conversations, tags). The key
covers the dataset, the data and validation settings, the objective and this stage's version,
so a verdict is never reused for another task kind.

Every expectation covers every row, in bounded memory: the snapshot is read ``data.batch_rows`` rows at a
time; the suite runs on each batch and the entries are merged (counts summed, the first examples kept,
success only when every batch succeeds), the objective's checks carry their counts from batch to batch,
and what needs all rows at once (the row count, the share of duplicate inputs, the split overlap) comes
from a 64-bit hash and a stratum per row (``tuneline.data.splits.SplitTally``, about 14 bytes a row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from tuneline import keys, objectives
from tuneline.config import FinetuneConfig
from tuneline.data.batches import parquet_batches
from tuneline.data.expectations import MAX_EXAMPLES, ExpectationRunner
from tuneline.data.ingest import snapshot_columns, snapshot_file
from tuneline.data.splits import INPUT, SPLITS, TEST, TRAIN, VALIDATION, SplitTally
from tuneline.errors import ValidationFailed
from tuneline.results import Dataset, Validated
from tuneline.storage import Storage

ROW_COUNT = "expect_table_row_count_to_be_between"  # whole-table expectations: recomputed over every row
UNIQUE_SHARE = "expect_column_proportion_of_unique_values_to_be_between"

Batches = Callable[[], Iterable[pd.DataFrame]]  # a fresh pass over the rows, batch by batch, index = row position


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


def whole_table_entries(entries: list[dict], rows: int, tally: SplitTally | None, cfg: FinetuneConfig) -> None:
    """Replace the per-batch values of the whole-table expectations with the whole dataset's."""
    for entry in entries:
        if entry["expectation"] == ROW_COUNT:
            entry.update(success=rows >= cfg.validation.min_rows, observed=rows)
        elif entry["expectation"] == UNIQUE_SHARE and tally is not None:
            present = int(np.count_nonzero(~tally.nulls()))
            share = tally.distinct_inputs() / present if present else 0.0
            entry.update(success=share >= 1.0 - cfg.validation.max_duplicate_fraction, observed=share)


def overlap_check(tally: SplitTally, cfg: FinetuneConfig, batches: Batches) -> dict:
    """No training input also appears in the validation or test split (checked on the train rows, by hash)."""
    splits = tally.splits()
    group, first = tally.groups()
    held_out = np.zeros(len(first), dtype=bool)
    held_out[group[(splits == VALIDATION) | (splits == TEST)]] = True
    train = splits == TRAIN
    leaked = train & held_out[group]
    noun = objectives.get(cfg.task.value).input_noun
    positions = np.flatnonzero(leaked)[:MAX_EXAMPLES]
    return {"expectation": f"expect_train_{noun}_not_in_evaluation_splits", "column": INPUT,
            "success": not leaked.any(), "unexpected_count": int(leaked.sum()), "element_count": int(train.sum()),
            **({"examples": [str(v)[:80] for v in inputs_at(positions, cfg, batches)]} if len(positions) else {})}


def inputs_at(positions: np.ndarray, cfg: FinetuneConfig, batches: Batches) -> list:
    """The derived inputs of the rows at ``positions`` (a second pass, deriving only the batches that hold them)."""
    objective, wanted, found = objectives.get(cfg.task.value), set(positions.tolist()), {}
    for batch in batches():
        rows = [p for p in batch.index if p in wanted]
        if rows:
            derived = objective.derive(batch.loc[rows], cfg)
            found.update(zip(rows, derived[INPUT]))
        if len(found) == len(wanted):
            break
    return [found[p] for p in positions.tolist()]


def validate_batches(batches: Batches, columns: list[str], cfg: FinetuneConfig) -> dict:
    """Run every expectation over every batch of a dataset whose columns are ``columns``; returns {'success',
    'rows', 'results': [...]} (never raises on bad data)."""
    objective = objectives.get(cfg.task.value)
    configured = objective.input_columns(cfg) + ([cfg.data.split_column] if cfg.data.split_column else [])
    readable = all(c in columns for c in objective.input_columns(cfg))
    runner, checks, rows = None, None, 0
    tally = SplitTally(cfg.data) if readable else None
    for batch in batches():
        derived = objective.derive(batch, cfg) if readable else batch
        if runner is None:
            expectations = general_expectations(derived, cfg, configured)
            runner = ExpectationRunner(expectations + (objective.expectations(derived, cfg) if readable else []))
        runner.add(scalar_view(derived))
        if readable:
            checks = objective.checks(derived, cfg, checks)
            tally.add(derived)
        rows += len(batch)
    results = runner.entries
    whole_table_entries(results, rows, tally, cfg)
    for entry in results:
        entry["column"] = objective.report_column(entry.get("column"), cfg)
    if readable:
        results += checks
    if cfg.validation.check_split_overlap and readable and all(r["success"] for r in results):
        results.append(overlap_check(tally, cfg, batches))
    return {"success": all(r["success"] for r in results), "rows": rows, "results": results}


def frame_batches(frame: pd.DataFrame, batch_rows: int) -> Batches:
    """An in-memory frame as batches of ``batch_rows`` rows, indexed by row position."""
    frame = frame.reset_index(drop=True)
    return lambda: (frame.iloc[start:start + batch_rows] for start in range(0, max(len(frame), 1), batch_rows))


def validate_frame(frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
    """Run every expectation on an in-memory frame (in batches of ``data.batch_rows``, as a snapshot is read);
    returns {'success', 'rows', 'results': [...]} (never raises on bad data)."""
    return validate_batches(frame_batches(frame, cfg.data.batch_rows), list(frame.columns), cfg)


def snapshot_batches(storage: Storage, dataset: Dataset, cfg: FinetuneConfig) -> tuple[Batches, list[str]]:
    """The snapshot's batches (only the columns validation reads, when they all exist) and its columns."""
    path = snapshot_file(storage, dataset)
    columns = snapshot_columns(path)
    objective = objectives.get(cfg.task.value)
    wanted = objective.input_columns(cfg) + ([cfg.data.split_column] if cfg.data.split_column else [])
    read = [c for c in dict.fromkeys(wanted) if c in columns] if all(c in columns for c in wanted) else None
    return (lambda: parquet_batches(path, cfg.data.batch_rows, read)), columns


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
    key = keys.cache_key(keys.VALIDATE_VERSION, cfg.task.value, dataset.fingerprint, cfg.data.output_settings(),
                         cfg.validation)
    return keys.validation_report(key)


def validate_dataset(storage: Storage, dataset: Dataset, cfg: FinetuneConfig) -> Validated:
    """Validate a snapshot once per (dataset, objective, settings); the report is stored.

    Raises ``ValidationFailed`` (deterministic: same data, same verdict) when any expectation fails.
    """
    key = report_key(dataset, cfg)
    reused = cfg.cache and storage.exists(key)
    report = storage.read_json(key) if reused else validate_batches(*snapshot_batches(storage, dataset, cfg), cfg)
    if not reused:
        storage.write_json(key, report)
    raise_if_failed(report, storage.uri(key))
    met = sum(r["success"] for r in report["results"])
    return Validated(report_key=key, report_uri=storage.uri(key), success=True, expectations=met, reused=reused)
