"""Task: run the great-expectations suite on the snapshot; store the report; stop on failure."""

from prefect import get_run_logger

from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.storage import open_storage
from tuneline.validation import validate_dataset


@stage("validate")
def validate(config: FinetuneConfig, dataset: dict) -> dict:
    checked = validate_dataset(open_storage(config.storage_root()), dataset, config)
    get_run_logger().info("validation: all %d expectations met; report %s", checked["expectations"],
                          checked["report_uri"])
    return checked
