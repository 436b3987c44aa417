"""Length-grouped batches: little padding, every row once, and no stretch of an epoch that sees one class.

The last property is the one HF's group_by_length sampler lacks (it serves each mega-batch long to
short), which collapsed SMS spam to the majority class; a test below shows that sampler failing it.
"""

from __future__ import annotations

import numpy as np
import pytest

from tuneline.training.batching import LengthGroupedSampler, grouped_order, padding_efficiency


def long_rows_are_one_class(count: int = 1600, seed: int = 0):
    """(lengths, labels): class 1 (13%) is long, class 0 mostly short, as in SMS spam."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(count) < 0.13).astype(int)
    lengths = np.where(labels == 1, rng.integers(30, 45, count), rng.integers(4, 40, count))
    return lengths, labels


def class_share_by_quarter(order: list[int], labels: np.ndarray) -> list[float]:
    quarters = np.array_split(np.asarray(order), 4)
    return [float(labels[q].mean()) for q in quarters]


def test_every_row_is_served_once_and_padding_shrinks():
    lengths, _ = long_rows_are_one_class()
    order = grouped_order(lengths, None, 16, seed=1)
    assert sorted(order) == list(range(len(lengths)))
    random_order = list(np.random.default_rng(1).permutation(len(lengths)))
    assert padding_efficiency(lengths, random_order, 16) < 0.7
    assert padding_efficiency(lengths, order, 16) > 0.9


def test_each_quarter_of_an_epoch_sees_the_class_mix():
    lengths, labels = long_rows_are_one_class()
    order = grouped_order(lengths, None, 16, seed=3)
    overall = labels.mean()
    assert all(abs(share - overall) < 0.06 for share in class_share_by_quarter(order, labels))


def test_hf_group_by_length_serves_one_class_stretches():
    """Why tuneline has its own sampler: HF's orders each mega-batch long to short."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths, labels = long_rows_are_one_class()
    order = get_length_grouped_indices(lengths.tolist(), 16, generator=torch.Generator().manual_seed(3))
    batches = np.array_split(np.asarray(order), len(order) // 16)
    last_batches_of_megabatches = [labels[b].mean() for b in batches[20:25]]  # mega-batches of 25 batches here
    assert max(last_batches_of_megabatches) == 0.0  # five batches in a row without the long class


def test_the_same_epoch_gives_the_same_batches_and_the_next_epoch_new_ones():
    from datasets import Dataset

    lengths, _ = long_rows_are_one_class(200)
    data = Dataset.from_dict({"input_ids": [[1] * int(n) for n in lengths]})
    first, again = LengthGroupedSampler(data, 8, seed=42), LengthGroupedSampler(data, 8, seed=42)
    first.set_epoch(1), again.set_epoch(1)
    assert list(first) == list(again), "a resumed run must see the batches the interrupted one would have"
    again.set_epoch(2)
    assert list(first) != list(again)
    assert len(first) == 200


@pytest.mark.parametrize("batch_size", [1, 7, 16])
def test_short_batch_comes_last(batch_size):
    lengths, _ = long_rows_are_one_class(100)
    order = grouped_order(lengths, None, batch_size, seed=0)
    sizes = [len(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    assert all(size == batch_size for size in sizes[:-1])


def test_class_mixed_batches_hold_every_class_but_pad_more():
    lengths, labels = long_rows_are_one_class()
    mixed = grouped_order(lengths, labels, 16, seed=0)
    per_batch = [labels[mixed[i:i + 16]].sum() for i in range(0, len(mixed) - 15, 16)]
    assert min(per_batch) >= 1
    assert padding_efficiency(lengths, mixed, 16) < padding_efficiency(lengths, grouped_order(lengths, None, 16, 0), 16)
