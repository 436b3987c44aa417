"""What both prepare engines do to one batch of rows (``tuneline.stages.prepare``: this process and its encoding
processes; ``tuneline.stages.prepare_on_ray``: Ray workers): keep the few values ``fit`` reads of every row
(``SharedValues``), encode a batch split by split (``BatchEncoder``). Reads and writes nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline import objectives
from tuneline.config import FinetuneConfig
from tuneline.data.splits import SPLITS


class SharedValues:
    """Some columns of every row, each distinct value stored once: a row costs a 4-byte code per column (numbers
    are kept as they are). ``frame()`` gives the columns back, the cells referring to the shared values."""

    def __init__(self, columns: list[str]):
        self.columns = columns
        self._parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}  # codes, or the numbers themselves
        self._values: dict[str, dict] = {c: {} for c in columns}  # hashable key -> (code, first value)
        self._numeric: dict[str, bool] = {}
        self.rows = 0

    def add(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        for column in self.columns:
            values = frame[column]
            numeric = self._numeric.setdefault(column, pd.api.types.is_numeric_dtype(values.dtype))
            if numeric:
                self._parts[column].append(values.to_numpy(dtype=float))
                continue
            seen = self._values[column]
            if values.dtype == object:  # lists (tags), or mixed cells: one key per cell
                codes = np.fromiter((seen.setdefault(_hashable(v), (len(seen), v))[0] for v in values),
                                    dtype=np.int32, count=len(values))
            else:  # strings: factorize the batch, then code its few distinct values
                local, uniques = pd.factorize(values, use_na_sentinel=False)
                lookup = np.array([seen.setdefault(_hashable(v), (len(seen), v))[0] for v in uniques], np.int32)
                codes = lookup[local] if len(local) else np.zeros(0, np.int32)
            self._parts[column].append(codes)

    def frame(self) -> pd.DataFrame:
        columns = {}
        for column in self.columns:
            parts = self._parts[column]
            if self._numeric.get(column):
                columns[column] = np.concatenate(parts)
                continue
            codes = np.concatenate(parts) if parts else np.zeros(0, np.int32)
            shared = np.empty(len(self._values[column]), dtype=object)
            for code, value in self._values[column].values():
                shared[code] = value
            columns[column] = shared[codes]
        return pd.DataFrame(columns, index=pd.RangeIndex(self.rows))


def _hashable(value):
    """A dict key for a cell: lists (token tags, turns) by their items, every missing value alike."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ("list", tuple(_hashable(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _hashable(v)) for k, v in value.items())))
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


class BatchEncoder:
    """Derives and encodes one batch of rows, split by split (in this process or an encoding process)."""

    def __init__(self, cfg: FinetuneConfig, tokenizer_folder: Path, fitted: dict):
        self.cfg, self.fitted = cfg, fitted
        self.objective = objectives.get(cfg.task.value)
        self.tokenizer = self.objective.tokenizer(tokenizer_folder)

    def __call__(self, batch: pd.DataFrame, codes: np.ndarray) -> dict:
        """{split: ``datasets.Dataset``} of the batch's rows in each split that has any."""
        derived = self.objective.derive(batch, self.cfg)
        return {split: self.objective.encode(derived[codes == i], self.cfg, self.tokenizer, self.fitted)
                for i, split in enumerate(SPLITS) if np.any(codes == i)}


@contextmanager
def quiet_datasets():
    """No progress bar per encoded batch (``datasets.map`` draws one per call)."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()
