"""task: causal_lm end to end on CPU: LoRA on SmolLM2-135M-Instruct over the project's instruction data.

What a user checks: the run registers a version whose test perplexity is below the base model's,
generations are kept in the manifest, the loss mask covers response tokens only, the pulled
adapter loads with peft over the base folder and generates what the manifest recorded, and the
merged weights (register.merge) load with plain transformers and match the adapter's outputs; a
weaker challenger is scored against that champion on the same test split and not promoted.
Kept tiny (30 rows, 3 optimizer steps, 64 tokens).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLES
from tuneline.config import load_config
from tuneline.objectives.chat import IGNORE_INDEX
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def tiny_causal_config(tmp_path, storage_root):
    rows = (EXAMPLES / "data" / "instructions.jsonl").read_text().splitlines()[:30]
    source = tmp_path / "instructions.jsonl"
    source.write_text("\n".join(rows) + "\n")
    return load_config(EXAMPLES / "causal_lm.yaml", [
        f"data.source={source}", f"storage={storage_root}", "data.test_fraction=0.2",
        "model.max_length=64", "training.batch_size=4", "training.epochs=0.5", "training.learning_rate=2e-3",
        "training.warmup_ratio=0", "evaluation.minimum=0.0", "evaluation.generations=2",
        "evaluation.max_new_tokens=8", "register.merge=true",
    ])


def test_instruction_tuning_registers_an_adapter_and_merged_weights(tiny_causal_config, storage_root, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flows.finetune import finetune
    from tuneline.models.base import resolve_base_model
    from flows.cli import main
    from tuneline.data.encoded import load_split
    from tuneline.results import Prepared

    summary = finetune(config=tiny_causal_config)
    metrics = summary["metrics"]
    assert summary["version"] == 1 and summary["gate"]["passed"] and summary["promoted"]
    assert metrics["perplexity"] < metrics["base_perplexity"], metrics
    assert metrics["perplexity_improvement"] > 0

    # the prepared training rows: -100 on every prompt token, the response (+ end of turn) learned
    storage = LocalStorage(storage_root)
    prepared = Prepared(**json.loads(next(storage_root.glob("prepared/*/meta.json")).read_text()))
    row = load_split(storage, prepared, "train")[0]
    learned = [t for t in row["labels"] if t != IGNORE_INDEX]
    first = row["labels"].index(learned[0])
    assert row["labels"][:first] == [IGNORE_INDEX] * first
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("SmolLM2-135M-Instruct"))
    assert tokenizer.decode(row["input_ids"][:first]) == row["prompt_text"]
    assert tokenizer.decode(learned) == row["reference"] + "<|im_end|>"

    manifest = Registry(storage).manifest("demo-instructions", 1)
    assert manifest["task"] == "causal_lm"
    assert {"adapter_config.json", "adapter_model.safetensors", "merged/config.json",
            "merged/model.safetensors", "merged/tokenizer.json"} <= set(manifest["files"])
    assert not [f for f in manifest["files"] if f.endswith((".bin", ".pt", ".pkl"))]
    generations = manifest["metrics"]["generations"]
    assert len(generations) == 2 and all({"prompt_text", "reference", "output", "base_output"} <= set(g)
                                         for g in generations)

    pulled = tmp_path / "pulled"
    assert main(["models", "--storage", str(storage_root), "pull", "demo-instructions@production", str(pulled)]) == 0
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model("SmolLM2-135M-Instruct"))
    adapted = PeftModel.from_pretrained(base, pulled).eval()
    tokenizer = AutoTokenizer.from_pretrained(pulled)
    prompt = tokenizer(generations[0]["prompt_text"], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        answer = adapted.generate(**prompt, max_new_tokens=8, do_sample=False)
        adapter_logits = adapted(**prompt).logits
    text = tokenizer.decode(answer[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert text and text == generations[0]["output"]

    merged = AutoModelForCausalLM.from_pretrained(pulled / "merged").eval()  # plain transformers, no peft
    assert AutoTokenizer.from_pretrained(pulled / "merged").chat_template
    with torch.inference_mode():
        merged_logits = merged(**prompt).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-3)

    # A challenger trained with a hundredth of the learning rate: kept as version 2, production unmoved.
    weaker = tiny_causal_config.model_copy(update={
        "training": tiny_causal_config.training.model_copy(update={"learning_rate": 2e-5})})
    second = finetune(config=weaker)
    gate = second["gate"]
    assert second["version"] == 2 and gate["passed"] and not second["promoted"], gate
    assert gate["decision"] == "keep" and gate["champion"]["version"] == 1
    assert gate["champion"]["value"] == metrics["perplexity_improvement"] > gate["value"]
    assert Registry(storage).aliases("demo-instructions") == {"production": 1}
