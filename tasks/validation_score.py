"""Task: score a trained candidate on the validation split (how a sweep ranks its trials)."""

from prefect import get_run_logger

from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.storage import open_storage
from tuneline.results import Prepared, Trained, ValidationScore
from tuneline.stages.sweep import validation_scores


@stage("validation-score")
def validation_score(config: FinetuneConfig, prepared: Prepared, trained: Trained) -> ValidationScore:
    scores = validation_scores(open_storage(config.storage_root()), prepared, trained, config)
    get_run_logger().info("validation %s = %.4f", scores.metric, scores.value)
    return scores
