"""Each example config (examples/*.yaml) runs end to end through the flow, and its registered model
loads and predicts. Small overrides keep it fast (storage in tmp, short sequences, fewer epochs).

Also what each method promises: ``freeze`` leaves the frozen weights bit-identical to the base
model; ``lora`` registers only an adapter (plus head) that plain ``peft`` loads over the untouched
base; regression predicts in the target's original units; multi-class reports every class.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import EXAMPLES
from tuneline.models.base import resolve_base_model
from tuneline.config import load_config
from tuneline.loading import load_model_folder
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def run_example(name: str, storage, *overrides: str) -> tuple[dict, dict]:
    from flows.finetune import finetune

    config = load_config(EXAMPLES / name, [f"storage={storage}", "model.max_length=32", *overrides])
    summary = finetune(config=config)
    assert summary["version"] == 1 and summary["gate"]["passed"], summary["gate"]
    return summary, Registry(LocalStorage(storage)).manifest(config.name, 1)


def model_dir(storage, name: str):
    return storage / f"registry/{name}/versions/000001/model"


def predict(folder, texts, pairs=None):
    model, tokenizer = load_model_folder(folder)
    with torch.inference_mode():
        return model.eval()(**tokenizer(texts, pairs, padding=True, return_tensors="pt")).logits, model


def base_weights() -> dict:
    return load_file(str(resolve_base_model("all-MiniLM-L6-v2") / "model.safetensors"))


def test_regression_on_pairs_predicts_in_original_units(storage_root):
    summary, manifest = run_example("pairs-regression.yaml", storage_root, "training.epochs=2",
                                    "evaluation.minimum=0.3")
    assert {"mse", "rmse", "mae", "r2", "pearson", "spearman"} <= set(summary["metrics"])
    folder = model_dir(storage_root, "pairs-similarity")
    config = json.loads((folder / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["tuneline_target_scaling"]["kind"] == "standard"

    # The registered model's own test-split predictions, un-scaled as the README shows, against the raw 0-5
    # scores: mse and mae must be the manifest's. Pearson (and any ordering) is blind to a missing, doubled or
    # wrong un-scaling; these are not.
    rows, cfg = held_out_rows(storage_root, manifest)
    model, tokenizer = load_model_folder(folder)
    s = model.config.tuneline_target_scaling
    with torch.inference_mode():
        raw = model.eval()(**tokenizer(list(rows[cfg.data.text_column]), list(rows[cfg.data.text_pair_column]),
                                       padding=True, truncation=True, max_length=cfg.model.max_length,
                                       return_tensors="pt")).logits[:, 0].double()
    predicted = raw * s["std"] + s["mean"]
    truth = torch.tensor(rows[cfg.data.label_column].astype(float).to_numpy(), dtype=torch.float64)
    assert len(truth) == manifest["metrics"]["support"] == 60
    assert 0 <= truth.min() and truth.max() <= 5 and truth.std() > 0.5  # really the 0-5 scores
    assert ((predicted - truth) ** 2).mean().item() == pytest.approx(manifest["metrics"]["mse"], rel=1e-4)
    assert (predicted - truth).abs().mean().item() == pytest.approx(manifest["metrics"]["mae"], rel=1e-4)


def held_out_rows(storage, manifest: dict):
    """The test split's raw rows of a registered run (from its dataset fingerprint and config), and the config."""
    import pandas as pd

    from tuneline import keys
    from tuneline.config import parse_config
    from tuneline.stages.prepare import split_rows

    cfg = parse_config(manifest["config"])
    frame = pd.read_parquet(storage / keys.dataset_prefix(manifest["dataset_fingerprint"]) / "data.parquet")
    return frame[(split_rows(frame, cfg) == "test").to_numpy()], cfg


def test_multiclass_imbalanced_with_class_weights_and_early_stopping(storage_root):
    summary, manifest = run_example("topics-multiclass.yaml", storage_root, "training.epochs=2",
                                    "evaluation.minimum=0.5")
    assert set(manifest["metrics"]["per_class"]) == {"sports", "technology", "food", "travel"}
    assert manifest["metrics"]["confusion_matrix"]["labels"] == ["sports", "technology", "food", "travel"]
    training = manifest["training"]
    assert training["best_checkpoint"] and training["best_metric"] is not None, "early stopping tracked the best"
    logits, model = predict(model_dir(storage_root, "news-topics"),
                            ["The striker scores twice in the derby.", "The airline adds direct flights to the coast."])
    assert logits.shape == (2, 4) and model.config.id2label[int(logits[0].argmax())] == "sports"


def test_freeze_leaves_the_frozen_weights_bit_identical(storage_root):
    summary, manifest = run_example("freeze.yaml", storage_root, "training.epochs=1", "evaluation.minimum=0.5")
    saved = load_file(str(model_dir(storage_root, "reviews-freeze") / "model.safetensors"))
    base = base_weights()
    base = {k: v for k, v in base.items() if f"bert.{k}" in saved}  # buffers such as position_ids are not saved
    frozen = [k for k in base if not k.startswith("encoder.layer.5.")]  # embeddings, layers 0-4, pooler
    assert len(frozen) > 80 and all(torch.equal(saved[f"bert.{k}"], base[k]) for k in frozen), "frozen weights changed"
    assert any(not torch.equal(saved[f"bert.{k}"], base[k]) for k in base if k.startswith("encoder.layer.5.")), \
        "the unfrozen top layer trained"
    assert manifest["training"]["trainable_parameters"] < 2_000_000
    logits, _ = predict(model_dir(storage_root, "reviews-freeze"), ["This kettle works perfectly. Love it."])
    assert logits.shape == (1, 2)


def test_lora_registers_an_adapter_that_plain_peft_loads_over_the_untouched_base(storage_root):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification

    summary, manifest = run_example("lora.yaml", storage_root, "training.epochs=1", "evaluation.minimum=0.5")
    folder = model_dir(storage_root, "reviews-lora")
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names and not list(folder.glob("*.bin"))
    adapter = load_file(str(folder / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k or "classifier" in k for k in adapter), sorted(adapter)[:5]
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "sentence-transformers/all-MiniLM-L6-v2"

    # Plain transformers + peft, as a user would: the base, with the task's config, then the adapter.
    base_dir = resolve_base_model("all-MiniLM-L6-v2")
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, config=AutoConfig.from_pretrained(folder))
    model = PeftModel.from_pretrained(base, folder).eval()
    original = base_weights()
    for name, tensor in model.get_base_model().bert.state_dict().items():
        key = name.replace(".base_layer", "")
        if key in original:
            assert torch.equal(tensor, original[key]), f"base weight {key} changed"
    ours, _ = predict(folder, ["The tent broke after two days. Avoid it."])
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(folder)(["The tent broke after two days. Avoid it."], return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(model(**tokens).logits, ours, atol=1e-5)
