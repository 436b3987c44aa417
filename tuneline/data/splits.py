"""Deterministic, stratified, duplicate-aware train/validation/test assignment.

Reads what an objective has derived (``_input``: each row's model input as one string; ``_stratum``:
what to stratify on, a category or a number binned into quantiles over all rows) and the data config;
returns one split per row. Rows with identical input always land in the same split, so a duplicated
example can never leak from training into evaluation.

The assignment needs only a 64-bit hash of each row's input and its stratum, so ``SplitTally`` keeps
those (about 14 bytes a row) batch by batch and never the text: the validate and prepare stages split
any number of rows this way. ``assign_splits`` does the same on one in-memory frame; both give the
same splits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = 0, 1, 2  # split codes: positions in SPLITS; -1: no known split (a split column's typo)
INPUT = "_input"  # derived column: a row's model input as one string
STRATUM = "_stratum"  # derived column: the stratum of the seeded split (numbers: binned by TARGET_BINS quantiles)


def text_input(frame: pd.DataFrame, text_column: str, pair_column: str | None = None) -> pd.Series:
    """The model input of each row as one string (text, plus the pair text if any)."""
    key = frame[text_column].astype(str)
    if pair_column:
        key = key + "\x1f" + frame[pair_column].astype(str)
    return key


def input_hashes(values: pd.Series) -> np.ndarray:
    """A 64-bit hash per value (pandas' SipHash with its fixed key: the same string, the same hash, in any
    process). Only equality matters: the split order comes from the rows. A collision (among 10M distinct inputs,
    a chance of about 3 in a million) would count two inputs as one duplicate and put them in one split."""
    return pd.util.hash_array(np.asarray(values.to_numpy(dtype=object)), categorize=False)


TARGET_BINS = 5  # regression strata: quantile bins of the numeric target


def target_strata(values: pd.Series) -> pd.Series:
    """A numeric target's quantile bin per row (as a string stratum; NaN where the value is not a number)."""
    codes, names = _binned(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float))
    names = [np.nan if name == "<NA>" else name for name in names]
    return pd.Series(np.asarray(names, dtype=object)[codes], index=values.index).astype("str")


