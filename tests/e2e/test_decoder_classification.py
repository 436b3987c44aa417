"""``task: classification`` on a decoder (SmolLM2-135M, Llama-style): full, freeze and LoRA.

The sequence-classification head pools the last non-pad token, so the model needs a pad token: the
objective sets one when the tokenizer has none, and it travels in the registered folder. LoRA trains
the adapters plus the new ``score`` head (saved beside the adapter, PEFT task type SEQ_CLS); freeze
trains the head alone. Each registered model loads with plain transformers (and peft).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import EXAMPLES, make_config
from tuneline.config import parse_config
from tuneline.models.base import resolve_base_model
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
DECODER = "SmolLM2-135M-Instruct"


def train(storage, source, **sections) -> tuple[dict, dict, object]:
    from flows.finetune import finetune

    model = {"base": DECODER, "max_length": 48, **sections.pop("model", {})}
    raw = make_config(source, storage, model=model, **sections)
    summary = finetune(config=parse_config(raw))
    manifest = Registry(LocalStorage(storage)).manifest("test-model", summary["version"])
    return summary, manifest, storage / f"registry/test-model/versions/{summary['version']:06d}/model"


def logits_of(model, folder, texts):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        return model.eval()(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def test_lora_on_a_decoder_learns_the_demo_and_loads_with_plain_peft(storage_root):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification

    summary, manifest, folder = train(storage_root, EXAMPLES / "data" / "reviews.csv",
                                      model={"method": "lora"}, training={"epochs": 2, "learning_rate": 2e-3},
                                      evaluation={"minimum": 0.8})
    assert summary["metrics"]["f1_macro"] >= 0.8, summary["metrics"]
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["pad_token_id"] is not None
    weights = load_file(str(folder / "adapter_model.safetensors"))
    assert any("score" in k for k in weights) and all("lora_" in k or "score" in k for k in weights)
    base = AutoModelForSequenceClassification.from_pretrained(resolve_base_model(DECODER),
                                                              config=AutoConfig.from_pretrained(folder))
    model = PeftModel.from_pretrained(base, folder)
    logits = logits_of(model, folder, ["This kettle works perfectly. Love it.", "Broke after a day. Avoid."])
    assert logits.argmax(-1).tolist() == [config["label2id"]["positive"], config["label2id"]["negative"]]


@pytest.mark.parametrize("method", ["full", "freeze"])
def test_full_and_freeze_on_a_decoder_register_plain_folders(tmp_path, storage_root, method):
    from transformers import AutoModelForSequenceClassification

    rows = (EXAMPLES / "data" / "reviews.csv").read_text().splitlines()
    source = tmp_path / "few.csv"
    source.write_text("\n".join(rows[:81]) + "\n")  # 80 reviews: the mechanics, not the quality
    summary, manifest, folder = train(storage_root, source, model={"method": method},
                                      training={"epochs": 1, "batch_size": 8, "learning_rate": 1e-4},
                                      evaluation={"minimum": 0.0})
    trainable = manifest["training"]["trainable_parameters"]
    assert trainable == 576 * 2 if method == "freeze" else trainable > 100_000_000  # freeze: the score head alone
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.pad_token_id is not None and type(model).__name__ == "LlamaForSequenceClassification"
    if method == "freeze":
        base = load_file(str(resolve_base_model(DECODER) / "model.safetensors"))
        saved = load_file(str(folder / "model.safetensors"))
        layer = "model.layers.0.self_attn.q_proj.weight"
        assert torch.equal(saved[layer], base[layer]), "a frozen weight changed"
    assert logits_of(model, folder, ["Great.", "Terrible, it broke."]).shape == (2, 2)
