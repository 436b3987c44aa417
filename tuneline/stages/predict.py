"""Batch prediction: a registered model over a file of rows, written back with its predictions.

Reads the version that ``ref`` names (``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``) from the registry in
the storage root (pulled once and verified into the local cache, ``tuneline.loading.pull_cached``) and
one data file or folder, local or ``s3://`` (CSV, TSV, JSONL, Parquet, CoNLL: ingest's readers). Writes
one file, ``out`` (local or ``s3://``; CSV, TSV, JSONL or Parquet by its extension): the input rows in
their order, plus the prediction columns of the version's objective. The version used is recorded with
it: Parquet key-value metadata ``tuneline`` (JSON), or for the text formats a sidecar ``<out>.meta.json``
written after ``out``.

Nothing is written until every row is predicted, and never half a file: a local ``out`` is written to a
temporary file beside it and renamed into place; an ``s3://`` one is a finished local file uploaded with
one PUT (or one multipart upload, which also appears whole). Bad input (an unknown model or output
format, a missing column, an unreadable file, an empty cell) fails before the model is loaded.

Rows are predicted in batches of similar length (sorted by input length, longest first, so a batch that
does not fit in memory fails at once), then put back in input order.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from tuneline import objectives
from tuneline.config import DataConfig, EvaluationConfig, ModelConfig
from tuneline.data.ingest import list_source_files, read_files
from tuneline.errors import ConfigError, DataError
from tuneline.fingerprints import code_version
from tuneline.loading import pull_cached
from tuneline.objectives.base import Objective, PredictionInputs
from tuneline.registry import Registry, now_iso
from tuneline.results import Prediction
from tuneline.storage import open_storage, storage_root_or_default
from tuneline.storage.local import shareable

OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
METADATA_KEY = "tuneline"  # Parquet key-value metadata: the version used, as JSON
SIDECAR_SUFFIX = ".meta.json"  # text formats: <out>.meta.json holds the same JSON
PREDICTED_PREFIX = "predicted_"  # a prediction column whose name the input already uses (e.g. its true label)
PROGRESS_EVERY_S = 5.0  # at most one progress report per this many seconds (and one at the end)
DEFAULT_BATCH_SIZE = 32

Progress = Callable[[int, int], None]  # (rows done, rows in all)


def predict_file(ref: str, data: str, out: str, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 storage_root: str | None = None, text_column: str | None = None,
                 text_pair_column: str | None = None, max_new_tokens: int | None = None,
                 data_format: str = "auto", progress: Progress | None = None,
                 progress_every_s: float = PROGRESS_EVERY_S) -> Prediction:
    """Predict every row of ``data`` with the version ``ref`` names; write the rows and predictions to ``out``."""
    started = time.perf_counter()
    out_format = output_format(out)  # the cheap checks first: nothing runs for a run that cannot finish
    if batch_size < 1:
        raise ConfigError(f"batch size: must be at least 1, got {batch_size}")
    root = storage_root_or_default(storage_root)
    registry = Registry(open_storage(root))
    name, version = registry.resolve(ref)
    manifest = registry.manifest(name, version)
    frame = read_input(data, data_format)
    folder, _ = pull_cached(f"{name}:{version}", root)  # this exact version, even if an alias moves meanwhile
    objective = objectives.get(manifest["task"]) if manifest.get("task") else objectives.for_folder(folder)
    inputs = prediction_inputs(objective, manifest.get("config") or {}, text_column, text_pair_column,
                               max_new_tokens)
    check_columns(frame, inputs.columns, data)

    model, tokenizer, device = load_for_prediction(objective, folder)
    predicting = time.perf_counter()
    predictions = predict_rows(objective, model, tokenizer, frame, inputs, batch_size, progress, progress_every_s)
    predict_seconds = time.perf_counter() - predicting
    output, columns = with_predictions(frame, predictions)
    metadata = {"model": name, "version": version, "ref": ref, "task": objective.name,
                "model_fingerprint": manifest["model_fingerprint"], "model_uri": manifest["uri"],
                "registered_at": manifest.get("registered_at"), "input": data, "rows": len(output),
                "columns": columns, "created_at": now_iso(), "code_version": code_version()}
    recorded = write_output(output, out, out_format, metadata)
    return Prediction(model=name, version=version, task=objective.name,
                      model_fingerprint=manifest["model_fingerprint"], input=data, output=out, metadata=recorded,
                      rows=len(output), columns=columns, batch_size=batch_size, device=device,
                      predict_seconds=round(predict_seconds, 3),
                      rows_per_second=round(len(output) / max(predict_seconds, 1e-9), 1),
                      seconds=round(time.perf_counter() - started, 3))


# -- inputs --------------------------------------------------------------------------------------

def output_format(out: str) -> str:
    """The format ``out``'s extension names (an s3:// output also needs a key under its bucket)."""
    suffix = Path(out.rstrip("/")).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(f"out: {out} has no output format extension (use {', '.join(OUTPUT_FORMATS)})")
    if out.startswith("s3://"):
        from tuneline.storage.s3 import parse_s3_uri

        bucket, key = parse_s3_uri(out, "out")
        if not key:
            raise ConfigError(f"out: {out} names no object under s3://{bucket}/")
    return OUTPUT_FORMATS[suffix]


