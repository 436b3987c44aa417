"""Task: score one registered version on new labelled data; the result is stored beside the version."""

from prefect import get_run_logger

from tasks.policy import stage
from tuneline.metrics import headline
from tuneline.results import VersionEvaluation
from tuneline.stages.evaluate_version import evaluate_registered
from tuneline.storage import open_storage


@stage("evaluate-registered")
def evaluate_registered_version(storage_root: str, ref: str, data: str) -> VersionEvaluation:
    evaluation = evaluate_registered(open_storage(storage_root), ref, data)
    get_run_logger().info("%s on %s (%d rows, %s): %s%s -> %s", ref, data, evaluation.rows,
                          evaluation.dataset_fingerprint[:16], headline(evaluation.metrics),
                          " (stored earlier: reused)" if evaluation.reused else "", evaluation.uri)
    return evaluation
