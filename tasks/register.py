"""Task: register the gated candidate as a new immutable version."""

from prefect import get_run_logger
from prefect.runtime import flow_run

from tasks import artifacts
from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.results import Dataset, Evaluation, Prepared, Registered, Trained
from tuneline.stages.register import register_candidate
from tuneline.storage import open_storage


@stage("register")
def register(config: FinetuneConfig, dataset: Dataset, prepared: Prepared, trained: Trained,
             evaluation: Evaluation) -> Registered:
    storage = open_storage(config.storage_root())
    registered = register_candidate(storage, config, dataset, prepared, trained, evaluation, run_id=flow_run.get_id())
    logger = get_run_logger()
    if registered.registered:
        logger.info("registered %s version %s at %s", config.name, registered.version, registered.uri)
        if registered.awaits_approval:
            logger.info("promotion to %s awaits approval (evaluation.approval: required)",
                        config.evaluation.champion_alias)
    else:
        logger.warning("nothing registered: %s", registered.reason)
    artifacts.registration(config.name, registered.model_dump(), evaluation.gate)
    return registered