def read_input(data: str, data_format: str = "auto") -> pd.DataFrame:
    """The rows to predict, read as ingest reads a data source (strings stay strings)."""
    return read_files(list_source_files(data, data_format, label="data"), data_format)


def prediction_inputs(objective: Objective, registered: dict, text_column: str | None,
                      text_pair_column: str | None, max_new_tokens: int | None) -> PredictionInputs:
    """The columns and lengths the version was trained with (``registered``: its config; ``{}`` for a pushed
    folder: the config defaults), with the caller's overrides."""
    data = {**config_defaults(DataConfig), **objective.defaults.get("data", {}), **(registered.get("data") or {})}
    model = {**config_defaults(ModelConfig), **(registered.get("model") or {})}
    evaluation = {**config_defaults(EvaluationConfig), **(registered.get("evaluation") or {})}
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"max new tokens: must be at least 1, got {max_new_tokens}")
    return PredictionInputs(columns=objective.prediction_columns(data, text_column, text_pair_column),
                            max_length=int(model["max_length"]),
                            max_new_tokens=int(max_new_tokens or evaluation["max_new_tokens"]))


def config_defaults(section) -> dict:
    """A config section's default values (fields without a default are left out)."""
    return {name: field.default for name, field in section.model_fields.items() if not field.is_required()}


