"""Model cards: the registry stores the card beside the model files without making it part of the model's
identity; the card's header parses with huggingface_hub; each objective's "How to load" example runs, as
printed, against a folder saved the way training saves it (tiny random models: full, adapter, merged)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import make_config
from tests.unit.test_storage_registry import make_model
from tuneline.config import parse_config
from tuneline.registry import CARD, Registry, files_fingerprint, folder_files, version_dir
from tuneline.storage import LocalStorage

NAME = "sentiment"


# -- the registry: the card is listed and checksummed, not part of model_fingerprint ----------------------------

def test_the_card_replaces_the_folders_readme_and_stays_out_of_the_fingerprint(storage_root, tmp_path):
    registry = Registry(LocalStorage(storage_root))
    model = make_model(tmp_path / "model", "alpha")
    (model / CARD).write_text("PEFT's template card")
    first = registry.register(NAME, model, {}, card=lambda version: f"# {NAME} v{version}, gate: promote\n")
    assert first["version"] == 1 and not first["existing"]
    stored = storage_root / "registry" / NAME / "versions" / "000001" / "model" / CARD
    assert stored.read_text() == "# sentiment v1, gate: promote\n"
    assert first["files"][CARD] == {"sha256": hashlib.sha256(stored.read_bytes()).hexdigest(),
                                    "size": stored.stat().st_size}
    without_card = {k: v for k, v in folder_files(model).items() if k != CARD}
    assert first["model_fingerprint"] == files_fingerprint(without_card)

    # the same model again, its card now saying something else (the gate found it is the champion): same version
    again = registry.register(NAME, model, {}, card=lambda version: "# already the champion\n")
    assert again["existing"] and again["version"] == 1 and again["files"][CARD] == first["files"][CARD]
    assert stored.read_text() == "# sentiment v1, gate: promote\n"

    pulled = registry.pull(f"{NAME}:1", tmp_path / "pulled")
    assert (pulled / CARD).read_text() == "# sentiment v1, gate: promote\n"
    assert set(folder_files(pulled)) == set(first["files"])


def test_a_retried_registration_lists_the_card_its_first_attempt_wrote(storage_root, tmp_path):
    """A crash after the card was written: the retry reuses the claim and lists the card already there (a
    concurrent attempt writing other bytes would otherwise leave a file that fails its checksum)."""
    storage = LocalStorage(storage_root)
    model = make_model(tmp_path / "model", "alpha")
    fingerprint = files_fingerprint(folder_files(model))
    prefix = version_dir(NAME, 1)
    assert storage.create_exclusive(f"{prefix}/claim.json", json.dumps({"identity": fingerprint}).encode())
    storage.write_bytes(f"{prefix}/model/{CARD}", b"first attempt's card\n")
    manifest = Registry(storage).register(NAME, model, {}, card=lambda version: "the retry's card\n")
    assert manifest["version"] == 1 and not manifest["existing"]
    assert manifest["files"][CARD]["sha256"] == hashlib.sha256(b"first attempt's card\n").hexdigest()
    Registry(storage).pull(f"{NAME}:1", tmp_path / "pulled")  # every checksum holds


def test_a_promotion_note_goes_into_the_alias_history(storage_root, tmp_path):
    registry = Registry(LocalStorage(storage_root))
    registry.register(NAME, make_model(tmp_path / "a", "alpha"), {})
    note = {"approval": "approved", "decided_by": "ana", "decided_at": "2026-01-02T03:04:05+00:00", "comment": "ok",
            "to": "not this"}
    assert registry.promote(NAME, 1, "production", by="run-1", note=note)["moved"]
    [move] = registry.alias(NAME, "production")["history"]
    assert move["decided_by"] == "ana" and move["comment"] == "ok" and move["approval"] == "approved"
    assert (move["to"], move["by"]) == (1, "run-1") and move["at"]  # a note never overrides the move itself


# -- the card's content -----------------------------------------------------------------------------------------

def manifest_fields(**changes) -> dict:
    fields = {
        "task": "classification",
        "metrics": {"accuracy": 0.9, "f1_macro": 0.8912345678901234, "support": 20, "per_class": {"a": {}}},
        "champion_metrics": {"accuracy": 0.85, "f1_macro": 0.84},
        "gate": {"metric": "f1_macro", "decision": "promote", "promote": True, "passed": True,
                 "reason": "0.8912 beats champion v1 (0.8400) by more than 0.0",
                 "champion": {"alias": "production", "version": 1, "value": 0.84}},
        "dataset_fingerprint": "ab" * 32, "fitted": {"labels": ["negative", "positive"]},
        "base_model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "kind": "hub", "revision": "main",
                       "commit": "c" * 40},
        "training": {"adapter": True, "learning_rate": 2e-3, "batch_size": 16, "gradient_accumulation": 1,
                     "precision": "fp32", "global_step": 10, "max_steps": 10, "train_loss": 0.5, "device": "cpu"},
        "code_version": "0.1.0+gabc", "run_id": "not in the card",
    }
    return {**fields, **changes}


def test_the_card_header_is_a_hugging_face_model_card(tmp_path):
    from huggingface_hub import ModelCard

    from tuneline.stages.card import model_card

    cfg = parse_config(make_config(tmp_path / "data.csv", tmp_path / "store", model={"method": "lora"},
                                   evaluation={"approval": "required"}))
    fields = manifest_fields()
    text = model_card(cfg, fields, 2, {"train": 80, "validation": 10, "test": 10})
    assert text == model_card(cfg, fields, 2, {"train": 80, "validation": 10, "test": 10})  # deterministic
    (tmp_path / CARD).write_text(text)
    card = ModelCard.load(tmp_path / CARD)
    data = card.data.to_dict()
    assert (data["base_model"], data["base_model_revision"]) == ("sentence-transformers/all-MiniLM-L6-v2", "c" * 40)
    assert (data["pipeline_tag"], data["library_name"]) == ("text-classification", "peft")
    assert data["dataset_fingerprint"] == "ab" * 32 and "classification" in data["tags"]
    results = {r.metric_type: r for r in card.data.eval_results}
    assert {k: r.metric_value for k, r in results.items()} == {"accuracy": 0.9, "f1_macro": 0.8912345678901234}
    assert {(r.dataset_split, r.dataset_revision, r.task_type) for r in results.values()} == {
        ("test", "ab" * 32, "text-classification")}
    assert "not in the card" not in text  # no run id: a retry writes the same bytes
    for words in ("## Intended use", "`negative`, `positive`", "## Training", "| method | lora (r=8, alpha=16",
                  "| f1_macro | 0.8912 | 0.84 |", "**promote** (0.8912 beats champion v1", "needs a person's approval",
                  "tuneline models pull test-model:2 test-model-v2", "PeftModel.from_pretrained"):
        assert words in card.text, words


# -- the load examples, run as printed ----------------------------------------------------------------------------

def run_example(objective, cfg, folder: Path, adapter: bool, monkeypatch):
    """Execute the objective's card example in the folder's parent (its ``folder = ...`` is relative); what
    it prints."""
    code = objective.load_example(folder.name, cfg, adapter)
    monkeypatch.chdir(folder.parent)
    printed = []
    exec(compile(code, "model-card-example", "exec"), {"__name__": "model_card_example", "print": printed.append})
    [result] = printed
    return result


def saved_head_model(objective, cfg, base: Path, fitted: dict, folder: Path) -> Path:
    """A folder saved by the objective's own training save path (the Trainer is not needed for that)."""
    from tuneline.results import Prepared

    prepared = Prepared(key="k", uri="u", objective=objective.name, dataset_fingerprint="f", counts={}, fitted=fitted)
    tokenizer = objective.tokenizer(base)
    parts = objective.trainer_parts(cfg, base, prepared, None, tokenizer)
    parts.save_folder(parts.model, folder)
    return folder


