"""``tuneline.load_model("NAME@production")``: a registered model, ready to predict.

Reads the registry in the storage root (argument, else $TUNELINE_STORAGE, else
./.tuneline); writes a verified copy to the local cache ($TUNELINE_CACHE, default
~/.cache/tuneline/models/<name>/<version>) the first time a version is loaded.
``load_model_folder`` loads any model folder tuneline writes (a full model, or a LoRA
adapter over its base model) and is what evaluation uses too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tuneline.base_models import resolve_base_model
from tuneline.config import DEFAULT_STORAGE
from tuneline.registry import Registry
from tuneline.storage import open_storage


def cache_root() -> Path:
    return Path(os.environ.get("TUNELINE_CACHE", "~/.cache/tuneline")).expanduser()


def pull_cached(ref: str, storage_root: str | None = None) -> tuple[Path, dict]:
    """The verified local folder of ``ref`` and its manifest, pulling it once."""
    registry = Registry(open_storage(storage_root or os.environ.get("TUNELINE_STORAGE") or DEFAULT_STORAGE))
    name, version = registry.resolve(ref)
    manifest = registry.manifest(name, version)
    folder = cache_root() / "models" / name / f"{version:06d}-{manifest['model_fingerprint'][:12]}"
    if not folder.exists():
        registry.pull(f"{name}:{version}", folder)
    return folder, manifest


ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_folder(folder: Path) -> bool:
    """A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) rather than a full model."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def is_causal_lm_folder(folder: Path) -> bool:
    """A causal_lm model folder: a CAUSAL_LM adapter, or a config whose architecture is ``*ForCausalLM``."""
    folder = Path(folder)
    if is_adapter_folder(folder):
        return json.loads((folder / ADAPTER_CONFIG).read_text()).get("task_type") == "CAUSAL_LM"
    config = folder / "config.json"
    return config.is_file() and any(a.endswith("ForCausalLM")
                                    for a in json.loads(config.read_text()).get("architectures") or [])


def load_model_folder(folder: Path):
    """(model, tokenizer) from a full model folder, or from a LoRA adapter folder applied to its base model.

    An adapter folder also holds the task model's ``config.json`` (labels, problem type, target
    scaling); the base is ``base_model_name_or_path`` from ``adapter_config.json``, resolved
    locally (an embedded name or a folder; the hub is never contacted).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if is_causal_lm_folder(folder):  # task: causal_lm (adapter over its base, or a full decoder)
        from tuneline.causal_lm import load_causal_lm

        base = json.loads((folder / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] \
            if is_adapter_folder(folder) else None
        return load_causal_lm(folder, resolve_base_model(base) if base else None), tokenizer
    if not is_adapter_folder(folder):
        return AutoModelForSequenceClassification.from_pretrained(folder), tokenizer
    from peft import PeftModel

    base = resolve_base_model(json.loads((folder / ADAPTER_CONFIG).read_text())["base_model_name_or_path"])
    model = AutoModelForSequenceClassification.from_pretrained(base, config=AutoConfig.from_pretrained(folder))
    return PeftModel.from_pretrained(model, folder), tokenizer


def load_model(ref: str, storage_root: str | None = None):
    """(model, tokenizer) for ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` (full models and LoRA adapters)."""
    folder, _ = pull_cached(ref, storage_root)
    return load_model_folder(folder)
