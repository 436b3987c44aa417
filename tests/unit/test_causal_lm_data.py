"""causal_lm data: the response-only loss mask, chat rows, padding, config defaults, validation.

Uses the real SmolLM2-135M-Instruct tokenizer (converted once into $TUNELINE_CACHE).
"""

from __future__ import annotations

import pandas as pd
import pytest

from tuneline.config import parse_config
from tuneline.errors import ConfigError
from tuneline.objectives.chat import IGNORE_INDEX, conversations, encode_example, render_prompt, tokenize_instructions
from tuneline.stages.validate import validate_frame as validate_instruction_frame


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from tuneline.models.base import resolve_base_model

    return AutoTokenizer.from_pretrained(resolve_base_model("SmolLM2-135M-Instruct"))


def causal_config(tmp_path, **data):
    return parse_config({"name": "x", "task": "causal_lm", "data": {"source": str(tmp_path / "d.jsonl"), **data}})


def test_loss_covers_the_response_tokens_only(tokenizer):
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "What is 2 plus 3?"}])
    assert prompt.endswith("<|im_start|>assistant\n")  # the chat template, up to the assistant's turn
    example = encode_example(tokenizer, prompt, "2 plus 3 is 5.", max_length=128)
    prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    labels = example["labels"]
    assert labels[:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert IGNORE_INDEX not in labels[prompt_length:]
    assert labels[prompt_length:] == example["input_ids"][prompt_length:]
    assert tokenizer.decode(labels[prompt_length:]) == "2 plus 3 is 5.<|im_end|>"
    assert len(example["attention_mask"]) == len(example["input_ids"])

    cut = encode_example(tokenizer, prompt, "2 plus 3 is 5.", max_length=prompt_length + 2)
    assert len(cut["input_ids"]) == prompt_length + 2 and cut["labels"][-2:] == cut["input_ids"][-2:]


def test_chat_rows_and_prompt_rows_give_the_same_examples(tokenizer, tmp_path):
    chat = pd.DataFrame({"messages": [[{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]]})
    flat = pd.DataFrame({"prompt": ["Hi?"], "response": ["Hello."]})
    from_chat = tokenize_instructions(chat, causal_config(tmp_path, messages_column="messages"), tokenizer)
    from_flat = tokenize_instructions(flat, causal_config(tmp_path), tokenizer)
    assert from_chat["labels"] == from_flat["labels"] and from_chat["reference"] == ["Hello."]
    bad = pd.DataFrame({"messages": ['[{"role": "user", "content": "no answer"}]']})
    assert conversations(bad, causal_config(tmp_path, messages_column="messages").data) == ([None], [None])


def test_padding_never_counts_in_the_loss(tokenizer):
    from tuneline.objectives.causal_lm import masked_batches

    short = encode_example(tokenizer, "a", "b", 64)
    long = encode_example(tokenizer, "a longer prompt here", "and a longer answer too", 64)
    batch = masked_batches(tokenizer)([short, long])
    padding = len(long["input_ids"]) - len(short["input_ids"])
    assert batch["labels"][0, -padding:].tolist() == [IGNORE_INDEX] * padding
    assert batch["attention_mask"][0, -padding:].tolist() == [0] * padding


def test_causal_lm_defaults_and_metric_checks(tmp_path):
    cfg = causal_config(tmp_path)
    assert (cfg.model.base, cfg.model.method.value, cfg.evaluation.metric.value) == (
        "SmolLM2-135M-Instruct", "lora", "perplexity_improvement")
    with pytest.raises(ConfigError) as err:
        parse_config({"name": "x", "task": "causal_lm", "data": {"source": "d.jsonl", "labels": ["a"]},
                      "evaluation": {"metric": "f1_macro"}})
    assert "evaluation.metric: f1_macro is not a causal_lm metric" in str(err.value)
    assert "data.labels: task: causal_lm has no label set" in str(err.value)
    gate = parse_config({"name": "x", "task": "causal_lm", "data": {"source": "d.jsonl"},
                         "evaluation": {"metric": "perplexity", "maximum": 5}})
    assert gate.evaluation.maximum == 5


def test_validation_names_the_column_with_missing_responses(tmp_path):
    rows = [{"prompt": f"question {i}?", "response": f"answer {i}."} for i in range(30)]
    rows[3]["response"] = None
    report = validate_instruction_frame(pd.DataFrame(rows), causal_config(tmp_path))
    assert not report["success"]
    failed = [r for r in report["results"] if not r["success"]]
    assert [(r["expectation"], r["column"]) for r in failed] == [
        ("expect_column_values_to_not_be_null", "response")]
    good = validate_instruction_frame(pd.DataFrame(rows[:3] + rows[4:]), causal_config(tmp_path))
    assert good["success"], [r for r in good["results"] if not r["success"]]
    assert not any("label" in r["expectation"] for r in good["results"])


def test_causal_lm_gate_follows_the_metric_direction(tmp_path):
    from tuneline.stages.gate import gate_decision

    def cfg(**evaluation):
        return parse_config({"name": "x", "task": "causal_lm", "data": {"source": "d.jsonl"},
                             "evaluation": evaluation})

    metrics = {"perplexity": 3.0, "perplexity_improvement": 0.25}
    assert gate_decision(metrics, None, cfg(metric="perplexity", maximum=4))["decision"] == "promote"
    rejected = gate_decision(metrics, None, cfg(metric="perplexity", maximum=2.5))
    assert not rejected["passed"] and "above the maximum 2.5" in rejected["reason"]
    assert not gate_decision(metrics, None, cfg(minimum=0.3))["passed"]  # perplexity_improvement >= minimum
    champion = {"alias": "production", "version": 1, "metrics": {"perplexity": 3.5, "perplexity_improvement": 0.1}}
    assert gate_decision(metrics, champion, cfg(metric="perplexity"))["promote"]  # lower perplexity wins
    assert not gate_decision(metrics, champion, cfg(metric="perplexity", margin=1.0))["promote"]
    assert gate_decision(metrics, champion, cfg())["promote"]
