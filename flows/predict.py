"""Batch prediction as a flow: a registered version over a data file, the rows plus predictions in one file.

The same work as ``tuneline predict`` (``tuneline.stages.predict``), run by a worker where training runs
(deployments ``score-nightly`` and ``predict-on-demand`` on pool ``gpu``). Returns the summary
(``tuneline.results.Prediction``: version, rows, rows/s, output) and leaves a table artifact with it.
"""

from __future__ import annotations


from prefect import flow

from flows.stages import install_redaction
from tasks.policy import retry_options
from tasks.predict import predict as predict_task
from tuneline.access import check_allowed_locations
from tuneline.config import RetryConfig
from tuneline.storage import storage_root_or_default


@flow(name="predict", log_prints=True)
def predict(ref: str, data: str, out: str, batch_size: int = 32, storage: str | None = None,
            text_column: str | None = None, text_pair_column: str | None = None,
            max_new_tokens: int | None = None) -> dict:
    """Predict every row of ``data`` with ``ref`` (NAME, NAME:VERSION or NAME@ALIAS) and write them to ``out``.

    ``data`` / ``out``: local paths or s3:// URIs (CSV, TSV, JSONL, Parquet; ``out`` by its extension).
    ``storage``: the registry's storage root (else $TUNELINE_STORAGE, else ./.tuneline). ``text_column`` /
    ``text_pair_column``: read other input columns than the version was trained on. ``max_new_tokens``:
    causal_lm answers' length limit (else the version's evaluation.max_new_tokens).
    """
    install_redaction()
    root = storage_root_or_default(storage)
    check_allowed_locations(data=data, out=out, storage=root)  # before anything is read
    task = predict_task.with_options(**retry_options(RetryConfig()))
    result = task(ref, data, out, batch_size, root, text_column, text_pair_column, max_new_tokens)
    return result.model_dump(mode="json")
