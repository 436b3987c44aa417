"""Evaluate registered versions on new labelled data: the pipeline's metrics, side by side.

Each version is scored by one task (``evaluate-registered``); its result is stored beside it
(``registry/<name>/versions/<NNNNNN>/evaluations/<fp16>.json``; the manifest never changes) and the
comparison becomes a table artifact. Returns what ``tuneline evaluate --json`` prints.
"""

from __future__ import annotations


from prefect import flow

from flows.stages import install_redaction
from tasks import artifacts
from tasks.evaluate_version import evaluate_registered_version
from tasks.policy import retry_options
from tuneline.access import check_allowed_locations, check_allowed_roots
from tuneline.config import RetryConfig
from tuneline.stages.evaluate_version import compare, comparison_table, plan_evaluations
from tuneline.storage import open_storage, storage_root_or_default


@flow(name="evaluate-version", log_prints=True)
def evaluate_version(refs: list[str], data: str, storage: str | None = None) -> dict:
    """Score ``refs`` (NAME, NAME:VERSION or NAME@ALIAS) on the labelled ``data`` with each version's own settings."""
    install_redaction()
    root = storage_root_or_default(storage)
    check_allowed_locations(data=data, storage=root)  # before the registry or the data is read
    planned = plan_evaluations(open_storage(root), refs, data)  # an unknown ref fails here: nothing written
    for _, config in planned:
        check_allowed_roots(config)  # the version's base model too (an adapter loads it)
    task = evaluate_registered_version.with_options(**retry_options(RetryConfig()))
    comparison = compare([task(root, ref, data) for ref, _ in planned])
    artifacts.version_comparison(comparison, comparison_table(comparison))
    return comparison
