"""The fine-tuning pipeline: ingest -> validate -> preprocess -> train -> evaluate -> register.

Each stage is a Prefect task that reads and writes URIs in the storage root and
passes a small typed result on (``tuneline.results``); the flow returns the run summary (see ``tuneline.summary``).
"""

from __future__ import annotations

from prefect import flow

from flows.approval import ask_approval
from flows.stages import StageLog, install_redaction
from tasks.base_model import pin_base_model
from tasks.evaluate import evaluate
from tasks.ingest import ingest
from tasks.preprocess import preprocess
from tasks.register import register
from tasks.train import train
from tasks.validate import validate
from tuneline.access import check_allowed_roots
from tuneline.config import FinetuneConfig
from tuneline.errors import GateFailed
from tuneline.summary import run_summary
from tuneline.tracking import check_reporting


@flow(name="finetune", log_prints=True)
def finetune(config: FinetuneConfig) -> dict:
    """Fine-tune ``config.model.base`` on ``config.data`` and register the result as ``config.name``."""
    install_redaction()
    check_allowed_roots(config)  # before anything reads data or a model
    check_reporting(config)  # training.report_to: its packages and MLFLOW_TRACKING_URI
    config = pin_base_model(config)
    stages = StageLog(config.retries)
    dataset = stages.run(ingest, config)
    stages.run(validate, config, dataset)
    prepared = stages.run(preprocess, config, dataset)
    trained = stages.run(train, config, prepared)
    evaluation = stages.run(evaluate, config, prepared, trained)
    registered = stages.run(register, config, dataset, prepared, trained, evaluation)
    if registered.awaits_approval:  # evaluation.approval: required: the run pauses until a person decides
        registered = ask_approval(stages, config, evaluation, registered)
    summary = run_summary(config, dataset, evaluation, registered, stages.stages)
    if not evaluation.gate["passed"]:
        raise GateFailed(summary["error"], summary=summary)
    return summary
