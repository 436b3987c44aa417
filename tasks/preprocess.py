"""Task: split the snapshot and tokenize each split."""

from prefect import get_run_logger

from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.preprocess import prepare_splits
from tuneline.storage import open_storage


@stage("preprocess")
def preprocess(config: FinetuneConfig, dataset: dict) -> dict:
    prepared = prepare_splits(open_storage(config.storage_root()), dataset, config)
    get_run_logger().info("splits %s, labels %s -> %s", prepared["counts"], prepared["labels"], prepared["uri"])
    return prepared
