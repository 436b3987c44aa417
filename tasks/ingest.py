"""Task: snapshot the configured data source into the storage root."""

from prefect import get_run_logger

from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.data.ingest import ingest_dataset
from tuneline.results import Dataset
from tuneline.storage import open_storage


@stage("ingest")
def ingest(config: FinetuneConfig) -> Dataset:
    dataset = ingest_dataset(config.data.source, open_storage(config.storage_root()), config.data.format.value,
                             reuse=config.cache, batch_rows=config.data.batch_rows)
    get_run_logger().info("dataset %s: %d rows -> %s", dataset.fingerprint[:16], dataset.rows, dataset.uri)
    return dataset
