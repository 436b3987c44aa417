"""Prepare: split the snapshot, fit what is learnt from the training split, encode each split.

Reads ``datasets/<fp>/data.parquet``; writes ``prepared/<key>/{train,validation,test}`` (HF
``datasets`` arrow folders) and ``prepared/<key>/meta.json``. The objective derives each row's
input and stratum, fits its parameters (labels, target scaling) and encodes the rows with the
base model's tokenizer. The key covers the dataset, the data and model settings, the base
model's files, the objective, this stage's version and the library versions. ``prepare_rows``
encodes new data for a registered version instead: every row in one split, the version's
fitted values and tokenizer.

Memory follows ``data.batch_rows``, not the dataset: a first pass over the snapshot keeps a hash and a
stratum per row (the split, ``tuneline.data.splits.SplitTally``) and the few values ``fit`` reads (the
objective's ``fit_columns``, shared values: a few bytes a row); a second pass encodes batch by batch into
the split folders (``tuneline.data.encoded.SplitWriter``), in ``data.num_proc`` processes for large data.
With ``data.engine: ray`` both passes run on a Ray cluster's workers instead (``tuneline.stages.prepare_on_ray``)
and this process writes what they send back. Neither the engine, the batch size nor the processes change what is
written, byte for byte.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline import keys, objectives
from tuneline.config import DataEngine, FinetuneConfig
from tuneline.data.batches import parquet_batches
from tuneline.data.encoded import SplitWriter
from tuneline.data.ingest import snapshot_file, snapshot_rows
from tuneline.data.splits import SPLITS, TRAIN, SplitTally, assign_splits
from tuneline.models.base import ResolvedBase, check_max_length, resolve_base
from tuneline.results import Dataset, Prepared
from tuneline.stages import prepare_on_ray as on_ray
from tuneline.stages.encoding import BatchEncoder, SharedValues, quiet_datasets
from tuneline.storage import Storage

PROCESSES_FROM_ROWS = 200_000  # data.num_proc unset: more than one encoding process from this many rows
MAX_PROCESSES = 4  # ... and at most this many (each extra process holds about 200-300 MB)

Batches = Callable[[], Iterable[pd.DataFrame]]  # a fresh pass over the rows, batch by batch, index = row position


def prepare_key(dataset: Dataset, cfg: FinetuneConfig, base: ResolvedBase) -> str:
    return keys.cache_key(keys.PREPARE_VERSION, cfg.task.value, dataset.fingerprint, cfg.data.output_settings(),
                          cfg.model.max_length, base.identity)


def split_rows(frame, cfg: FinetuneConfig):
    """The split of each raw row under this config: the objective derives inputs and strata, then the seeded draw."""
    return assign_splits(objectives.get(cfg.task.value).derive(frame, cfg), cfg.data)


def prepare_splits(storage: Storage, dataset: Dataset, cfg: FinetuneConfig) -> Prepared:
    """Split + fit + encode once per (dataset, objective, settings); returns where the splits are."""
    objective = objectives.get(cfg.task.value)
    base = resolve_base(cfg.model, cfg.storage_root())
    check_max_length(base, cfg.model.max_length)  # a config error before any work, never retried
    prefix = keys.prepared_prefix(prepare_key(dataset, cfg, base))
    if cfg.cache and storage.exists(keys.meta(prefix)):
        return Prepared(**storage.read_json(keys.meta(prefix)), reused=True)
    with snapshot_passes(storage, dataset, cfg) as passes:
        codes, fit_rows = passes.split_and_fit()
        fitted = objective.fit(fit_rows[codes == TRAIN], fit_rows, cfg)
        del fit_rows
        encoded = passes.encoded(codes, fitted, base.folder)
        return encode_splits(storage, prefix, dataset, encoded, codes, fitted, cfg)


def prepare_rows(storage: Storage, dataset: Dataset, cfg: FinetuneConfig, fitted: dict, model_folder: Path,
                 model_fingerprint: str, split: str = "test") -> Prepared:
    """Every row of a dataset as one split, encoded with values fitted before (a registered version's labels,
    target scaling) and that model's tokenizer: no split drawn, nothing refitted. Stored once per
    (dataset, settings, fitted values, model)."""
    objective = objectives.get(cfg.task.value)
    prefix = keys.prepared_prefix(keys.cache_key(keys.PREPARE_VERSION, objective.name, dataset.fingerprint,
                                                 cfg.data.output_settings(), cfg.model.max_length, model_fingerprint,
                                                 fitted, split))
    if cfg.cache and storage.exists(keys.meta(prefix)):
        return Prepared(**storage.read_json(keys.meta(prefix)), reused=True)
    with snapshot_passes(storage, dataset, cfg) as passes:
        codes = np.full(passes.rows(), SPLITS.index(split), dtype=np.int8)
        encoded = passes.encoded(codes, fitted, model_folder)
        return encode_splits(storage, prefix, dataset, encoded, codes, fitted, cfg)


@contextmanager
def snapshot_passes(storage: Storage, dataset: Dataset, cfg: FinetuneConfig):
    """The passes over the snapshot of ``data.engine``: in this process (``LocalPasses``), or on a Ray cluster's
    workers (``prepare_on_ray.RayPasses``, connected for the duration)."""
    if cfg.data.engine == DataEngine.ray:
        with on_ray.ray_data(cfg):
            yield on_ray.RayPasses(storage, dataset, read_columns(cfg), cfg)
        return
    yield LocalPasses(storage, dataset, cfg)


class LocalPasses:
    """The snapshot read batch by batch in this process: its rows, the first pass, the encoded batches."""

    def __init__(self, storage: Storage, dataset: Dataset, cfg: FinetuneConfig):
        self.cfg = cfg
        self.path = snapshot_file(storage, dataset)  # one listing of the snapshot's prefix (S3), not one per use
        self.batches = snapshot_batches(storage, dataset, cfg, self.path)

    def rows(self) -> int:
        return snapshot_rows(self.path)

    def split_and_fit(self) -> tuple[np.ndarray, pd.DataFrame]:
        return split_and_fit_rows(self.batches, self.cfg)

    def encoded(self, codes: np.ndarray, fitted: dict, tokenizer_folder: Path) -> Iterator[dict]:
        return encoded_batches(self.batches, codes, fitted, tokenizer_folder, self.cfg)


def read_columns(cfg: FinetuneConfig) -> list[str]:
    """The snapshot's columns the objective reads (and the split column)."""
    columns = objectives.get(cfg.task.value).input_columns(cfg) + ([cfg.data.split_column]
                                                                    if cfg.data.split_column else [])
    return list(dict.fromkeys(columns))


