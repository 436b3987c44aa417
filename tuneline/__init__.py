"""tuneline: fine-tune pretrained transformers through a Prefect pipeline.

The core library (config, storage, data, training, evaluation, registry) knows
nothing of Prefect; ``tasks/`` and ``flows/`` wrap it.
"""

import os as _os

# Defaults for every entry point (CLI, Prefect worker, tests): never contact the model
# hub, no analytics, no progress bars in logs. An explicit environment value wins.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}.items():
    _os.environ.setdefault(_key, _value)

from tuneline.loading import load_model  # noqa: E402  (after the environment defaults above)

__all__ = ["load_model"]