def check_columns(frame: pd.DataFrame, columns: dict[str, str], data: str) -> None:
    """Every input column is there and has a value in every row (one error naming the first problem)."""
    for role, column in columns.items():
        if column not in frame.columns:
            raise DataError(f"data: {data} has no column {column!r} (the model's {role} input); its columns are "
                            f"{list(frame.columns)}. Name the column to read with --text-column / text_column")
        empty = frame.index[frame[column].isna()].tolist()
        if empty:
            shown = ", ".join(str(i + 1) for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
            raise DataError(f"data: {data}: column {column!r} is empty in {len(empty)} of {len(frame)} rows "
                            f"(data rows {shown}); every row needs its {role}")


# -- prediction ----------------------------------------------------------------------------------

def load_for_prediction(objective: Objective, folder: Path):
    """(model, tokenizer, device): the version's model in inference mode, on the GPU when there is one."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = objective.load(folder)
    return model.to(device).eval(), tokenizer, device


def predict_rows(objective: Objective, model, tokenizer, frame: pd.DataFrame, inputs: PredictionInputs,
                 batch_size: int, progress: Progress | None = None,
                 progress_every_s: float = PROGRESS_EVERY_S) -> pd.DataFrame:
    """The objective's prediction columns for every row, in ``frame``'s order, predicted in length-sorted batches."""
    order = np.argsort(-input_lengths(frame, inputs.columns), kind="stable")
    parts, reported = [], time.monotonic()
    for start in range(0, len(order), batch_size):
        parts.append(objective.predict(model, tokenizer, frame.iloc[order[start:start + batch_size]], inputs))
        done = min(start + batch_size, len(order))
        if progress and (done == len(order) or time.monotonic() - reported >= progress_every_s):
            progress(done, len(order))
            reported = time.monotonic()
    return pd.concat(parts).reindex(frame.index)


def input_lengths(frame: pd.DataFrame, columns: dict[str, str]) -> np.ndarray:
    """Characters of input per row (every input column; a list cell counts its items' characters)."""
    def length(value) -> int:
        if isinstance(value, str):
            return len(value)
        if isinstance(value, (list, tuple, np.ndarray)):
            return sum(length(item) for item in value)
        return len(str(value))

    return sum(frame[column].map(length).to_numpy() for column in columns.values())


def with_predictions(frame: pd.DataFrame, predictions: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The input rows with the prediction columns after them; a name the input already uses gets ``predicted_``."""
    renamed = {}
    for column in predictions.columns:
        name = column
        while name in frame.columns or name in renamed.values():
            name = PREDICTED_PREFIX + name
        renamed[column] = name
    predictions = predictions.rename(columns=renamed)
    return pd.concat([frame, predictions], axis=1), list(predictions.columns)


# -- output --------------------------------------------------------------------------------------

def write_output(frame: pd.DataFrame, out: str, fmt: str, metadata: dict) -> str:
    """Write ``frame`` to ``out`` whole or not at all; returns where the metadata went (``out`` for Parquet,
    else the sidecar). The sidecar is renamed (or uploaded) after ``out``."""
    sidecar = None if fmt == "parquet" else out + SIDECAR_SUFFIX
    if out.startswith("s3://"):
        upload_output(frame, out, fmt, metadata, sidecar)
    else:
        replace_local_output(frame, Path(out).expanduser(), fmt, metadata, sidecar)
    return sidecar or out


def replace_local_output(frame: pd.DataFrame, target: Path, fmt: str, metadata: dict, sidecar: str | None) -> None:
    """Temporary files beside ``target`` (same file system), each renamed into place once complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        staged.append((stage_beside(target, lambda path: write_table(frame, path, fmt, metadata)), target))
        if sidecar:
            meta_target = Path(sidecar).expanduser()
            staged.append((stage_beside(meta_target, lambda path: write_metadata(path, metadata)), meta_target))
        for temporary, final in staged:
            os.replace(temporary, final)
    finally:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)


def stage_beside(target: Path, write: Callable[[Path], None]) -> Path:
    """A hidden temporary file beside ``target`` that ``write`` filled (removed again if it fails)."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        shareable(str(temporary))  # as a plain open would: mkstemp's 0600 hides it
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def upload_output(frame: pd.DataFrame, out: str, fmt: str, metadata: dict, sidecar: str | None) -> None:
    """One upload of a finished local file (an S3 object appears whole), then the sidecar's."""
    from tuneline.storage.s3 import S3Storage, parse_s3_uri

    bucket, key = parse_s3_uri(out, "out")
    storage = S3Storage(bucket, label="out")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(key).name
        write_table(frame, local, fmt, metadata)
        storage.put_file(local, key)
        if sidecar:
            write_metadata(Path(tmp) / "meta.json", metadata)
            storage.put_file(Path(tmp) / "meta.json", key + SIDECAR_SUFFIX)


def write_table(frame: pd.DataFrame, path: Path, fmt: str, metadata: dict) -> None:
    """One file in ``fmt``: Parquet keeps lists and spans as nested columns (and ``metadata`` in its key-value
    metadata); CSV / TSV hold them as JSON text; JSONL as JSON."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        extra = {METADATA_KEY.encode(): json.dumps(metadata, sort_keys=True).encode()}
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **extra}), path)
    elif fmt == "jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for record in frame.to_dict(orient="records"):
                handle.write(json.dumps({k: plain(v) for k, v in record.items()}, ensure_ascii=False) + "\n")
    else:
        text = frame.apply(lambda column: column.map(text_cell) if column.dtype == object else column)
        text.to_csv(path, index=False, sep="\t" if fmt == "tsv" else ",", quoting=csv.QUOTE_MINIMAL)


def write_metadata(path: Path, metadata: dict) -> None:
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def plain(value):
    """A cell as plain JSON: numpy values and arrays as Python ones, NaN and NA as null."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def text_cell(value):
    """A CSV / TSV cell: lists and objects as JSON text, the rest as it is."""
    return json.dumps(plain(value), ensure_ascii=False) if isinstance(value, (list, tuple, dict, np.ndarray)) else value
