"""causal_lm loss: only response tokens count, each scored from the tokens before it.

A tiny random llama (``tests/tiny_models.py``, built offline) scores a padded batch of instruction rows
encoded by the objective. The expected loss is computed here by hand from the raw rows: the chat
template rendered by the tokenizer, the response plus end-of-turn appended, each row run alone (no
padding), and the cross-entropy of ``logits[t]`` against ``input_ids[t + 1]`` averaged over the
positions ``t + 1`` that hold response tokens only. The objective's own scoring (``response_loss``,
used by evaluate and the gate) and the training loss (a ``transformers.Trainer`` built from the
objective's ``trainer_parts`` and the project's ``training_arguments``) must both equal it.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from tests.tiny_models import build_tiny_model
from tuneline.config import parse_config
from tuneline.objectives.causal_lm import MODEL_COLUMNS, CausalLM, response_loss
from tuneline.results import Prepared

MAX_LENGTH = 48  # long enough for the short rows; cuts the long row inside its response
PROMPT_ROWS = [
    ("What is 2 plus 3?", "2 plus 3 is 5."),
    ("Name a colour.", "Blue."),
    ("Which city is the capital of Netherlands?", "The capital of Netherlands is Amsterdam, a city of canals, "
                                                 "bicycles, museums and about nine hundred thousand people."),
]
CHAT_ROWS = [  # earlier assistant turns are prompt: only the last answer is learned
    [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": "What is 19 minus 10?"}, {"role": "assistant", "content": "19 minus 10 is 9."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Convert 3 kg to grams."},
     {"role": "assistant", "content": "3000 grams."}],
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """(folder, model, tokenizer): a 2-layer random llama with the SmolLM2 tokenizer and chat template."""
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model("llama", tmp_path_factory.mktemp("tiny"))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return folder, model, CausalLM().tokenizer(folder)


def config(tmp_path, chat: bool):
    columns = {"messages_column": "messages"} if chat else {"prompt_column": "prompt", "response_column": "response"}
    return parse_config({"name": "loss", "task": "causal_lm", "data": {"source": str(tmp_path / "d.jsonl"), **columns},
                         "model": {"max_length": MAX_LENGTH, "method": "full"}, "training": {"batch_size": 8}})


def rows(chat: bool) -> tuple[pd.DataFrame, list[tuple[list[dict], str]]]:
    """The frame the objective encodes, and the same rows as (prompt turns, response) for the hand computation."""
    if chat:
        return pd.DataFrame({"messages": CHAT_ROWS}), [(m[:-1], m[-1]["content"]) for m in CHAT_ROWS]
    return (pd.DataFrame({"prompt": [p for p, _ in PROMPT_ROWS], "response": [r for _, r in PROMPT_ROWS]}),
            [([{"role": "user", "content": p}], r) for p, r in PROMPT_ROWS])


def by_hand(model, tokenizer, examples) -> tuple[float, int, list[list[int]]]:
    """(mean response-token cross-entropy, response tokens scored, each row's token ids), one row at a time."""
    total, count, sequences = 0.0, 0, []
    for prompt, response in examples:
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + response_ids)[:MAX_LENGTH]
        with torch.inference_mode():
            log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        for position in range(len(prompt_ids), len(ids)):  # a response token, predicted from the one before it
            total -= float(log_probs[position - 1, ids[position]])
            count += 1
        sequences.append(ids)
    return total / count, count, sequences


@pytest.mark.parametrize("chat", [False, True], ids=["prompt-response", "chat"])
def test_response_loss_and_training_loss_equal_the_hand_computed_response_cross_entropy(tiny_llama, tmp_path, chat):
    from transformers import Trainer

    from tuneline.training.loop import training_arguments

    folder, model, tokenizer = tiny_llama
    cfg, objective = config(tmp_path, chat), CausalLM()
    frame, examples = rows(chat)
    expected, tokens, sequences = by_hand(model, tokenizer, examples)
    if not chat:
        assert len(sequences[-1]) == MAX_LENGTH, "the long row must be cut inside its response"

    dataset = objective.encode(frame, cfg, tokenizer, {})
    assert dataset["input_ids"] == sequences  # the same tokens: only the labels decide what is scored

    scored = response_loss(model, dataset, tokenizer)  # what evaluate reports (and the gate compares)
    assert scored["tokens"] == tokens
    assert scored["loss"] == pytest.approx(expected, rel=1e-5)
    assert scored["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)

    prepared = Prepared(key="prepared/loss", uri="memory://prepared/loss", objective="causal_lm",
                        dataset_fingerprint="0" * 64, counts={"train": len(dataset)})
    parts = objective.trainer_parts(cfg, folder, prepared, dataset, tokenizer)
    arguments = training_arguments(cfg, tmp_path / "out", "fp32", True, 8, 1, len(dataset))
    trainer = Trainer(model=parts.model, args=arguments,
                      eval_dataset=dataset.select_columns(parts.model_columns or MODEL_COLUMNS),
                      data_collator=parts.collator, processing_class=tokenizer, compute_loss_func=parts.compute_loss)
    assert len(dataset) <= trainer.args.per_device_eval_batch_size  # one padded batch: its mean is per token
    assert trainer.evaluate()["eval_loss"] == pytest.approx(expected, rel=1e-5)
