"""Task: split the snapshot, fit on the training split, encode each split (the prepare stage)."""

from prefect import get_run_logger

from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.results import Dataset, Prepared
from tuneline.stages.prepare import prepare_splits
from tuneline.storage import open_storage


@stage("preprocess")
def preprocess(config: FinetuneConfig, dataset: Dataset) -> Prepared:
    prepared = prepare_splits(open_storage(config.storage_root()), dataset, config)
    get_run_logger().info("splits %s, fitted %s -> %s", prepared.counts, prepared.fitted, prepared.uri)
    return prepared
