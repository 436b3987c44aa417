"""``tuneline.load_model("NAME@production")``: a registered model, ready to predict.

Reads the registry in the storage root (argument, else $TUNELINE_STORAGE, else
./.tuneline); writes a verified copy to the local cache ($TUNELINE_CACHE, default
~/.cache/tuneline/models/<name>/<version>) the first time a version is loaded.
``load_model_folder`` loads any model folder tuneline writes (a full model, or an adapter
over its base model): the objective that wrote it (from its config files) loads it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tuneline import objectives
from tuneline.registry import Registry
from tuneline.storage import open_storage, storage_root_or_default


def cache_root() -> Path:
    return Path(os.environ.get("TUNELINE_CACHE", "~/.cache/tuneline")).expanduser()


def pull_cached(ref: str, storage_root: str | None = None) -> tuple[Path, dict]:
    """The verified local folder of ``ref`` and its manifest, pulling it once."""
    registry = Registry(open_storage(storage_root_or_default(storage_root)))
    name, version = registry.resolve(ref)
    manifest = registry.manifest(name, version)
    folder = cache_root() / "models" / name / f"{version:06d}-{manifest['model_fingerprint'][:12]}"
    if not folder.exists():
        registry.pull(f"{name}:{version}", folder)
    return folder, manifest


def load_model_folder(folder: Path, task: str | None = None):
    """(model, tokenizer) from a model folder tuneline wrote; ``task`` names its objective when known."""
    objective = objectives.get(task) if task else objectives.for_folder(folder)
    return objective.load(Path(folder))


def load_model(ref: str, storage_root: str | None = None):
    """(model, tokenizer) for ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` (full models and adapters)."""
    folder, manifest = pull_cached(ref, storage_root)
    return load_model_folder(folder, manifest.get("task"))
