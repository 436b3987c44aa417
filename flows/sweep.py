"""The sweep: one child flow run per grid point (train + validation score), then the best trial
(by its validation metric) is evaluated on the test split and is the only one registered.

Trials share ingest / validate / preprocess through the content-addressed stage outputs: the
first trial runs them, the others find them ``cached``. ``max_concurrent`` > 1 runs trials in
threads (each a subflow run in a copy of the parent's context); the first trial always runs
alone first so concurrent trials never prepare the same data at once.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor

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
from tasks.validation_score import validation_score
from tuneline.access import check_allowed_roots
from tuneline.config import FinetuneConfig
from tuneline.errors import GateFailed, TunelineError
from tuneline.summary import run_summary
from tuneline.tracking import check_reporting
from tuneline.training.child import stop_every_child
from tuneline.stages.sweep import choose_best, expand_grid, trial_config, validation_metric


@flow(name="sweep-trial", log_prints=True, flow_run_name="trial-{trial}")
def sweep_trial(config: FinetuneConfig, trial: int, parameters: dict) -> dict:
    """Train one grid point and score it on the validation split (nothing is registered)."""
    stages = StageLog(config.retries)
    dataset = stages.run(ingest, config)
    stages.run(validate, config, dataset)
    prepared = stages.run(preprocess, config, dataset)
    trained = stages.run(train, config, prepared)
    scores = stages.run(validation_score, config, prepared, trained)
    return {"trial": trial, "parameters": parameters, "validation": scores.value,
            "validation_metrics": scores.metrics, "train_loss": trained.train_loss,
            "global_step": trained.global_step, "model_fingerprint": trained.model_fingerprint,
            "stages": stages.stages, "dataset": dataset, "prepared": prepared, "trained": trained}


def run_trial(config: FinetuneConfig, trial: int, parameters: dict) -> dict:
    """One trial as a child flow run; a failed trial is recorded, not raised."""
    started = time.perf_counter()
    state = sweep_trial(config=config, trial=trial, parameters=parameters, return_state=True)
    try:
        return state.result()
    except Exception as err:  # one bad grid point (diverged, OOM at this batch size) must not sink the sweep
        return {"trial": trial, "parameters": parameters, "validation": None, "status": "failed",
                "error": f"{type(err).__name__}: {err}", "seconds": round(time.perf_counter() - started, 2)}


def run_trials(configs: list[FinetuneConfig], grid_points: list[dict], max_concurrent: int) -> list[dict]:
    first = run_trial(configs[0], 0, grid_points[0])  # prepares the shared data; later trials find it cached
    rest = list(range(1, len(configs)))
    if max_concurrent <= 1:
        return [first, *(run_trial(configs[i], i, grid_points[i]) for i in rest)]
    with ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="sweep-trial") as pool:
        futures = [pool.submit(contextvars.copy_context().run, run_trial, configs[i], i, grid_points[i])
                   for i in rest]
        try:
            return [first, *(f.result() for f in futures)]
        except BaseException:  # SIGTERM (Prefect's TerminationSignal) or Ctrl-C while trials train in threads
            stop_every_child()  # their trainings checkpoint and end, trials not started yet fail at once
            raise


@flow(name="sweep", log_prints=True)
def sweep(config: FinetuneConfig, grid: dict[str, list], max_concurrent: int = 1) -> dict:
    """Train ``config`` once per combination of ``grid`` values; register the best by validation metric."""
    install_redaction()
    check_allowed_roots(config)  # before anything reads data or a model
    check_reporting(config)  # training.report_to: its packages and MLFLOW_TRACKING_URI
    config = pin_base_model(config)
    points = expand_grid(grid)
    configs = [trial_config(config, point, i) for i, point in enumerate(points)]
    for trial in configs:  # a grid may vary data.source, storage or model.base too
        check_allowed_roots(trial)
    metric, lower = validation_metric(config)
    trials = run_trials(configs, points, max_concurrent)
    best = choose_best(trials, lower)
    if best is None:
        raise TunelineError("every sweep trial failed: " + "; ".join(t.get("error", "?") for t in trials))
    winner, chosen = trials[best], configs[best]
    stages = StageLog(chosen.retries)
    evaluation = stages.run(evaluate, chosen, winner["prepared"], winner["trained"])
    registered = stages.run(register, chosen, winner["dataset"], winner["prepared"], winner["trained"], evaluation)
    if registered.awaits_approval:  # evaluation.approval: required: the run pauses until a person decides
        registered = ask_approval(stages, chosen, evaluation, registered)
    summary = run_summary(chosen, winner["dataset"], evaluation, registered, stages.stages)
    summary.update(sweep={"grid": grid, "validation_metric": metric, "lower_is_better": lower, "best_trial": best,
                          "best_parameters": winner["parameters"], "max_concurrent": max_concurrent},
                   trials=[public_trial(t) for t in trials])
    if not evaluation.gate["passed"]:
        raise GateFailed(summary["error"], summary=summary)
    return summary


def public_trial(trial: dict) -> dict:
    """A trial as the summary lists it: parameters, validation score, training facts, stage statuses."""
    hidden = {"dataset", "prepared", "trained"}
    return {"status": "completed", **{k: v for k, v in trial.items() if k not in hidden}}
