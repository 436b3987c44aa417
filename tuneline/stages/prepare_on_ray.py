"""Prepare on a Ray cluster (``data.engine: ray``): the local engine's two passes over the snapshot, each batch
read and worked on by the cluster's workers with Ray Data, the splits written by this process as the local engine
writes them, byte for byte.

Reads the snapshot's Parquet file where the workers can reach it (Ray Data's distributed read: its path under a
local storage root on a one-machine cluster, its ``s3://`` URI across machines; the workers take S3 credentials
from the cluster, never from the flow) and the cluster's address (``training.ray.address``, else ``$RAY_ADDRESS``:
the cluster the training uses). Writes nothing itself: ``prepare.encode_splits`` writes what ``encoded_batches``
yields.

- First pass (``map_batches``, Ray tasks): the objective derives each batch; what comes back to this process is
  what the split draw and ``fit`` read (``tally_share``: a 64-bit hash and a stratum per row, and the objective's
  ``fit_columns``), in row order (``preserve_order``): a few bytes a row, never the text.
- This process draws the splits and fits, as the local engine does (``SplitTally``, ``objective.fit``).
- Second pass (``map_batches``, Ray actors holding the tokenizer, sent to them from here: the workers need no
  model files): the snapshot zipped with each row's split code, each batch encoded by the local engine's
  ``BatchEncoder``. The encoded batches come back in row order and ``SplitWriter`` writes them, whose files depend
  on the rows alone: the prepared folders equal the local engine's byte for byte
  (tests/integration/test_ray_engine.py).

An input error raised in a worker (``TunelineError``: a bad row, a value the objective refuses) comes back as the
batch's result and is raised here as itself, not retried (Ray would pass on only its text); a cluster that cannot be reached is a ``ConnectionError``, retried by the task.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline import objectives
from tuneline.config import FinetuneConfig
from tuneline.data.batches import FrameReading
from tuneline.data.splits import SPLITS, SplitTally, tally_share
from tuneline.errors import TunelineError, redact_urls
from tuneline.results import Dataset
from tuneline.stages.encoding import BatchEncoder, SharedValues, quiet_datasets
from tuneline.storage import Storage
from tuneline.storage.local import LocalStorage
from tuneline.training.ray_launch import check_reachable, cluster_address, require_ray

SPLIT_CODE = "__tuneline_split__"  # the column that carries each row's split code into the second pass
PAYLOAD = "payload"  # what a batch sends back: one pickled value per batch (or per encoded split)


_SESSION = threading.Lock()
_USERS = [0]  # prepare stages of this process using the session tuneline opened (flows may run side by side)


@contextmanager
def ray_data(cfg: FinetuneConfig):
    """Connected to the cluster, Ray Data set to keep the rows in order and draw no progress bars; the ``ray``
    module. The session is opened by the first user in this process and closed by the last one (one opened by
    someone else is used as it is and left open)."""
    require_ray("data.engine: ray")
    address = cluster_address(cfg.training, "data.engine: ray")
    import ray
    import ray.data

    with _SESSION:
        if not _USERS[0] and not ray.is_initialized():
            check_reachable(address)
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
            print(f"preparing on the Ray cluster at {redact_urls(address)}", flush=True)
            _USERS[0] = 1
        elif _USERS[0]:
            _USERS[0] += 1
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no progress lines every few seconds
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order, context.enable_progress_bars = True, False
    try:
        yield ray
    finally:
        with _SESSION:
            if _USERS[0]:
                _USERS[0] -= 1
                if not _USERS[0]:
                    ray.shutdown()


def snapshot_rows_on_ray(storage: Storage, dataset: Dataset, columns: list[str]):
    """The snapshot's ``columns`` as a Ray Dataset (read by the workers) and how its batches become DataFrames."""
    import pyarrow.parquet as pq
    import ray.data

    key = f"{dataset.key}/data.parquet"
    if isinstance(storage, LocalStorage):
        source, filesystem = str(storage.path(key)), None
    else:
        source, filesystem = storage.uri(key).removeprefix("s3://"), storage.arrow_filesystem()
    with (filesystem.open_input_file(source) if filesystem else open(source, "rb")) as handle:
        reading = FrameReading.of(pq.ParquetFile(handle))  # the footer only
    return ray.data.read_parquet(source, columns=columns, filesystem=filesystem), reading