@pytest.mark.parametrize("method", ["full", "lora"])
def test_classification_example_loads_and_labels(method, tiny_bert, tmp_path, monkeypatch):
    from tuneline.objectives import get

    cfg = parse_config(make_config(tmp_path / "d.csv", tmp_path, model={"base": str(tiny_bert), "method": method,
                                                                        "max_length": 32}))
    objective = get("classification")
    folder = saved_head_model(objective, cfg, tiny_bert, {"labels": ["negative", "positive"]}, tmp_path / "m-v1")
    assert (folder / "adapter_config.json").is_file() == (method == "lora")
    [label] = run_example(objective, cfg, folder, method == "lora", monkeypatch)
    assert label in ("negative", "positive")


def test_regression_example_unscales(tiny_bert, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForSequenceClassification

    from tuneline.objectives import get

    cfg = parse_config(make_config(tmp_path / "d.csv", tmp_path, task="regression",
                                   data={"labels": None, "scale_targets": "standard"},
                                   model={"base": str(tiny_bert), "max_length": 32}, evaluation={"metric": "pearson"}))
    objective = get("regression")
    scaling = {"kind": "standard", "mean": 1000.0, "std": 0.001}
    folder = saved_head_model(objective, cfg, tiny_bert, {"target_scaling": scaling}, tmp_path / "r-v1")
    [value] = run_example(objective, cfg, folder, False, monkeypatch)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = objective.tokenizer(folder)
    with torch.inference_mode():
        raw = model(**tokenizer(["Replace this with your text."], return_tensors="pt")).logits[0, 0].item()
    assert value == pytest.approx(raw * 0.001 + 1000.0)


def test_token_classification_example_tags_each_word(tiny_bert, tmp_path, monkeypatch):
    from tuneline.objectives import get

    cfg = parse_config(make_config(tmp_path / "d.jsonl", tmp_path, task="token_classification",
                                   data={"labels": None}, model={"base": str(tiny_bert), "max_length": 32},
                                   evaluation={"metric": "entity_f1"}))
    objective = get("token_classification")
    folder = saved_head_model(objective, cfg, tiny_bert, {"labels": ["O", "B-LOC", "I-LOC"]}, tmp_path / "t-v1")
    pairs = run_example(objective, cfg, folder, False, monkeypatch)
    assert [word for word, _ in pairs] == ["Replace", "these", "words", "with", "yours", "in", "Berlin"]
    assert {tag for _, tag in pairs} <= {"O", "B-LOC", "I-LOC"}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_model

    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny-decoder"))


@pytest.mark.parametrize("kind", ["full", "adapter", "merged"])
def test_causal_lm_example_answers(kind, tiny_llama, tmp_path, monkeypatch):
    from tuneline.objectives import get

    cfg = parse_config(make_config(tmp_path / "d.jsonl", tmp_path, task="causal_lm", data={"labels": None},
                                   model={"base": str(tiny_llama), "method": "full" if kind == "full" else "lora"},
                                   register={"merge": kind == "merged"},
                                   evaluation={"metric": "perplexity_improvement", "max_new_tokens": 4}))
    objective = get("causal_lm")
    folder = saved_head_model(objective, cfg, tiny_llama, {}, tmp_path / "c-v1")
    if kind == "merged":
        from tuneline.objectives.causal_lm import load_causal_lm

        load_causal_lm(folder, tiny_llama).merge_and_unload().save_pretrained(folder / "merged")
        objective.tokenizer(folder).save_pretrained(folder / "merged")
    code = objective.load_example(folder.name, cfg, kind != "full")
    assert ("merged" in code) == (kind == "merged") and ("PeftModel" in code) == (kind == "adapter")
    assert isinstance(run_example(objective, cfg, folder, kind != "full", monkeypatch), str)  # one answer
