"""Task: register the gated candidate as a new immutable version."""

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from tasks.policy import RETRY
from tuneline.config import FinetuneConfig
from tuneline.registration import register_candidate
from tuneline.storage import open_storage


@task(name="register", **RETRY)
def register(config: FinetuneConfig, dataset: dict, trained: dict, evaluation: dict) -> dict:
    storage = open_storage(config.storage_root())
    registered = register_candidate(storage, config, dataset, trained, evaluation, run_id=flow_run.get_id())
    logger = get_run_logger()
    if registered["registered"]:
        logger.info("registered %s version %s at %s", config.name, registered["version"], registered["uri"])
    else:
        logger.warning("nothing registered: %s", registered["reason"])
    return registered
