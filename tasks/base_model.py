"""Before the stages: the Hub token (from a Prefect Secret block, if the config names one) and the base
model pinned, so every stage of the run sees the same weights (a Hub branch -> its commit, a registry
alias -> its version). A plain function the flows call first, not a stage of its own."""

from __future__ import annotations

import os

from prefect import get_run_logger

from tuneline.config import FinetuneConfig
from tuneline.errors import redact_exception
from tuneline.models.base import pin_base


def pin_base_model(config: FinetuneConfig) -> FinetuneConfig:
    if config.model.token_secret:
        from prefect.blocks.system import Secret

        # Only the download reads it (huggingface_hub takes HF_TOKEN); it is never logged or stored.
        os.environ["HF_TOKEN"] = Secret.load(config.model.token_secret).get()
    try:
        pinned = pin_base(config.model, config.storage_root())
    except Exception as err:  # an s3:// or registry: base can fail with the endpoint URL in the message
        redact_exception(err)
        raise
    if (pinned["base"], pinned["revision"]) != (config.model.base, config.model.revision):
        get_run_logger().info("base model %s pinned to %s%s", config.model.base, pinned["base"],
                              f" at {pinned['revision']}" if pinned["revision"] else "")
    return config.model_copy(update={"model": config.model.model_copy(update=pinned)})