class RayPasses:
    """The snapshot read by the cluster's workers (inside ``ray_data``): its rows, the first pass, the encoded
    batches; what ``prepare.LocalPasses`` gives in this process."""

    def __init__(self, storage: Storage, dataset: Dataset, columns: list[str], cfg: FinetuneConfig):
        self.cfg = cfg
        self.dataset, self.reading = snapshot_rows_on_ray(storage, dataset, columns)

    def rows(self) -> int:
        return self.dataset.count()  # from the file's footer

    def split_and_fit(self) -> tuple[np.ndarray, pd.DataFrame]:
        return split_and_fit_rows(self.dataset, self.reading, self.cfg)

    def encoded(self, codes: np.ndarray, fitted: dict, tokenizer_folder: Path) -> Iterator[dict]:
        return encoded_batches(self.dataset, self.reading, codes, fitted, tokenizer_folder, self.cfg)


def split_and_fit_rows(rows, reading: FrameReading, cfg: FinetuneConfig) -> tuple[np.ndarray, pd.DataFrame]:
    """First pass: the split code of every row, and the derived columns ``fit`` reads, of every row."""
    objective = objectives.get(cfg.task.value)
    tally, kept = SplitTally(cfg.data), SharedValues(objective.fit_columns(cfg))
    shares = rows.map_batches(split_share, batch_format="pyarrow", batch_size=cfg.data.batch_rows,
                              fn_kwargs={"reading": reading, "cfg": cfg})
    for share, fit in payloads(shares):
        tally.add_share(share)
        kept.add(fit)
    return tally.splits(), kept.frame()


def split_share(table, reading: FrameReading, cfg: FinetuneConfig):
    """On a worker: what the split draw and ``fit`` read of one batch."""
    def share():
        objective = objectives.get(cfg.task.value)
        derived = objective.derive(reading.frame(table), cfg)
        return tally_share(derived, cfg.data), derived[objective.fit_columns(cfg)].reset_index(drop=True)

    return payload(share)


def encoded_batches(rows, reading: FrameReading, codes: np.ndarray, fitted: dict, tokenizer_folder: Path,
                    cfg: FinetuneConfig) -> Iterator[dict]:
    """Second pass: each batch's encoded splits ({split: ``datasets.Dataset``}), in row order."""
    import pyarrow as pa
    import ray.data

    split_codes = ray.data.from_arrow(pa.table({SPLIT_CODE: codes}))
    with quiet_datasets():
        encoder = BatchEncoder(cfg, tokenizer_folder, fitted)
    workers = cfg.data.num_proc or max(1, int(ray.cluster_resources().get("CPU", 1)))
    encoded = rows.zip(split_codes).map_batches(
        EncodeOnWorker, batch_format="pyarrow", batch_size=cfg.data.batch_rows,
        fn_constructor_args=(encoder, reading), concurrency=(1, workers))
    yield from payloads(encoded)


class EncodeOnWorker:
    """A Ray actor that encodes batches with the driver's ``BatchEncoder`` (its tokenizer loaded once, there)."""

    def __init__(self, encoder: BatchEncoder, reading: FrameReading):
        import datasets

        datasets.disable_progress_bars()
        self.encoder, self.reading = encoder, reading

    def __call__(self, table):
        codes = table.column(SPLIT_CODE).to_numpy()
        return payload(lambda: self.encoder(self.reading.frame(table.drop_columns([SPLIT_CODE])), codes))


class InputErrorInWorker:
    """An input error a worker raised, sent back as a batch's payload (Ray would send only its text)."""

    def __init__(self, error: TunelineError):
        self.error = error


def payload(work: Callable[[], object]):
    """On a worker: one batch's work, its result pickled in a one-row table; an input error is the result."""
    import pyarrow as pa

    try:
        value = work()
    except TunelineError as err:
        value = InputErrorInWorker(err)
    return pa.table({PAYLOAD: pa.array([pickle.dumps(value)], pa.binary())})


def payloads(batches) -> Iterator:
    """The payloads of a mapped Ray Dataset, in row order; an input error from a worker is raised here."""
    for table in batches.iter_batches(batch_format="pyarrow", batch_size=None):
        for value in table.column(PAYLOAD).to_pylist():
            value = pickle.loads(value)
            if isinstance(value, InputErrorInWorker):
                raise value.error
            yield value
