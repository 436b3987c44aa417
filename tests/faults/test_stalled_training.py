"""Faults: a training process that hangs, and a time budget that retries must not renew.

Caused for real: the training child is frozen with SIGSTOP (it prints nothing more, like a deadlock or a hung
file system); the stall watchdog stops it (SIGTERM, then SIGKILL after the grace period) and the attempt fails
as transient, so the retry resumes from the last checkpoint. A run over ``training.timeout_minutes`` fails
once: the budget covers all attempts of the run, so it is not retried into a fresh budget.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.conftest import make_config, training_pids
from tuneline.config import parse_config
from tuneline.data.ingest import ingest_dataset
from tuneline.stages.prepare import prepare_splits
from tuneline.storage import LocalStorage
from tuneline.training.launcher import train_candidate
from tuneline.training.outcomes import TrainingInterrupted, TrainingTimedOut

pytestmark = pytest.mark.slow


def test_a_frozen_training_process_is_stopped_and_the_retry_resumes(tmp_path, demo_csv):
    root = tmp_path / "store"
    cfg = parse_config(make_config(demo_csv, root, model={"max_length": 32}, training={
        "epochs": 3, "checkpoint_every_steps": 4, "checkpoint_every_minutes": None,
        "stall_minutes": 0.25, "stop_grace_seconds": 2}))
    storage = LocalStorage(root)
    prepared = prepare_splits(storage, ingest_dataset(str(demo_csv), storage), cfg)
    outcome: list[BaseException] = []

    def attempt():
        try:
            train_candidate(storage, prepared, cfg, log_line=lambda line: None)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome.append(err)

    first = threading.Thread(target=attempt)
    first.start()
    deadline = time.monotonic() + 240
    while not list(root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE")):
        assert time.monotonic() < deadline and first.is_alive(), f"no checkpoint was written: {outcome}"
        time.sleep(0.05)
    children = training_pids()
    for pid in children:
        os.kill(pid, signal.SIGSTOP)
    frozen_at = sorted(int(p.parent.name.split("-")[1]) for p in root.glob("candidates/*/checkpoints/*/COMPLETE"))
    first.join(120)
    assert not first.is_alive(), "a frozen training process is waited on forever"
    assert len(outcome) == 1 and isinstance(outcome[0], TrainingInterrupted), outcome
    assert "printed nothing for training.stall_minutes=0.25" in str(outcome[0])
    assert not training_pids(), "the frozen process was killed"

    trained = train_candidate(storage, prepared, cfg, log_line=lambda line: None)  # what the retry does
    assert trained.resumed_from_step >= frozen_at[-1] > 0


@pytest.mark.usefixtures("prefect_harness")
def test_a_spent_time_budget_fails_the_run_once_instead_of_renewing_it_per_retry(tmp_path, demo_csv):
    from flows.finetune import finetune

    root = tmp_path / "store"
    cfg = parse_config(make_config(demo_csv, root, training={"epochs": 20, "timeout_minutes": 0.1,
                                                             "stop_grace_seconds": 5},
                                   retries={"attempts": 3, "backoff_seconds": 1}))
    with pytest.raises(TrainingTimedOut, match=r"whole training.timeout_minutes=0.1"):
        finetune(config=cfg)
    assert len(list(root.glob("candidates/*/train-failed-*.log"))) == 1, "one attempt, not three"
