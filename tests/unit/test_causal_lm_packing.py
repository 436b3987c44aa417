"""causal_lm packed batches (``training.batching: packed``): the same loss as padded batches, no leaks across rows.

A tiny random llama (``tests/tiny_models.py``, built offline, SmolLM2 tokenizer and chat template) and rows of
different lengths encoded by the objective. The padded batch (``masked_batches``) is the reference: the packed
batch (``PackedBatches``) must give the same summed response-token NLL over the same number of tokens, the same
logits at every real token, the same gradients, and the same ``num_items_in_batch`` in the Trainer. Its labels
are -100 exactly at prompt tokens and at each row's first token. A row's logits must not change when another
row of the packed batch changes (sdpa and eager), and ``check_packing`` must refuse a model whose mask leaks.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.tiny_models import build_tiny_model
from tuneline.config import parse_config
from tuneline.errors import ConfigError
from tuneline.objectives.causal_lm import MODEL_COLUMNS, CausalLM, PackedBatches, check_packing, masked_batches
from tuneline.objectives.chat import IGNORE_INDEX
from tuneline.results import Prepared

ROWS = [  # different lengths: padding would fill the short rows
    ("What is 2 plus 3?", "2 plus 3 is 5."),
    ("Name a colour.", "Blue."),
    ("Which city is the capital of Netherlands?", "The capital of Netherlands is Amsterdam, a city of canals."),
    ("Convert 3 kilograms to grams.", "3 kilograms is 3000 grams."),
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """(folder, tokenizer): a 2-layer random llama with the SmolLM2 tokenizer and chat template."""
    folder = build_tiny_model("llama", tmp_path_factory.mktemp("tiny"))
    return folder, CausalLM().tokenizer(folder)


def config(tmp_path, batching: str = "auto", method: str = "full"):
    return parse_config({"name": "packing", "task": "causal_lm",
                         "data": {"source": str(tmp_path / "d.jsonl"), "prompt_column": "prompt",
                                  "response_column": "response"},
                         "model": {"max_length": 64, "method": method}, "training": {"batching": batching}})


def encoded(tokenizer, tmp_path):
    frame = pd.DataFrame({"prompt": [p for p, _ in ROWS], "response": [r for _, r in ROWS]})
    dataset = CausalLM().encode(frame, config(tmp_path), tokenizer, {})
    assert len(set(map(len, dataset["input_ids"]))) == len(ROWS), "the rows must differ in length"
    return dataset


def trainer_parts(folder, tokenizer, tmp_path, dataset, batching: str = "auto", method: str = "full"):
    prepared = Prepared(key="prepared/packing", uri="memory://prepared/packing", objective="causal_lm",
                        dataset_fingerprint="0" * 64, counts={"train": len(dataset)})
    return CausalLM().trainer_parts(config(tmp_path, batching, method), folder, prepared, dataset, tokenizer)


def features(dataset) -> list[dict]:
    return [dict(row) for row in dataset.select_columns(MODEL_COLUMNS)]


def summed_nll(logits, labels) -> tuple[torch.Tensor, int]:
    """(sum of the response tokens' cross-entropy, tokens counted): ``logits[t]`` against ``labels[t + 1]``."""
    targets = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].double().transpose(1, 2), targets,
                                            ignore_index=IGNORE_INDEX, reduction="sum")
    return nll, int((targets != IGNORE_INDEX).sum())


def test_auto_and_packed_batch_padding_free_and_the_others_pad(tiny_llama, tmp_path):
    from transformers import DataCollatorForSeq2Seq

    folder, tokenizer = tiny_llama
    dataset = encoded(tokenizer, tmp_path)
    for batching, kind in [("auto", PackedBatches), ("packed", PackedBatches), ("padded", DataCollatorForSeq2Seq),
                           ("length_grouped", DataCollatorForSeq2Seq)]:
        assert isinstance(trainer_parts(folder, tokenizer, tmp_path, dataset, batching, "lora").collator, kind)