def _binned(numbers: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(code per row, stratum names): quantile bins "0".."4" over every row, "<NA>" for a missing number, or
    "all" when there are fewer than two numbers per bin."""
    if np.count_nonzero(~np.isnan(numbers)) < 2 * TARGET_BINS:
        return np.zeros(len(numbers), dtype=np.int32), ["all"]
    bins = pd.qcut(pd.Series(numbers), TARGET_BINS, labels=False, duplicates="drop").to_numpy(dtype=float)
    found = int(np.nanmax(bins)) + 1
    return np.where(np.isnan(bins), found, bins).astype(np.int32), [str(i) for i in range(found)] + ["<NA>"]


def given_split_codes(values: pd.Series) -> np.ndarray:
    """Split codes of a split column (trimmed, lower-cased); -1 for anything but train / validation / test."""
    names = values.astype(str).str.strip().str.lower()
    return pd.Categorical(names, categories=list(SPLITS)).codes.astype(np.int8)


class SplitTally:
    """What the split assignment needs of every row, gathered batch by batch: the input hash, the stratum and,
    with ``data.split_column``, the given split. ``add`` each derived batch in row order, then ``splits()``.

    Memory: 8 bytes a row for the hash until the rows are grouped (``groups()``), then 4 for the group; 4 or 8
    for the stratum, 1 for the null flag; grouping sorts the hashes once (about 40 bytes a row, briefly)."""

    def __init__(self, data):
        self.data = data
        self._hashes: list[np.ndarray] = []
        self._strata: list[np.ndarray] = []
        self._given: list[np.ndarray] = []
        self._nulls: list[np.ndarray] = []
        self._names: dict[str, int] = {}  # categorical strata: name -> code
        self._numeric: bool | None = None  # numbers (binned at the end) or categories
        self._groups: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, frame: pd.DataFrame) -> None:
        """One derived batch (INPUT and STRATUM columns; the split column when configured)."""
        self.add_share(tally_share(frame, self.data))

    def add_share(self, share: dict) -> None:
        """What ``tally_share`` kept of the next derived batch (computed here, or where the batch was read)."""
        if self._groups is not None:
            raise RuntimeError("rows added after they were grouped")
        self._hashes.append(share["hashes"])
        self._nulls.append(share["nulls"])
        if self.data.split_column:
            self._given.append(share["given"])
            return
        strata = share["strata"]
        if self._numeric is None:
            self._numeric = pd.api.types.is_numeric_dtype(strata.dtype)
        if self._numeric:
            self._strata.append(pd.to_numeric(strata, errors="coerce").to_numpy(dtype=float))
        else:
            codes, uniques = pd.factorize(strata.astype(str), use_na_sentinel=False)
            lookup = np.array([self._names.setdefault(str(name), len(self._names)) for name in uniques], np.int32)
            self._strata.append(lookup[codes] if len(codes) else np.zeros(0, np.int32))

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """(group of each row, first row of each group): rows with equal inputs form a group, numbered in order of
        their first row. The hashes are dropped once grouped."""
        if self._groups is None:
            hashes, self._hashes = _joined(self._hashes, np.uint64), []
            self._groups = input_groups(hashes)
        return self._groups

    def nulls(self) -> np.ndarray:
        """Whether each row's input is null (GX leaves nulls out of the share of unique values)."""
        self._nulls = [_joined(self._nulls, bool)]
        return self._nulls[0]

    def distinct_inputs(self) -> int:
        """How many different non-null inputs there are."""
        group, first = self.groups()
        present = np.zeros(len(first), dtype=bool)
        present[group[~self.nulls()]] = True
        return int(np.count_nonzero(present))

    def splits(self) -> np.ndarray:
        """The split code (TRAIN, VALIDATION, TEST; -1 for a split column's unknown value) of every row so far."""
        if self.data.split_column:
            self._given = [_joined(self._given, np.int8)]
            return self._given[0]
        if self._numeric:
            codes, names = _binned(_joined(self._strata, float))
        else:
            codes, names = _joined(self._strata, np.int32), sorted(self._names, key=self._names.get)
        group, first = self.groups()
        return draw_splits(group, first, codes, names, self.data)


def tally_share(frame: pd.DataFrame, data) -> dict:
    """What ``SplitTally`` keeps of one derived batch: each row's input hash and null flag, and its given split
    code (with ``data.split_column``) or its stratum (a Series: numbers or names)."""
    share = {"hashes": input_hashes(frame[INPUT]), "nulls": frame[INPUT].isna().to_numpy()}
    if data.split_column:
        share["given"] = given_split_codes(frame[data.split_column])
    else:
        share["strata"] = frame[STRATUM].reset_index(drop=True)
    return share


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def input_groups(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row as int32, first row of each group): equal hashes, one group; groups numbered in order
    of their first row. One stable sort of the hashes."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    starts = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    del ordered
    first = order[starts]  # the stable sort puts each group's first row first
    by_hash = np.empty(len(hashes), dtype=np.int32)  # each row's group, numbered in hash order
    by_hash[order] = np.cumsum(starts, dtype=np.int32) - 1
    del order, starts
    appearance = np.argsort(first, kind="stable")
    rank = np.empty(len(first), dtype=np.int32)
    rank[appearance] = np.arange(len(first), dtype=np.int32)
    return rank[by_hash], first[appearance]


def draw_splits(group: np.ndarray, first: np.ndarray, strata: np.ndarray, names: list[str], data) -> np.ndarray:
    """Seeded, stratified draw of whole input groups: a split code per row.

    ``group``: each row's input group, numbered in order of the group's first row (``first``); a group's
    stratum is its first row's. Per stratum (by name, sorted), the groups are shuffled with one generator
    seeded by ``data.seed``: the first ``test_fraction`` go to test, the next ``validation_fraction`` to
    validation, the rest to train.
    """
    group_strata = strata[first]
    by_stratum = np.argsort(group_strata, kind="stable")  # groups of each stratum, still in appearance order
    bounds = np.searchsorted(group_strata[by_stratum], np.arange(len(names) + 1))
    rng = np.random.default_rng(data.seed)
    group_split = np.full(len(first), TRAIN, dtype=np.int8)
    for code in sorted(range(len(names)), key=lambda c: names[c]):
        members = by_stratum[bounds[code]:bounds[code + 1]]
        if not len(members):
            continue
        members = members[rng.permutation(len(members))]
        n_test = _share(len(members), data.test_fraction)
        n_val = _share(len(members) - n_test, data.validation_fraction / (1 - data.test_fraction))
        group_split[members[:n_test]] = TEST
        group_split[members[n_test:n_test + n_val]] = VALIDATION
    return group_split[group]


def assign_splits(frame: pd.DataFrame, data) -> pd.Series:
    """Split name per row: ``data.split_column`` if configured, else a seeded draw stratified by STRATUM.

    ``frame`` holds the INPUT and STRATUM columns an objective derived; ``data`` is the config's
    data section (split_column, seed, validation_fraction, test_fraction).
    """
    if data.split_column:
        return frame[data.split_column].astype(str).str.strip().str.lower()
    tally = SplitTally(data)
    tally.add(frame)
    return split_names(tally.splits(), frame.index)


def split_names(codes: np.ndarray, index=None) -> pd.Series:
    """Split codes as names (None for -1)."""
    names = np.array([*SPLITS, None], dtype=object)
    return pd.Series(names[codes], index=index, name="split")


def _share(count: int, fraction: float) -> int:
    """Rows of a class for a held-out split: rounded, at least one when the class can spare it."""
    if fraction <= 0 or count < 3:
        return 0
    return max(1, int(round(count * fraction)))
