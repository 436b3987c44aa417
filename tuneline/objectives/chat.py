"""Instruction data for ``task: causal_lm``: prompt/response (or chat) rows -> masked token ids.

Reads rows with ``data.prompt_column`` / ``data.response_column``, or a ``data.messages_column``
of ``[{role, content}, ...]``; returns conversations and encoded examples: ``input_ids``,
``attention_mask`` and ``labels`` where every prompt token is -100, so the loss covers the
response tokens only, plus ``prompt_text`` / ``reference`` for generations. The prompt is
rendered with the tokenizer's chat template (generation prompt appended). Writes nothing.
"""

from __future__ import annotations

import json

import pandas as pd


IGNORE_INDEX = -100  # label value the loss skips (torch cross_entropy's ignore_index)


# -- rows -> conversations ------------------------------------------------------------------

def as_messages(value) -> list[dict] | None:
    """A chat cell (list, numpy array after Parquet, or JSON text) as a list of {role, content}; None if malformed."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if value is None or isinstance(value, (dict, float)):
        return None
    try:
        turns = [dict(turn) for turn in list(value)]
    except (TypeError, ValueError):
        return None
    if not all(isinstance(t.get("role"), str) and isinstance(t.get("content"), str) for t in turns):
        return None
    return [{"role": t["role"], "content": t["content"]} for t in turns]


def split_conversation(messages: list[dict] | None) -> tuple[list[dict] | None, str | None]:
    """(prompt turns, response): the last turn must be the assistant's and something must precede it."""
    if not messages or len(messages) < 2 or messages[-1]["role"] != "assistant":
        return None, None
    return messages[:-1], messages[-1]["content"]


def conversations(frame: pd.DataFrame, data) -> tuple[list, list]:
    """Per row: the prompt as chat turns and the response text (None where a row is unusable)."""
    if data.messages_column:
        pairs = [split_conversation(as_messages(v)) for v in frame[data.messages_column]]
        return [p for p, _ in pairs], [r for _, r in pairs]
    prompts = [None if pd.isna(p) else [{"role": "user", "content": str(p)}] for p in frame[data.prompt_column]]
    responses = [None if pd.isna(r) else str(r) for r in frame[data.response_column]]
    return prompts, responses


def prompt_key(prompt: list[dict] | None) -> str:
    """One string per prompt: rows with the same prompt land in the same split (no leak)."""
    return "" if prompt is None else json.dumps(prompt, sort_keys=True)


# -- tokenization with the response-only loss mask -------------------------------------------

def render_prompt(tokenizer, prompt: list[dict]) -> str:
    """The chat template up to the assistant's turn; plain 'content\\n' lines for a model without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "".join(f"{turn['content']}\n" for turn in prompt)


def encode_example(tokenizer, prompt_text: str, response: str, max_length: int) -> dict:
    """input_ids = prompt + response + end-of-turn, cut at max_length; labels = -100 on the prompt."""
    end = tokenizer.eos_token or ""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response + end, add_special_tokens=False)["input_ids"]
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def tokenize_instructions(frame: pd.DataFrame, cfg, tokenizer):
    """A ``datasets.Dataset`` of masked examples plus the rendered prompt and reference answer."""
    from datasets import Dataset

    prompts, responses = conversations(frame, cfg.data)
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "prompt_text": [], "reference": []}
    for prompt, response in zip(prompts, responses):
        text = render_prompt(tokenizer, prompt)
        for key, value in encode_example(tokenizer, text, response, cfg.model.max_length).items():
            rows[key].append(value)
        rows["prompt_text"].append(text)
        rows["reference"].append(response)
    return Dataset.from_dict(rows)
