"""Task: apply a person's decision on a pending promotion (``evaluation.approval: required``)."""

from prefect import get_run_logger
from prefect.runtime import flow_run

from tasks import artifacts
from tasks.policy import stage
from tuneline.config import FinetuneConfig
from tuneline.results import Evaluation, Registered
from tuneline.stages.register import decide_promotion
from tuneline.storage import open_storage


@stage("promote")
def promote(config: FinetuneConfig, evaluation: Evaluation, registered: Registered, decision: dict) -> Registered:
    decided = decide_promotion(open_storage(config.storage_root()), config, evaluation, registered, decision,
                               run_id=flow_run.get_id())
    get_run_logger().info("approval %s%s: version %s %s", decision["status"],
                          f" by {decision['decided_by']}" if decision.get("decided_by") else "", decided.version,
                          f"promoted to {decided.alias}" if decided.alias else f"not promoted ({decided.promotion_note})")
    artifacts.registration(config.name, decided.model_dump(), evaluation.gate)
    return decided
