"""great-expectations helpers: run expectations on a DataFrame and summarise the results.

Reads a DataFrame; writes nothing (GX runs in an ephemeral context). Imported lazily by the
validate stage and the objectives: GX takes seconds and hundreds of MB to import.
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


def check_entry(name: str, column: str | None, bad: pd.Series, total: int, **extra) -> dict:
    """A report entry for a check GX cannot express: ``bad`` holds the offending values."""
    return {
        "expectation": name,
        "column": column,
        "success": bad.empty,
        "unexpected_count": int(len(bad)),
        "element_count": int(total),
        **({"examples": [str(v)[:80] for v in bad.iloc[:MAX_EXAMPLES]]} if not bad.empty else {}),
        **extra,
    }
