"""Task: score the candidate on the test split and decide the gate."""

from prefect import get_run_logger

from tasks import artifacts
from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.metrics import headline
from tuneline.results import Evaluation, Prepared, Trained
from tuneline.stages.evaluate import evaluate_candidate
from tuneline.storage import open_storage


@stage("evaluate")
def evaluate(config: FinetuneConfig, prepared: Prepared, trained: Trained) -> Evaluation:
    evaluation = evaluate_candidate(open_storage(config.storage_root()), prepared, trained, config)
    gate = evaluation.gate
    get_run_logger().info("test metrics %s; champion %s; gate: %s (%s)", headline(evaluation.metrics),
                          evaluation.champion_metrics, gate["decision"], gate["reason"])
    artifacts.evaluation(config.name, evaluation.model_dump())
    return evaluation
