"""Task: fine-tune the base model on the training split."""

from prefect import get_run_logger, task

from tasks.policy import RETRY
from tuneline.config import FinetuneConfig
from tuneline.storage import open_storage
from tuneline.training import train_candidate


@task(name="train", **RETRY)
def train(config: FinetuneConfig, prepared: dict) -> dict:
    trained = train_candidate(open_storage(config.storage_root()), prepared, config)
    get_run_logger().info(
        "trained %d steps in %.1fs (%s, %s, %.1f samples/s) -> %s", trained["global_step"], trained["train_seconds"],
        trained["device"], trained["precision"], trained["samples_per_second"] or 0, trained["model_uri"],
    )
    return trained
