"""Task: run the great-expectations suite on the snapshot; store the report; stop on failure."""

from prefect import get_run_logger, task

from tasks.policy import RETRY
from tuneline.config import FinetuneConfig
from tuneline.fingerprints import content_key
from tuneline.ingest import load_dataset_frame
from tuneline.storage import open_storage
from tuneline.validation import raise_if_failed, validate_frame


@task(name="validate", **RETRY)
def validate(config: FinetuneConfig, dataset: dict) -> dict:
    storage = open_storage(config.storage_root())
    report = validate_frame(load_dataset_frame(storage, dataset), config)
    key = f"validation/{content_key(dataset['fingerprint'], config.data, config.validation)}/report.json"
    storage.write_json(key, report)
    passed = sum(r["success"] for r in report["results"])
    get_run_logger().info("validation: %d/%d expectations met; report %s", passed, len(report["results"]),
                          storage.uri(key))
    raise_if_failed(report, storage.uri(key))
    return {"report_uri": storage.uri(key), "success": True, "expectations": len(report["results"])}