def snapshot_batches(storage: Storage, dataset: Dataset, cfg: FinetuneConfig, path: Path | None = None) -> Batches:
    """The snapshot's columns the objective reads, ``data.batch_rows`` rows at a time (``path``: the snapshot's
    local file when the caller has it already)."""
    path = path or snapshot_file(storage, dataset)
    return lambda: parquet_batches(path, cfg.data.batch_rows, read_columns(cfg))


def split_and_fit_rows(batches: Batches, cfg: FinetuneConfig) -> tuple[np.ndarray, pd.DataFrame]:
    """First pass: the split code of every row, and the derived columns ``fit`` reads, of every row."""
    objective = objectives.get(cfg.task.value)
    tally, kept = SplitTally(cfg.data), SharedValues(objective.fit_columns(cfg))
    for batch in batches():
        derived = objective.derive(batch, cfg)
        tally.add(derived)
        kept.add(derived)
    return tally.splits(), kept.frame()


def encode_splits(storage: Storage, prefix: str, dataset: Dataset, encoded: Iterable[dict], codes: np.ndarray,
                  fitted: dict, cfg: FinetuneConfig) -> Prepared:
    """Write each batch's encoded splits (``encoded``, in row order; ``codes``: a split code per row) into the
    split folders; store them and their meta under ``prefix``."""
    from datasets import load_from_disk

    objective = objectives.get(cfg.task.value)
    with tempfile.TemporaryDirectory() as tmp:
        writers = {split: SplitWriter(Path(tmp) / split) for split in SPLITS}
        for splits in encoded:
            for split, rows in splits.items():
                writers[split].write(rows)
        written = [split for split, writer in writers.items() if writer.close()]
        stats = objective.encoded_stats({split: load_from_disk(str(Path(tmp) / split)) for split in written}, cfg)
        storage.put_dir(Path(tmp), prefix)
    counts = {split: int(np.count_nonzero(codes == i)) for i, split in enumerate(SPLITS)}
    prepared = Prepared(key=prefix, uri=storage.uri(prefix), objective=objective.name,
                        dataset_fingerprint=dataset.fingerprint, counts=counts, fitted=fitted, stats=stats)
    storage.write_json(keys.meta(prefix), prepared.stored())
    return prepared


