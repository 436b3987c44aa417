"""``task: token_classification`` end to end: the entities example (JSONL), CoNLL input with LoRA, bad BIO
input refused before training, and the registered model scored again with plain transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import EXAMPLES
from tuneline.config import load_config
from tuneline.errors import ValidationFailed
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def run(name: str, storage, *overrides: str) -> tuple[dict, dict]:
    from flows.finetune import finetune

    config = load_config(EXAMPLES / name, [f"storage={storage}", *overrides])
    summary = finetune(config=config)
    return summary, Registry(LocalStorage(storage)).manifest(config.name, summary["version"])


def tag_words(folder, words: list[str]) -> list[str]:
    """Plain transformers, as a user would: the tag of each word's first sub-token."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    encoded = tokenizer([words], is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        predicted = model(**encoded).logits[0].argmax(-1).tolist()
    first = {}
    for position, word in enumerate(encoded.word_ids(0)):
        if word is not None and word not in first:
            first[word] = model.config.id2label[predicted[position]]
    return [first[i] for i in range(len(words))]


def test_entities_example_learns_entities_and_loads_with_plain_transformers(storage_root):
    summary, manifest = run("entities.yaml", storage_root)
    metrics = manifest["metrics"]
    assert summary["gate"]["metric"] == "entity_f1" and summary["gate"]["passed"]
    assert metrics["entity_f1"] >= 0.8, metrics
    assert set(metrics["per_type"]) == {"LOC", "ORG", "PER"}
    assert metrics["support"] > 100 and 70 <= metrics["sentences"] <= 90  # the 20% test split of 400
    assert manifest["fitted"]["labels"][0] == "O" and "B-PER" in manifest["fitted"]["labels"]
    folder = storage_root / "registry/demo-entities/versions/000001/model"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and config["id2label"]["0"] == "O"
    tags = tag_words(folder, ["Alice", "Smith", "flew", "to", "Paris", "."])
    assert tags[2:4] == ["O", "O"] and tags[4] == "B-LOC", tags


def test_conll_input_with_lora_trains_registers_and_reloads(storage_root):
    from tuneline.loading import load_model_folder

    summary, manifest = run("entities.yaml", storage_root, "data.source=data/entities.conll", "data.format=conll",
                            "model.method=lora", "training.learning_rate=2e-3", "training.epochs=2",
                            "evaluation.minimum=0", "name=entities-conll")
    assert manifest["dataset_fingerprint"] and 10 <= summary["metrics"]["sentences"] <= 14  # 20% of 60
    folder = storage_root / "registry/entities-conll/versions/000001/model"
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["task_type"] == "TOKEN_CLS" and "classifier" in adapter["modules_to_save"]
    model, tokenizer = load_model_folder(folder)
    encoded = tokenizer([["Bob", "visits", "Rome"]], is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**encoded).logits
    assert logits.shape[-1] == len(manifest["fitted"]["labels"]) and np.isfinite(logits.numpy()).all()


def test_tags_that_are_not_bio_are_refused_naming_the_row(tmp_path, storage_root):
    from flows.finetune import finetune

    rows = [json.loads(line) for line in (EXAMPLES / "data" / "entities.jsonl").read_text().splitlines()][:60]
    rows[2]["tags"] = ["I-PER" if t == "B-PER" else t for t in rows[2]["tags"]]  # IOB1: I- opens an entity
    rows[9]["tags"] = rows[9]["tags"][:-1]  # one tag short
    source = tmp_path / "bad.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(EXAMPLES / "entities.yaml", [f"storage={storage_root}", f"data.source={source}"])
    with pytest.raises(ValidationFailed) as failure:
        finetune(config=config)
    message = str(failure.value)
    assert "expect_tags_to_be_bio" in message and "row 2" in message and "I-PER" in message
    assert "expect_tokens_and_tags_to_be_lists_of_equal_length" in message and "row 9" in message
    assert not (storage_root / "candidates").exists(), "nothing trained on bad input"
