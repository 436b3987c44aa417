"""Deterministic, stratified, duplicate-aware train/validation/test assignment.

Reads a DataFrame that an objective has derived (``_input``: each row's model input as one
string; ``_stratum``: what to stratify on) and the data config; returns one split name per row.
Rows with identical input always land in the same split, so a duplicated example can never
leak from training into evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")
INPUT = "_input"  # derived column: a row's model input as one string
STRATUM = "_stratum"  # derived column: the stratum of the seeded split


def text_input(frame: pd.DataFrame, text_column: str, pair_column: str | None = None) -> pd.Series:
    """The model input of each row as one string (text, plus the pair text if any)."""
    key = frame[text_column].astype(str)
    if pair_column:
        key = key + "\x1f" + frame[pair_column].astype(str)
    return key


TARGET_BINS = 5  # regression strata: quantile bins of the numeric target


def target_strata(values: pd.Series) -> pd.Series:
    """A numeric target's quantile bin per row (as a string stratum); unparseable values share one stratum."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() < 2 * TARGET_BINS:
        return pd.Series("all", index=values.index)
    bins = pd.qcut(numbers, TARGET_BINS, labels=False, duplicates="drop")
    return bins.astype("Int64").astype(str)


def assign_splits(frame: pd.DataFrame, data) -> pd.Series:
    """Split name per row: ``data.split_column`` if configured, else a seeded draw stratified by STRATUM.

    ``frame`` holds the INPUT and STRATUM columns an objective derived; ``data`` is the config's
    data section (split_column, seed, validation_fraction, test_fraction).
    """
    if data.split_column:
        return frame[data.split_column].astype(str).str.strip().str.lower()
    keys = frame[INPUT]
    labels = frame[STRATUM].astype(str)
    groups = pd.DataFrame({"key": keys, "label": labels}).drop_duplicates("key")
    rng = np.random.default_rng(data.seed)
    assignment: dict[str, str] = {}
    for label in sorted(groups["label"].unique()):
        members = groups.loc[groups["label"] == label, "key"].to_numpy()
        members = members[rng.permutation(len(members))]
        n_test = _share(len(members), data.test_fraction)
        n_val = _share(len(members) - n_test, data.validation_fraction / (1 - data.test_fraction))
        for i, key in enumerate(members):
            assignment[key] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    return keys.map(assignment).rename("split")


def _share(count: int, fraction: float) -> int:
    """Rows of a class for a held-out split: rounded, at least one when the class can spare it."""
    if fraction <= 0 or count < 3:
        return 0
    return max(1, int(round(count * fraction)))