def encoding_processes(cfg: FinetuneConfig, rows: int) -> int:
    """``data.num_proc``, or unset: one per CPU core for PROCESSES_FROM_ROWS rows or more (at most MAX_PROCESSES),
    never more than there are batches."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = cfg.data.num_proc or (min(cores, MAX_PROCESSES) if rows >= PROCESSES_FROM_ROWS else 1)
    return max(1, min(wanted, -(-rows // cfg.data.batch_rows)))


def encoded_batches(batches: Batches, codes: np.ndarray, fitted: dict, tokenizer_folder: Path,
                    cfg: FinetuneConfig) -> Iterator[dict]:
    """Each batch's encoded splits, in row order: in this process, or shared with encoding processes (a few
    batches in flight per process, so memory still follows the batch size)."""
    processes = encoding_processes(cfg, len(codes))
    with quiet_datasets():
        encode = BatchEncoder(cfg, tokenizer_folder, fitted)
        if processes == 1:
            for batch in batches():
                yield encode(batch, batch_codes(codes, batch))
            return
        yield from _with_workers(batches, codes, encode, processes)


class _Done:
    """A batch this process encoded itself, waiting for its turn (quacks like a finished Future)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _with_workers(batches: Batches, codes: np.ndarray, encode: BatchEncoder, processes: int) -> Iterator[dict]:
    """This process and ``processes - 1`` forked workers encode every ``processes``-th batch each."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: workers start in milliseconds, share the loaded libraries and tokenizer with this process and need
    # no importable __main__; they fork at the first submit, before this process has used the tokenizer (whose
    # thread pool must not be forked). spawn where fork is missing.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pending: deque = deque()
    with ProcessPoolExecutor(processes - 1, mp_context=multiprocessing.get_context(method),
                             initializer=_start_worker, initargs=(encode,)) as pool:
        for i, batch in enumerate(batches()):
            batch_split = batch_codes(codes, batch)
            if i % processes == processes - 1:  # this process's turn: the workers go on meanwhile
                pending.append(_Done(encode(batch, batch_split)))
            else:
                pending.append(pool.submit(_encode_in_worker, batch, batch_split))
            while len(pending) >= 2 * processes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


_WORKER_ENCODER: BatchEncoder | None = None


def _start_worker(encode: BatchEncoder) -> None:
    global _WORKER_ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per process: the processes are the parallelism
    _WORKER_ENCODER = encode
    import datasets

    datasets.disable_progress_bars()


def _encode_in_worker(batch: pd.DataFrame, codes: np.ndarray) -> dict:
    return _WORKER_ENCODER(batch, codes)


def batch_codes(codes: np.ndarray, batch: pd.DataFrame) -> np.ndarray:
    """The split codes of a batch's rows (its index: their positions)."""
    start = int(batch.index[0]) if len(batch) else 0
    return codes[start:start + len(batch)]
