"""Task: fine-tune the base model in a child process, resuming from its newest checkpoint.

Tagged ``gpu-train``: a tag concurrency limit of that name (infra/setup_prefect.py) caps how many
trainings hold the GPUs at once, across all flow runs, while the other stages run freely.
"""

from prefect import get_run_logger
from prefect.runtime import flow_run

from tasks import artifacts
from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.storage import open_storage
from tuneline.results import Prepared, Trained
from tuneline.tracking import run_url
from tuneline.training.launcher import train_candidate

GPU_TAG = "gpu-train"


@stage("train")
def train(config: FinetuneConfig, prepared: Prepared) -> Trained:
    logger = get_run_logger()
    progress = artifacts.TrainingProgress(config.name)
    trained = train_candidate(open_storage(config.storage_root()), prepared, config, log_line=logger.info,
                              run_id=flow_run.get_id(), on_progress=progress)
    progress.finish(trained.model_dump())
    mlflow_run = run_url(trained.mlflow_run_id, trained.mlflow_experiment_id) if trained.mlflow_run_id else None
    artifacts.training_curves(config.name, trained.model_dump(), config.evaluation.metric.value, mlflow_run)
    logger.info(
        "trained %d steps (resumed from %d) in %.1fs on %s, %s: %s -> %s", trained.global_step,
        trained.resumed_from_step, trained.train_seconds, trained.device, trained.precision,
        artifacts.throughput_line(trained.model_dump()), trained.model_uri,
    )
    if trained.tensorboard_uri:
        logger.info("TensorBoard event files: %s (view: tensorboard --logdir %s)", trained.tensorboard_uri,
                    trained.tensorboard_uri)
    if mlflow_run:
        logger.info("MLflow run: %s", mlflow_run)
    return trained


train = train.with_options(tags={GPU_TAG})
