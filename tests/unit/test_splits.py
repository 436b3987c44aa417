"""Splits (the objective's derived inputs and strata, then assign_splits): deterministic, stratified,
duplicate-aware; a predefined split column wins."""

from __future__ import annotations

import pandas as pd
import pytest

from tuneline.config import FinetuneConfig, parse_config
from tuneline.data.splits import SPLITS
from tuneline.stages.prepare import split_rows


def data_config(**overrides) -> FinetuneConfig:
    return parse_config({"name": "m", "data": {"source": "unused.csv", "validation_fraction": 0.1,
                                                "test_fraction": 0.2, **overrides}})


def assign_splits(frame: pd.DataFrame, cfg: FinetuneConfig) -> pd.Series:
    return split_rows(frame, cfg)


def frame_of(counts: dict[str, int], repeats: int = 1) -> pd.DataFrame:
    """``counts[label]`` distinct texts per label, each text appearing ``repeats`` times."""
    rows = [{"text": f"{label} review number {i}", "label": label}
            for label, n in counts.items() for i in range(n) for _ in range(repeats)]
    return pd.DataFrame(rows)


def test_only_known_split_names_are_assigned_and_every_row_gets_one():
    frame = frame_of({"negative": 50, "positive": 50})
    splits = assign_splits(frame, data_config())
    assert len(splits) == len(frame)
    assert splits.notna().all()
    assert set(splits) == set(SPLITS)


def test_same_seed_gives_the_same_assignment():
    frame = frame_of({"negative": 60, "positive": 40})
    first = assign_splits(frame, data_config(seed=7))
    again = assign_splits(frame.copy(), data_config(seed=7))
    pd.testing.assert_series_equal(first, again)


def test_different_seeds_give_different_assignments():
    frame = frame_of({"negative": 60, "positive": 40})
    assert not assign_splits(frame, data_config(seed=1)).equals(assign_splits(frame, data_config(seed=2)))


def test_every_class_with_enough_rows_appears_in_every_split():
    frame = frame_of({"negative": 40, "positive": 25, "neutral": 10})
    splits = assign_splits(frame, data_config())
    for label in frame["label"].unique():
        present = set(splits[frame["label"] == label])
        assert present == set(SPLITS), label


def test_a_class_too_small_to_split_stays_in_training():
    frame = frame_of({"negative": 40, "positive": 40, "rare": 2})
    splits = assign_splits(frame, data_config())
    assert set(splits[frame["label"] == "rare"]) == {"train"}


def test_identical_texts_always_share_a_split():
    frame = frame_of({"negative": 30, "positive": 30}, repeats=3).sample(frac=1.0, random_state=0)
    splits = assign_splits(frame, data_config())
    per_text = splits.groupby(frame["text"]).nunique()
    assert (per_text == 1).all()
    assert set(splits) == set(SPLITS)  # the groups themselves are still spread out


def test_identical_texts_with_different_labels_share_a_split():
    frame = frame_of({"negative": 30, "positive": 30})
    clash = pd.DataFrame([{"text": "it is fine i guess", "label": label} for label in ("negative", "positive") * 3])
    frame = pd.concat([frame, clash], ignore_index=True)
    splits = assign_splits(frame, data_config())
    assert splits[frame["text"] == "it is fine i guess"].nunique() == 1


def test_text_pairs_are_the_unit_of_deduplication():
    frame = pd.DataFrame({
        "premise": ["same premise"] * 40,
        "hypothesis": [f"hypothesis {i}" for i in range(40)],
        "label": ["entails", "contradicts"] * 20,
    })
    splits = assign_splits(frame, data_config(text_column="premise", text_pair_column="hypothesis"))
    assert set(splits) == set(SPLITS)  # one shared premise does not force every row together


@pytest.mark.parametrize("validation_fraction,test_fraction", [(0.1, 0.2), (0.15, 0.15), (0.0, 0.3)])
def test_fractions_are_roughly_respected(validation_fraction, test_fraction):
    frame = frame_of({"negative": 600, "positive": 400})
    splits = assign_splits(frame, data_config(validation_fraction=validation_fraction, test_fraction=test_fraction))
    shares = splits.value_counts(normalize=True)
    assert shares.get("test", 0.0) == pytest.approx(test_fraction, abs=0.02)
    assert shares.get("validation", 0.0) == pytest.approx(validation_fraction, abs=0.02)
    assert shares.get("train", 0.0) == pytest.approx(1 - validation_fraction - test_fraction, abs=0.02)


def test_class_balance_is_kept_in_each_split():
    frame = frame_of({"negative": 600, "positive": 200})
    splits = assign_splits(frame, data_config())
    overall = (frame["label"] == "positive").mean()
    for split in SPLITS:
        share = (frame.loc[splits == split, "label"] == "positive").mean()
        assert share == pytest.approx(overall, abs=0.03), split


def test_result_is_aligned_with_the_frame_index():
    frame = frame_of({"negative": 50, "positive": 50}).iloc[::2]  # a filtered frame: gaps in the index
    splits = assign_splits(frame, data_config())
    assert splits.index.equals(frame.index)


def test_split_column_is_honoured_and_normalised():
    given = ["train", " Train ", "TEST", "validation", "test", "train"]
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(len(given))], "label": ["a", "b"] * 3, "fold": given})
    splits = assign_splits(frame, data_config(split_column="fold"))
    assert splits.tolist() == [s.strip().lower() for s in given]


def test_split_column_ignores_the_seed():
    frame = frame_of({"negative": 20, "positive": 20})
    frame["fold"] = ["train", "validation", "test", "train"] * 10
    a = assign_splits(frame, data_config(split_column="fold", seed=1))
    b = assign_splits(frame, data_config(split_column="fold", seed=2))
    assert a.tolist() == b.tolist() == frame["fold"].tolist()
