"""great-expectations helpers: run expectations on a DataFrame and summarise the results.

Reads a DataFrame, or one batch of rows after another (``ExpectationRunner``: one suite, one context, the
entries of every batch merged: counts summed, the first examples kept, success only when every batch
succeeds); writes nothing (GX runs in an ephemeral context). Imported lazily by the validate stage and the
objectives: GX takes seconds and hundreds of MB to import.
"""

from __future__ import annotations

import os

import pandas as pd

MAX_EXAMPLES = 5  # offending values kept per failed expectation


def gx_batch(frame: pd.DataFrame, name: str):
    """A GX batch over ``frame`` in a fresh ephemeral context (no progress bars, no analytics)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    return asset.add_batch_definition_whole_dataframe(name).get_batch(batch_parameters={"dataframe": frame})


class ExpectationRunner:
    """One suite run on frame after frame (batches of one dataset, in row order); ``entries`` covers them all.

    Entries are merged by ``merge_entries``. An expectation on the whole table (row counts, the share of
    unique values) is only right per batch: the caller replaces those entries with whole-dataset values."""

    def __init__(self, expectations: list, name: str = "dataset"):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas(name).add_dataframe_asset(name)
        self._definition = asset.add_batch_definition_whole_dataframe(name)
        self._suite = expectation_suite(expectations) if expectations else None
        self.entries: list[dict] | None = None

    def add(self, frame: pd.DataFrame) -> None:
        if self._suite is None:
            self.entries = []
            return
        batch = self._definition.get_batch(batch_parameters={"dataframe": frame})
        found = [summarise(r) for r in batch.validate(self._suite, result_format="SUMMARY").results]
        if self.entries is None:
            self.entries = found
            return
        assert [(e["expectation"], e["column"]) for e in found] == \
            [(e["expectation"], e["column"]) for e in self.entries], "GX returned its results in another order"
        self.entries = [merge_entries(before, entry) for before, entry in zip(self.entries, found)]


def merge_entries(before: dict, entry: dict) -> dict:
    """One report entry from an expectation's (or check's) entries on two consecutive batches: success when both
    succeed, ``unexpected_count`` and ``element_count`` summed, the first MAX_EXAMPLES examples, the first
    error; ``observed`` stays the earlier batch's unless only the later one fails."""
    merged = {**before, "success": bool(before["success"] and entry["success"])}
    for key in ("unexpected_count", "element_count"):
        if key in before or key in entry:
            merged[key] = int(before.get(key, 0)) + int(entry.get(key, 0))
    examples = [*(before.get("examples") or []), *(entry.get("examples") or [])][:MAX_EXAMPLES]
    if examples:
        merged["examples"] = examples
    if "observed" in entry and (before["success"] or "observed" not in before) and not entry["success"]:
        merged["observed"] = entry["observed"]
    if "error" in entry and "error" not in before:
        merged["error"] = entry["error"]
    return merged


def expectation_suite(expectations: list):
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="tuneline_dataset")
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def run_expectations(frame: pd.DataFrame, expectations: list, name: str = "dataset") -> list[dict]:
    """Every expectation's report entry (``summarise``), in order."""
    if not expectations:
        return []
    batch = gx_batch(frame, name)
    return [summarise(r) for r in batch.validate(expectation_suite(expectations), result_format="SUMMARY").results]


def summarise(result) -> dict:
    """One report entry: expectation, column, success, counts, observed value, a few offending values."""
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
        entry["examples"] = [None if _is_missing(v) else v for v in examples[:MAX_EXAMPLES]]
    if result.exception_info and result.exception_info.get("raised_exception"):
        entry["error"] = result.exception_info.get("exception_message")
    return entry


def _is_missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and arrays are values, not missing
        return False


def check_entry(name: str, column: str | None, bad: pd.Series, total: int, before: dict | None = None,
                **extra) -> dict:
    """A report entry for a check GX cannot express: ``bad`` holds the offending values. ``before``: the entry of
    the earlier batches, merged in (``merge_entries``)."""
    entry = {
        "expectation": name,
        "column": column,
        "success": bad.empty,
        "unexpected_count": int(len(bad)),
        "element_count": int(total),
        **({"examples": [str(v)[:80] for v in bad.iloc[:MAX_EXAMPLES]]} if not bad.empty else {}),
        **extra,
    }
    return entry if before is None else merge_entries(before, entry)
