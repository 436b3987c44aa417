"""``task: causal_lm``: instruction-tune a decoder (LoRA by default), score it, merge it.

Training (in the child process, dispatched from ``tuneline.training.fine_tune``): reads
``prepared/<key>/{train,validation}`` (masked examples from ``tuneline.instructions``)
and the base model folder; writes checkpoints to ``candidates/<key>/checkpoints/`` (same
CheckpointStore as classification: resume works the same way), then ``candidates/<key>/model``
and ``training.json``. With ``model.method: lora`` the model folder is a PEFT adapter
(adapter_config.json, adapter_model.safetensors) plus the tokenizer; with ``full`` it is a
plain ``save_pretrained`` folder.

Evaluation: loss and perplexity on the test split for the base model and the candidate
(``evaluations/<key>/metrics.json``), the gate on ``perplexity`` (lower is better) or
``perplexity_improvement``, and a few greedy generations from test prompts.

Registration with ``register.merge``: ``candidates/<key>/registrable/`` = the adapter folder
plus ``merged/`` (the adapter folded into the base weights; loads with plain transformers).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from tuneline.base_models import EMBEDDED_GGUF, resolve_base_model
from tuneline.config import FinetuneConfig, TrainingMethod
from tuneline.errors import DataError
from tuneline.fingerprints import content_key, folder_fingerprint
from tuneline.instructions import IGNORE_INDEX
from tuneline.preprocess import load_split, load_test_split
from tuneline.storage import Storage

LLAMA_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]  # Llama-style decoders (SmolLM2)
MODEL_COLUMNS = ["input_ids", "attention_mask", "labels"]
EVAL_VERSION = 1
HUB_NAMES = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def base_model_name(cfg: FinetuneConfig) -> str:
    """What an adapter's ``base_model_name_or_path`` says: the hub id of an embedded model, else the path given.

    Not the local cache path: the adapter's bytes (and so its fingerprint) stay the same on every machine.
    """
    if cfg.model.base in EMBEDDED_GGUF:
        return HUB_NAMES.get(EMBEDDED_GGUF[cfg.model.base][2], cfg.model.base)
    return cfg.model.base


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def load_causal_lm(folder: Path, base: Path | None = None):
    """A model for inference: a plain folder, or an adapter folder applied to ``base``."""
    import torch
    from transformers import AutoModelForCausalLM

    if is_adapter(folder):
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        return PeftModel.from_pretrained(model, folder).eval()
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


# -- training (the child process) ------------------------------------------------------------

def build_trainable(cfg: FinetuneConfig, base: Path):
    """The base decoder, wrapped with LoRA adapters unless ``model.method: full``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if cfg.model.method != TrainingMethod.lora:
        return model
    from peft import LoraConfig, get_peft_model

    lora = cfg.model.lora
    settings = LoraConfig(task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.target_modules or LLAMA_ATTENTION))
    model = get_peft_model(model, settings)
    model.peft_config["default"].base_model_name_or_path = base_model_name(cfg)
    return model


