"""tuneline: fine-tune pretrained transformers through a Prefect pipeline.

The core library (config, storage, data, training, evaluation, registry) knows
nothing of Prefect; ``tasks/`` and ``flows/`` wrap it.
"""

import os as _os

# Defaults for every entry point (CLI, Prefect worker, tests): no analytics, no progress bars in
# logs. An explicit environment value wins. The Hub is used for ORG/NAME bases unless HF_HUB_OFFLINE=1.
for _key, _value in {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}.items():
    _os.environ.setdefault(_key, _value)

__all__ = ["load_model"]


def __getattr__(name: str):
    """``tuneline.load_model`` on first use: importing the package stays cheap."""
    if name == "load_model":
        from tuneline.loading import load_model

        return load_model
    raise AttributeError(f"module 'tuneline' has no attribute {name!r}")
