"""Task: score the candidate on the test split and decide the gate."""

from prefect import get_run_logger

from tasks import artifacts
from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.metrics import headline
from tuneline.results import Evaluation, Prepared, Trained
from tuneline.stages.evaluate import evaluate_candidate
from tuneline.storage import open_storage
from tuneline.tracking import log_test_metrics


@stage("evaluate")
def evaluate(config: FinetuneConfig, prepared: Prepared, trained: Trained) -> Evaluation:
    evaluation = evaluate_candidate(open_storage(config.storage_root()), prepared, trained, config)
    gate = evaluation.gate
    logger = get_run_logger()
    logger.info("test metrics %s; champion %s; gate: %s (%s)", headline(evaluation.metrics),
                evaluation.champion_metrics, gate["decision"], gate["reason"])
    mlflow_run = log_test_metrics(config, trained, evaluation.metrics)  # training.report_to: mlflow
    if mlflow_run:
        logger.info("test metrics logged to MLflow run %s", mlflow_run)
    artifacts.evaluation(config.name, evaluation.model_dump())
    return evaluation
