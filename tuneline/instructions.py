"""Instruction data for ``task: causal_lm``: prompt/response (or chat) rows -> masked token ids.

Reads the ingested snapshot (``data.prompt_column`` / ``data.response_column``, or a
``data.messages_column`` of ``[{role, content}, ...]``); validates it (great-expectations,
report like the classification suite's) and writes ``prepared/<key>/{train,validation,test}``:
``input_ids``, ``attention_mask`` and ``labels`` where every prompt token is -100, so the
loss covers the response tokens only, plus ``prompt_text`` / ``reference`` for generations.
The prompt is rendered with the tokenizer's chat template (generation prompt appended).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd

from tuneline.config import DataConfig, FinetuneConfig
from tuneline.errors import DataError
from tuneline.splits import SPLITS, assign_splits

IGNORE_INDEX = -100  # label value the loss skips (torch cross_entropy's ignore_index)
PROMPT, RESPONSE, INPUT = "_prompt", "_response", "_input"  # derived columns used by validation
MAX_EXAMPLES = 5


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


def conversations(frame: pd.DataFrame, data: DataConfig) -> tuple[list, list]:
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


def assign_instruction_splits(frame: pd.DataFrame, data: DataConfig) -> pd.Series:
    """Split per row: ``data.split_column`` if set, else the seeded draw of tuneline.splits over prompts."""
    prompts, _ = conversations(frame, data)
    keyed = pd.DataFrame({"text": [prompt_key(p) for p in prompts], "label": "all"}, index=frame.index)
    if data.split_column:
        keyed[data.split_column] = frame[data.split_column]
    return assign_splits(keyed, data.model_copy(update={"text_column": "text", "text_pair_column": None,
                                                        "label_column": "label"}))


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


def tokenize_instructions(frame: pd.DataFrame, cfg: FinetuneConfig, tokenizer):
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


def prepare_instruction_splits(storage, dataset: dict, cfg: FinetuneConfig) -> dict:
    """preprocess for causal_lm: split by prompt, render, tokenize, mask; once per (dataset, settings)."""
    from transformers import AutoTokenizer

    from tuneline.base_models import resolve_base_model
    from tuneline.ingest import load_dataset_frame
    from tuneline.preprocess import prepare_key

    prefix = f"prepared/{prepare_key(dataset, cfg)}"
    if cfg.cache and storage.exists(f"{prefix}/meta.json"):
        return {**storage.read_json(f"{prefix}/meta.json"), "reused": True}
    frame = load_dataset_frame(storage, dataset)
    splits = assign_instruction_splits(frame, cfg.data)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(cfg.model.base), use_fast=True)
    counts, response_tokens, no_response = {}, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for split in SPLITS:
            rows = frame[splits == split]
            counts[split] = len(rows)
            if len(rows):
                encoded = tokenize_instructions(rows, cfg, tokenizer)
                learned = [sum(label != IGNORE_INDEX for label in labels) for labels in encoded["labels"]]
                response_tokens += sum(learned)
                no_response += sum(n == 0 for n in learned)
                encoded.save_to_disk(str(Path(tmp) / split))
        if no_response == len(frame):
            raise DataError(f"model.max_length={cfg.model.max_length} cuts off every response: raise it")
        storage.put_dir(Path(tmp), prefix)
    meta = {"key": prefix, "uri": storage.uri(prefix), "labels": None, "counts": counts,
            "dataset_fingerprint": dataset["fingerprint"], "task": cfg.task.value,
            "response_tokens": response_tokens, "rows_without_response_tokens": no_response}
    storage.write_json(f"{prefix}/meta.json", meta)
    return {**meta, "reused": False}


# -- validation --------------------------------------------------------------------------------

def _conversation_check(frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
    """Chat rows: a list of {role, content} ending with the assistant's answer."""
    column = cfg.data.messages_column
    bad = frame.loc[frame[RESPONSE].isna(), column]
    return {
        "expectation": "expect_messages_to_end_with_an_assistant_turn",
        "column": column,
        "success": bad.empty,
        "unexpected_count": int(len(bad)),
        "element_count": int(len(frame)),
        **({"examples": [str(v)[:80] for v in bad.iloc[:MAX_EXAMPLES]]} if not bad.empty else {}),
    }


def validate_instruction_frame(frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
    """Columns present, enough rows, prompt/response non-null strings of allowed length, few duplicates,
    no prompt in both training and evaluation splits. No label checks (there are no labels)."""
    import great_expectations.expectations as gxe

    from tuneline.validation import _expectation_suite, _gx_batch, _summarise

    data, limits = cfg.data, cfg.validation
    columns = [data.messages_column] if data.messages_column else [data.prompt_column, data.response_column]
    columns += [data.split_column] if data.split_column else []
    frame = frame.copy()
    present = all(c in frame.columns for c in columns)
    expectations = [gxe.ExpectColumnToExist(column=c) for c in columns]
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=limits.min_rows))
    if present:
        prompts, responses = conversations(frame, data)
        frame[PROMPT] = [None if p is None else "\n".join(t["content"] for t in p) for p in prompts]
        frame[RESPONSE] = responses
        frame[INPUT] = [prompt_key(p) for p in prompts]
        for column in (PROMPT, RESPONSE):
            expectations += [
                gxe.ExpectColumnValuesToNotBeNull(column=column),
                gxe.ExpectColumnValueLengthsToBeBetween(column=column, min_value=limits.min_text_length,
                                                        max_value=limits.max_text_length),
            ]
        expectations.append(gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column=INPUT, min_value=1.0 - limits.max_duplicate_fraction))
        if data.split_column:
            expectations.append(gxe.ExpectColumnValuesToBeInSet(column=data.split_column, value_set=list(SPLITS)))
    # what GX sees: the derived columns, and the configured ones (a chat column as text: GX wants scalars)
    checked = frame[[c for c in (PROMPT, RESPONSE, INPUT) if c in frame.columns]].copy()
    for column in (c for c in columns if c in frame.columns):
        checked[column] = frame[column].astype(str) if column == data.messages_column else frame[column]
    results = [_summarise(r) for r in _gx_batch(checked, "dataset").validate(
        _expectation_suite(expectations), result_format="SUMMARY").results]
    # the null checks above name the derived columns; say which configured column they come from
    for entry in results:
        if entry.get("column") == PROMPT:
            entry["column"] = data.messages_column or data.prompt_column
        elif entry.get("column") == RESPONSE:
            entry["column"] = data.messages_column or data.response_column
    if present and data.messages_column:
        results.append(_conversation_check(frame, cfg))
    if cfg.validation.check_split_overlap and present and all(r["success"] for r in results):
        splits = assign_instruction_splits(frame, data)
        held_out = set(frame.loc[splits.isin(["validation", "test"]), INPUT])
        leaked = frame.loc[(splits == "train") & frame[INPUT].isin(held_out), PROMPT]
        results.append({"expectation": "expect_train_prompts_not_in_evaluation_splits", "column": INPUT,
                        "success": leaked.empty, "unexpected_count": int(len(leaked)),
                        **({"examples": list(leaked.iloc[:MAX_EXAMPLES])} if not leaked.empty else {})})
    return {"success": all(r["success"] for r in results), "rows": len(frame), "results": results}
