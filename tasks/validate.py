"""Task: run the great-expectations suite on the snapshot; store the report; stop on failure."""

from prefect import get_run_logger

from tasks import artifacts
from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.storage import open_storage
from tuneline.results import Dataset, Validated
from tuneline.stages.validate import report_key, validate_dataset


@stage("validate")
def validate(config: FinetuneConfig, dataset: Dataset) -> Validated:
    storage = open_storage(config.storage_root())
    try:
        checked = validate_dataset(storage, dataset, config)
    finally:  # passed or failed, the run page shows the stored report
        key = report_key(dataset, config)
        if storage.exists(key):
            artifacts.validation_report(config.name, storage.read_json(key), storage.uri(key))
    get_run_logger().info("validation: all %d expectations met; report %s", checked.expectations, checked.report_uri)
    return checked
