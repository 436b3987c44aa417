"""``task: causal_lm``: instruction-tune a decoder (LoRA by default), score it against its base, merge it.

Reads prompt/response (or chat) rows (``tuneline.objectives.chat``) and the base decoder folder
(default: the embedded SmolLM2-135M-Instruct). The loss covers response tokens only. The model
folder is a PEFT adapter (``model.method: lora``) or a plain ``save_pretrained`` folder (``full``).

Batching (``training.batching``; ``auto`` is ``packed``): packed training and validation batches are the rows
concatenated without padding, attention kept within each row (``PackedBatches``); ``padded`` and ``length_grouped``
pad each batch to its longest row. Test scoring (``response_loss``) always pads: it sums every token's loss exactly.

Scoring: response-token loss and perplexity on a split, and on the test split a few greedy
generations; the base model is the reference scored beside the candidate, so the gate can use
``perplexity_improvement = (base - tuned) / base``. With ``register.merge`` the registered folder
is the adapter plus ``merged/`` (the adapter folded into the base weights; plain transformers),
built once under ``candidates/<key>/registrable/``; ``registrable-COMPLETE`` beside it is written last.

Predictions: ``generated``, the greedy answer to each row's prompt (the prompt column, or a chat column
whose trailing assistant turn, if any, is dropped), rendered with the chat template as in training,
batched with left padding; prompts longer than ``model.max_length`` tokens keep their end.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tuneline import keys
from tuneline.data.expectations import check_entry
from tuneline.data.splits import INPUT, SPLITS, STRATUM
from tuneline.errors import ConfigError, DataError
from tuneline.models.base import ResolvedBase, portable_base_name, resolve_base, resolve_base_model
from tuneline.objectives.base import (HIGHER, LOWER, Objective, PredictionInputs, TrainerParts, adapter_base,
                                      refuse_text_pair)
from tuneline.objectives.chat import (IGNORE_INDEX, as_messages, conversations, prompt_key, render_prompt,
                                      tokenize_instructions)

if TYPE_CHECKING:
    import pandas as pd

    from tuneline.config import FinetuneConfig
    from tuneline.results import Prepared, Trained
    from tuneline.storage import Storage

MODEL_COLUMNS = ["input_ids", "attention_mask", "labels"]
PROMPT, RESPONSE = "_prompt", "_response"  # derived columns the expectations check
ADAPTER_CONFIG = "adapter_config.json"
MERGED_MARKER = "COMPLETE"  # registrable-COMPLETE, written last: a folder without it is rebuilt


class CausalLM(Objective):
    name = "causal_lm"
    description = "instruction tuning of a decoder; loss on the response tokens only"
    pipeline_tag = "text-generation"
    metrics = {"perplexity": LOWER, "perplexity_improvement": HIGHER}
    default_metric = "perplexity_improvement"
    defaults = {"model": {"base": "SmolLM2-135M-Instruct", "method": "lora"}}
    methods = ("lora", "full")
    merges_adapters = True
    stops_early = False
    batchings = ("packed", "length_grouped", "padded")
    input_noun = "prompts"

    def config_problems(self, cfg: FinetuneConfig) -> list[str]:
        problems = super().config_problems(cfg)
        if cfg.register.merge and cfg.model.method.value != "lora":
            problems.append("register.merge: only with model.method: lora (a full model has nothing to merge)")
        return problems

    def ranking_metric(self, cfg: FinetuneConfig) -> tuple[str, bool]:
        return "perplexity", True  # ranks like perplexity_improvement: every trial shares the base model

    # -- validate and split ----------------------------------------------------------------------
    def input_columns(self, cfg: FinetuneConfig) -> list[str]:
        data = cfg.data
        return [data.messages_column] if data.messages_column else [data.prompt_column, data.response_column]

    def derive(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> pd.DataFrame:
        """Rows are grouped and split by prompt: a prompt never lands in two splits."""
        frame = frame.copy()
        prompts, responses = conversations(frame, cfg.data)
        frame[PROMPT] = [None if p is None else "\n".join(t["content"] for t in p) for p in prompts]
        frame[RESPONSE] = responses
        frame[INPUT] = [prompt_key(p) for p in prompts]
        frame[STRATUM] = "all"
        return frame

    def expectations(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> list:
        import great_expectations.expectations as gxe

        limits = cfg.validation
        return [expectation for column in (PROMPT, RESPONSE) for expectation in (
            gxe.ExpectColumnValuesToNotBeNull(column=column),
            gxe.ExpectColumnValueLengthsToBeBetween(column=column, min_value=limits.min_text_length,
                                                    max_value=limits.max_text_length))]

    def report_column(self, column: str | None, cfg: FinetuneConfig) -> str | None:
        data = cfg.data
        if column == PROMPT:
            return data.messages_column or data.prompt_column
        if column == RESPONSE:
            return data.messages_column or data.response_column
        return column

    def checks(self, frame: pd.DataFrame, cfg: FinetuneConfig, before: list[dict] | None = None) -> list[dict]:
        """Chat rows: a list of {role, content} ending with the assistant's answer."""
        column = cfg.data.messages_column
        if not column:
            return []
        bad = frame.loc[frame[RESPONSE].isna(), column]
        return [check_entry("expect_messages_to_end_with_an_assistant_turn", column, bad, len(frame),
                            before[0] if before else None)]

    # -- prepare ---------------------------------------------------------------------------------
    def tokenizer(self, base: Path):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def encode(self, rows: pd.DataFrame, cfg: FinetuneConfig, tokenizer, fitted: dict):
        return tokenize_instructions(rows, cfg, tokenizer)

    def encoded_stats(self, splits: dict, cfg: FinetuneConfig) -> dict:
        """Response tokens the loss covers; every response cut off by model.max_length is an error."""
        learned = [sum(label != IGNORE_INDEX for label in labels)
                   for split in SPLITS if splits.get(split) is not None for labels in splits[split]["labels"]]
        if learned and not any(learned):
            raise DataError(f"model.max_length={cfg.model.max_length} cuts off every response: raise it")
        return {"response_tokens": sum(learned), "rows_without_response_tokens": sum(n == 0 for n in learned)}

    # -- train -----------------------------------------------------------------------------------
    def trainer_parts(self, cfg: FinetuneConfig, base: Path, prepared: Prepared, train_set, tokenizer) -> TrainerParts:
        model = build_trainable(cfg, base)

        def save_folder(trained_model, folder: Path) -> None:
            trained_model.save_pretrained(folder)  # adapter only for a PeftModel; safetensors, no pickles
            tokenizer.save_pretrained(folder)

        packed = self.batching(cfg) == "packed"
        collator = PackedBatches() if packed else masked_batches(tokenizer)  # length_grouped: the loop's sampler
        return TrainerParts(model=model, collator=collator, compute_metrics=None,
                            check_model=check_packing if packed else None,
                            save_folder=save_folder, adapter=cfg.model.method.value == "lora",
                            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
                            model_columns=MODEL_COLUMNS)

    def describe_validation(self, metrics: dict) -> dict:
        return {**metrics, "perplexity": safe_exp(metrics["loss"])} if "loss" in metrics else metrics

    # -- evaluate --------------------------------------------------------------------------------
    def score_settings(self, cfg: FinetuneConfig):
        return [cfg.evaluation.generations, cfg.evaluation.max_new_tokens]

    def score(self, model_dir: Path, dataset, prepared: Prepared, cfg: FinetuneConfig, split: str) -> dict:
        """Response loss / perplexity on the split; on the test split also greedy answers to a few prompts."""
        import torch

        base = resolve_base(cfg.model, cfg.storage_root()).folder
        tokenizer = self.tokenizer(base)
        model = load_causal_lm(model_dir, base).to("cuda" if torch.cuda.is_available() else "cpu")
        scores = response_loss(model, dataset, tokenizer)
        if split == "test":
            scores["generations"] = generate_answers(model, tokenizer, dataset, cfg.evaluation.generations,
                                                     cfg.evaluation.max_new_tokens)
        scores["support"] = len(dataset)
        return scores

    def reference_model(self, cfg: FinetuneConfig) -> ResolvedBase | None:
        return resolve_base(cfg.model, cfg.storage_root())

    def with_reference(self, metrics: dict, reference: dict | None) -> dict:
        """The candidate's metrics beside the base model's: the gate metrics plus the before/after pair."""
        base = reference or metrics
        combined = {
            "loss": metrics["loss"],
            "perplexity": metrics["perplexity"],
            "perplexity_improvement": (base["perplexity"] - metrics["perplexity"]) / base["perplexity"],
            "base_loss": base["loss"],
            "base_perplexity": base["perplexity"],
            "support": metrics["support"],
            "response_tokens": metrics["tokens"],
        }
        if "generations" in metrics:
            combined["generations"] = [{**g, "base_output": b["output"]}
                                       for g, b in zip(metrics["generations"], base.get("generations", []))]
        return combined

    def champion_problem(self, manifest: dict, prepared: Prepared, cfg: FinetuneConfig) -> str | None:
        base_identity = resolve_base(cfg.model, cfg.storage_root()).identity
        if manifest.get("task") != self.name or (manifest.get("base_model") or {}).get("fingerprint") != base_identity:
            return "another task or base model"
        return None

    # -- register and load -----------------------------------------------------------------------
    def registrable_folder(self, storage: Storage, trained: Trained, cfg: FinetuneConfig) -> Path:
        """The candidate's model folder, plus ``merged/`` when ``register.merge`` and the candidate is an adapter."""
        model_key = keys.candidate_model(trained.key)
        if not (cfg.register.merge and trained.adapter):
            return storage.local_dir(model_key)
        prefix = keys.registrable(trained.key)
        marker = f"{prefix}-{MERGED_MARKER}"  # beside the folder: the folder holds model files only
        if not storage.exists(marker):
            adapter = storage.local_dir(model_key)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "registrable"
                merged = load_causal_lm(adapter, resolve_base(cfg.model, cfg.storage_root()).folder).merge_and_unload()
                merged.save_pretrained(folder / "merged")
                self.tokenizer(adapter).save_pretrained(folder / "merged")
                for path in adapter.iterdir():
                    if path.is_file():
                        (folder / path.name).write_bytes(path.read_bytes())
                storage.put_dir(folder, prefix)
            storage.write_bytes(marker, b"merged\n")
        return storage.local_dir(prefix)

    def load(self, folder: Path):
        from transformers import AutoTokenizer

        folder = Path(folder)
        base = None
        if (folder / ADAPTER_CONFIG).is_file():
            settings = json.loads((folder / ADAPTER_CONFIG).read_text())
            base = resolve_base_model(settings["base_model_name_or_path"], settings.get("revision"))
        return load_causal_lm(folder, base), AutoTokenizer.from_pretrained(folder)

    def load_example(self, folder: str, cfg: FinetuneConfig, adapter: bool) -> str:
        """A full model, the merged copy (``register.merge``), or the adapter over its base; one greedy answer."""
        lines = ["import torch", "from transformers import AutoModelForCausalLM, AutoTokenizer", ""]
        if adapter and cfg.register.merge:
            lines += [f"folder = {folder!r} + '/merged'  # the adapter folded into its base (the adapter is in "
                      f"{folder!r} itself)", "model = AutoModelForCausalLM.from_pretrained(folder).eval()"]
        elif adapter:
            comments, base = adapter_base(cfg)
            lines[1:1] = ["from peft import PeftModel"]
            lines += [f"folder = {folder!r}", *comments,
                      f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base}), folder).eval()"]
        else:
            lines += [f"folder = {folder!r}", "model = AutoModelForCausalLM.from_pretrained(folder).eval()"]
        return "\n".join([
            *lines, "tokenizer = AutoTokenizer.from_pretrained(folder)", "",
            'messages = [{"role": "user", "content": "Replace this with your instruction."}]',
            "if tokenizer.chat_template:  # as in training: the chat template, else the prompt on its own line",
            "    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)",
            "else:",
            '    prompt = messages[-1]["content"] + "\\n"',
            'encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")',
            "with torch.inference_mode():",
            f"    output = model.generate(**encoded, max_new_tokens={cfg.evaluation.max_new_tokens}, do_sample=False,",
            "                            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)",
            'print(tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True))'])

    def claims(self, folder_config: dict, adapter_config: dict | None) -> bool:
        if adapter_config is not None:
            return adapter_config.get("task_type") == "CAUSAL_LM"
        return any(a.endswith("ForCausalLM") for a in folder_config.get("architectures") or [])

    # -- predict ---------------------------------------------------------------------------------
    def prediction_columns(self, data: dict, text_column: str | None = None,
                           text_pair_column: str | None = None) -> dict[str, str]:
        """The chat column it was trained on, else the prompt column; ``text_column`` names a prompt column."""
        refuse_text_pair(self.name, text_pair_column)
        if text_column or not data.get("messages_column"):
            return {"prompt": text_column or data["prompt_column"]}
        return {"messages": data["messages_column"]}

    def predict(self, model, tokenizer, rows: pd.DataFrame, inputs: PredictionInputs) -> pd.DataFrame:
        import pandas as pd
        import torch

        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = tokenizer.truncation_side = "left"  # generation continues each row's last token
        texts = [render_prompt(tokenizer, prompt) for prompt in prediction_prompts(rows, inputs.columns)]
        encoded = tokenizer(texts, add_special_tokens=False, padding=True, truncation=True,
                            max_length=inputs.max_length, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=inputs.max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        answers = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        return pd.DataFrame({"generated": [answer.strip() for answer in answers]}, index=rows.index)


def prediction_prompts(rows: pd.DataFrame, columns: dict[str, str]) -> list[list[dict]]:
    """Each row's prompt as chat turns: a user turn from the prompt column, or the chat column's turns."""
    if "prompt" in columns:
        return [[{"role": "user", "content": str(value)}] for value in rows[columns["prompt"]]]
    prompts = []
    for index, value in rows[columns["messages"]].items():
        turns = as_messages(value)
        if turns and turns[-1]["role"] == "assistant":
            turns = turns[:-1]  # a training-style row: answer the question anew
        if not turns:
            raise DataError(f"column {columns['messages']!r}, row {index}: not a chat (a list of {{role, content}} "
                            f"with a turn to answer): {str(value)[:80]!r}")
        prompts.append(turns)
    return prompts


def load_causal_lm(folder: Path, base: Path | None = None):
    """A model for inference: a plain folder, or an adapter folder applied to ``base``."""
    import torch
    from transformers import AutoModelForCausalLM

    if (Path(folder) / ADAPTER_CONFIG).is_file():
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        return PeftModel.from_pretrained(model, folder).eval()
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def build_trainable(cfg: FinetuneConfig, base: Path):
    """The base decoder, wrapped with LoRA adapters unless ``model.method: full``."""
    import torch
    from transformers import AutoModelForCausalLM

    from tuneline.models.methods import apply_method

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model, _ = apply_method(model, cfg.model, [], "CAUSAL_LM")
    if cfg.model.method.value == "lora":
        model.peft_config["default"].base_model_name_or_path = portable_base_name(cfg.model.base)
        model.peft_config["default"].revision = cfg.model.revision  # the pinned commit of a Hub base
    return model


def masked_batches(tokenizer):
    """Pads input_ids with the pad token and labels with -100 (padding never counts in the loss)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


class PackedBatches:
    """``training.batching: packed``: a batch's rows concatenated into one row of shape (1, total tokens), no padding.

    transformers' ``DataCollatorWithFlattening``: ``position_ids`` restart at 0 on each row, no ``attention_mask``,
    labels -100 on the prompt (as encoded) and on each row's first token (no row predicts from the row before it).
    The model's mask builder (``transformers.masking_utils``) reads the restarts as row boundaries and keeps attention
    within each row (sdpa, eager: a block-diagonal causal mask; flash attention: varlen over the rows), but only when
    the forward has no cache: with ``use_cache`` on (Llama's config default) it builds a cache even in training and
    ignores the restarts, and every row would attend to the rows before it. So each batch carries
    ``use_cache=False`` rather than relying on the Trainer's ``args.use_cache``. The loss is unchanged: the model
    sums the same response tokens' cross-entropy and the Trainer's ``num_items_in_batch`` counts ``labels[..., 1:]
    != -100`` either way. A plain class at module level: picklable for DataLoader workers.
    """

    def __init__(self):
        from transformers import DataCollatorWithFlattening

        self.flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)

    def __call__(self, features: list[dict]) -> dict:
        return {**self.flatten(features), "use_cache": False}


def check_packing(model) -> None:
    """Refuses ``training.batching: packed`` when this model, with its attention implementation, lets a packed row
    see the row before it: two rows run packed and the second alone must give the same logits (one tiny forward)."""
    import torch

    first, second = [5, 6, 7, 8], [9, 10, 11]
    batch = PackedBatches()([{"input_ids": first}, {"input_ids": second}])
    was_training = model.training
    model.eval()  # no dropout: the two forwards must be comparable
    try:
        with torch.no_grad():
            packed = model(**batch).logits[0, len(first):].float()
            alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0].float()
    finally:
        model.train(was_training)
    if not torch.allclose(packed, alone, rtol=1e-3, atol=1e-3 * float(alone.abs().max())):
        config = getattr(model, "config", None)
        raise ConfigError(
            f"training.batching: packed: this {getattr(config, 'model_type', 'model')} with attention "
            f"{getattr(config, '_attn_implementation', '?')} lets a packed row attend to the row before it; "
            "use training.batching: length_grouped (or another training.attention)")


def safe_exp(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # perplexity; capped so a diverged run reports a number, not inf


def response_loss(model, dataset, tokenizer, batch_size: int = 8) -> dict:
    """Mean negative log-likelihood per response token (prompt and padding excluded), and its exp."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset.select_columns(MODEL_COLUMNS), batch_size=batch_size,
                        collate_fn=masked_batches(tokenizer))
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(model.device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            targets = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets,
                                                    ignore_index=IGNORE_INDEX, reduction="sum")
            total += float(nll)
            tokens += int((targets != IGNORE_INDEX).sum())
    if tokens == 0:
        raise DataError("the split has no response tokens (raise model.max_length)")
    loss = total / tokens
    return {"loss": loss, "perplexity": safe_exp(loss), "tokens": tokens}


def generate_answers(model, tokenizer, dataset, count: int, max_new_tokens: int) -> list[dict]:
    """Greedy answers to the first ``count`` prompts, beside the reference answers."""
    import torch

    answers = []
    with torch.inference_mode():
        for row in dataset.select(range(min(count, len(dataset)))):
            encoded = tokenizer(row["prompt_text"], return_tensors="pt", add_special_tokens=False).to(model.device)
            output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            text = tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
            answers.append({"prompt_text": row["prompt_text"], "reference": row["reference"], "output": text.strip()})
    return answers