def test_packed_labels_are_ignored_exactly_at_prompt_tokens_and_row_starts(tiny_llama, tmp_path):
    _, tokenizer = tiny_llama
    dataset = encoded(tokenizer, tmp_path)
    batch = PackedBatches()(features(dataset))
    lengths = [len(ids) for ids in dataset["input_ids"]]
    total = sum(lengths)
    assert set(batch) == {"input_ids", "labels", "position_ids", "use_cache"}  # no attention_mask, no padding
    assert batch["use_cache"] is False
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (1, total)
    assert batch["input_ids"][0].tolist() == [t for ids in dataset["input_ids"] for t in ids]
    assert batch["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]

    starts, prompt = set(), set()
    offset = 0
    for ids, labels in zip(dataset["input_ids"], dataset["labels"]):
        starts.add(offset)
        prompt |= {offset + i for i, label in enumerate(labels) if label == IGNORE_INDEX}
        assert labels[0] == IGNORE_INDEX and labels[-1] != IGNORE_INDEX  # a prompt, then a response
        offset += len(ids)
    labels, ids = batch["labels"][0].tolist(), batch["input_ids"][0].tolist()
    ignored = {i for i, label in enumerate(labels) if label == IGNORE_INDEX}
    assert ignored == starts | prompt
    assert all(labels[i] == ids[i] for i in range(total) if i not in ignored)  # the response: its own tokens


def test_packed_loss_logits_and_gradients_equal_the_padded_ones(tiny_llama, tmp_path):
    from transformers import Trainer

    from tuneline.training.loop import training_arguments

    folder, tokenizer = tiny_llama
    dataset = encoded(tokenizer, tmp_path)
    parts = trainer_parts(folder, tokenizer, tmp_path, dataset)
    model = parts.model.eval()  # no dropout; gradients still flow
    padded_batch = masked_batches(tokenizer)(features(dataset))
    packed_batch = parts.collator(features(dataset))

    results = {}
    for name, batch in [("padded", padded_batch), ("packed", packed_batch)]:
        model.zero_grad()
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        nll, count = summed_nll(logits, batch["labels"])
        nll.backward()
        gradients = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        results[name] = nll.detach(), count, logits.detach(), gradients
    padded_nll, padded_count, padded_logits, padded_grads = results["padded"]
    packed_nll, packed_count, packed_logits, packed_grads = results["packed"]

    assert packed_count == padded_count > 0
    assert float(packed_nll) == pytest.approx(float(padded_nll), rel=1e-5)
    offset = 0
    for row, ids in enumerate(dataset["input_ids"]):  # every real token's logits, row by row
        torch.testing.assert_close(packed_logits[0, offset:offset + len(ids)], padded_logits[row, :len(ids)],
                                   rtol=1e-4, atol=1e-4)
        offset += len(ids)
    assert packed_grads.keys() == padded_grads.keys() and len(packed_grads) > 0
    for name in padded_grads:
        torch.testing.assert_close(packed_grads[name], padded_grads[name], rtol=1e-3, atol=1e-6, msg=name)

    # The training step's normalisation: the Trainer counts the same response tokens in both batches, and
    # the model's loss (sum / num_items_in_batch) is the same.
    trainer = Trainer(model=model, args=training_arguments(config(tmp_path), tmp_path / "out", "fp32", False, 8, 1,
                                                           len(dataset)),
                      data_collator=parts.collator, processing_class=tokenizer)
    counts = [trainer.get_batch_samples(iter([batch]), 1, trainer.args.device)[1]
              for batch in (padded_batch, packed_batch)]
    assert int(counts[0]) == int(counts[1]) == padded_count
    with torch.no_grad():
        losses = [float(trainer.compute_loss(model, dict(batch), num_items_in_batch=count))
                  for batch, count in zip((padded_batch, packed_batch), counts)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert losses[0] == pytest.approx(float(padded_nll) / padded_count, rel=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_row_never_sees_another_row(tiny_llama, tmp_path, attention):
    from transformers import AutoModelForCausalLM

    folder, tokenizer = tiny_llama
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attention).eval()
    assert model.config.use_cache  # the config default that, unless the batch turns it off, hides row boundaries
    dataset = encoded(tokenizer, tmp_path)
    rows = features(dataset)
    changed = [dict(row) for row in rows]
    changed[0]["input_ids"] = [(t * 7 + 3) % len(tokenizer) for t in rows[0]["input_ids"]]  # row 0, same length
    first = len(rows[0]["input_ids"])
    with torch.no_grad():
        before = model(**{k: v for k, v in PackedBatches()(rows).items() if k != "labels"}).logits[0]
        after = model(**{k: v for k, v in PackedBatches()(changed).items() if k != "labels"}).logits[0]
    assert not torch.allclose(before[:first], after[:first])  # row 0 did change
    torch.testing.assert_close(after[first:], before[first:], rtol=0, atol=1e-5)  # rows 1.. did not


def test_check_packing_refuses_a_model_whose_mask_ignores_row_boundaries(tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM, masking_utils

    folder, _ = tiny_llama
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    check_packing(model)  # this transformers keeps rows apart
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    with pytest.raises(ConfigError, match="training.batching: packed: this llama with attention sdpa lets a packed"):
        check_packing(model)