def masked_batches(tokenizer):
    """Pads input_ids with the pad token and labels with -100 (padding never counts in the loss)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


def causal_lm_setup(cfg: FinetuneConfig, prepared: dict, storage: Storage, store, plan: dict, precision: str,
                    callbacks: list):
    """The causal-LM part of the shared training loop (``tuneline.training.fine_tune``)."""
    from transformers import AutoTokenizer, Trainer

    from tuneline.training import TrainerSetup, training_arguments

    base = resolve_base_model(cfg.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_set = load_split(storage, prepared, "train").select_columns(MODEL_COLUMNS)
    eval_set = load_split(storage, prepared, "validation")
    eval_set = eval_set.select_columns(MODEL_COLUMNS) if eval_set is not None else None
    trainer = Trainer(
        model=build_trainable(cfg, base),
        args=training_arguments(cfg, store.local, precision, eval_set is not None, plan["batch_size"],
                                plan["gradient_accumulation"]),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=masked_batches(tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
    )

    def save_folder(folder: Path) -> None:
        trainer.model.save_pretrained(folder)  # adapter only for a PeftModel; safetensors, no pickles
        tokenizer.save_pretrained(folder)

    def extra_result(output) -> dict:
        eval_loss = None
        if eval_set is not None:  # the validation score a sweep ranks trials by, at the final weights
            evals = [h for h in trainer.state.log_history if "eval_loss" in h]
            last = evals[-1] if evals and evals[-1].get("step") == output.global_step else trainer.evaluate()
            eval_loss = last["eval_loss"]
        return {
            "adapter": cfg.model.method == TrainingMethod.lora,
            "eval_loss": eval_loss,
            "validation_metrics": ({"loss": eval_loss, "perplexity": safe_exp(eval_loss)}
                                   if eval_loss is not None else None),
        }

    return TrainerSetup(trainer, save_folder, extra_result)


def safe_exp(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # perplexity; capped so a diverged run reports a number, not inf


# -- evaluation ------------------------------------------------------------------------------

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
        raise DataError("the test split has no response tokens (raise model.max_length)")
    loss = total / tokens
    return {"loss": loss, "perplexity": safe_exp(loss), "tokens": tokens}


def generate_answers(model, tokenizer, dataset, count: int, max_new_tokens: int) -> list[dict]:
    """Greedy answers to the first ``count`` test prompts, beside the reference answers."""
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


def score_causal_lm(storage: Storage, model_dir: Path, model_fingerprint: str, prepared: dict,
                    cfg: FinetuneConfig, reuse: bool = True) -> tuple[dict, bool]:
    """Test loss / perplexity and generations of one model (plain or adapter), cached per (model, data)."""
    from transformers import AutoTokenizer

    base = resolve_base_model(cfg.model.base)
    settings = (cfg.evaluation.generations, cfg.evaluation.max_new_tokens)
    key = f"evaluations/{content_key(model_fingerprint, prepared['key'], settings, EVAL_VERSION)}/metrics.json"
    if reuse and storage.exists(key):
        return storage.read_json(key), True
    test_set = load_test_split(storage, prepared)
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    import torch

    model = load_causal_lm(model_dir, base).to("cuda" if torch.cuda.is_available() else "cpu")
    scores = response_loss(model, test_set, tokenizer)
    scores["generations"] = generate_answers(model, tokenizer, test_set, *settings)
    scores["support"] = len(test_set)
    storage.write_json(key, scores)
    return scores, False


def with_improvement(scores: dict, base_scores: dict) -> dict:
    """The candidate's metrics beside the base model's: the gate metrics plus the before/after pair."""
    return {
        "loss": scores["loss"],
        "perplexity": scores["perplexity"],
        "perplexity_improvement": (base_scores["perplexity"] - scores["perplexity"]) / base_scores["perplexity"],
        "base_loss": base_scores["loss"],
        "base_perplexity": base_scores["perplexity"],
        "support": scores["support"],
        "response_tokens": scores["tokens"],
        "generations": [{**g, "base_output": b["output"]}
                        for g, b in zip(scores["generations"], base_scores["generations"])],
    }


def causal_champion(storage: Storage, cfg: FinetuneConfig, prepared: dict, trained: dict,
                    base_scores: dict) -> dict | None:
    """The version at the champion alias, scored on the same test split when it shares the base model."""
    from tuneline.registry import Registry, version_dir

    manifest = Registry(storage).aliased_manifest(cfg.name, cfg.evaluation.champion_alias)
    if manifest is None:
        return None
    version = manifest["version"]
    champion = {"alias": cfg.evaluation.champion_alias, "version": version}
    trained_from = (manifest.get("training") or {}).get("model_fingerprint")  # the adapter, with merge too
    if trained["model_fingerprint"] in (manifest["model_fingerprint"], trained_from):
        return {**champion, "is_candidate": True}
    base_fp = folder_fingerprint(str(resolve_base_model(cfg.model.base)))
    if manifest.get("task") != "causal_lm" or (manifest.get("base_model") or {}).get("fingerprint") != base_fp:
        return {**champion, "metrics": None, "why": "another task or base model"}
    scores, _ = score_causal_lm(storage, storage.local_dir(f"{version_dir(cfg.name, version)}/model"),
                                manifest["model_fingerprint"], prepared, cfg)
    return {**champion, "metrics": with_improvement(scores, base_scores)}


def evaluate_causal_candidate(storage: Storage, prepared: dict, trained: dict, cfg: FinetuneConfig) -> dict:
    """Base model and candidate on the same test split; the gate; generations of both."""
    from tuneline.evaluation import gate_decision
    from tuneline.metrics import headline

    base = resolve_base_model(cfg.model.base)
    base_scores, _ = score_causal_lm(storage, base, folder_fingerprint(str(base)), prepared, cfg)
    scores, reused = score_causal_lm(storage, storage.local_dir(f"{trained['key']}/model"),
                                     trained["model_fingerprint"], prepared, cfg, reuse=cfg.cache)
    metrics = with_improvement(scores, base_scores)
    champion = causal_champion(storage, cfg, prepared, trained, base_scores)
    if champion and champion.get("is_candidate"):
        champion["metrics"] = metrics
    return {
        "metrics": metrics,
        "champion_metrics": headline(champion["metrics"]) if champion and champion.get("metrics") else None,
        "gate": gate_decision(metrics, champion, cfg),
        "reused": reused,
    }


# -- registration ----------------------------------------------------------------------------

def registrable_folder(storage: Storage, trained: dict, cfg: FinetuneConfig) -> Path:
    """The folder to register: the candidate's model folder, plus ``merged/`` when ``register.merge``
    and the candidate is an adapter. Built once per candidate under ``candidates/<key>/registrable``."""
    if not (cfg.register.merge and trained.get("adapter")):
        return storage.local_dir(f"{trained['key']}/model")
    prefix = f"{trained['key']}/registrable"
    if not storage.exists(f"{prefix}/merged/config.json"):
        from transformers import AutoTokenizer

        adapter = storage.local_dir(f"{trained['key']}/model")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "registrable"
            merged = load_causal_lm(adapter, resolve_base_model(cfg.model.base)).merge_and_unload()
            merged.save_pretrained(folder / "merged")
            AutoTokenizer.from_pretrained(adapter).save_pretrained(folder / "merged")
            for path in adapter.iterdir():
                if path.is_file():
                    (folder / path.name).write_bytes(path.read_bytes())
            storage.put_dir(folder, prefix)
    return storage.local_dir(prefix)
