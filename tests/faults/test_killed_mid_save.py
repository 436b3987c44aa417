"""Fault: the training child is SIGKILLed while it saves a checkpoint.

Caused for real, no hook: the test watches the local storage root's ``checkpoints/`` folder every few
milliseconds; when a ``checkpoint-N`` folder appears (the Trainer writing it) while no ``COMPLETE`` marker is
in it and an older checkpoint is complete, it freezes the child (SIGSTOP), looks again, and SIGKILLs it if the
marker is still missing; had the save finished in between, it lets the child go on (SIGCONT) and waits for
the next save. The next attempt must discard the half-saved folder, resume from the newest complete
checkpoint and finish.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_config, training_pids
from tests.faults.runs import train_until_sigkilled
from tuneline.config import parse_config
from tuneline.data.ingest import ingest_dataset
from tuneline.stages.prepare import prepare_splits
from tuneline.storage import LocalStorage
from tuneline.training.checkpoints import MARKER, step_of
from tuneline.training.launcher import train_candidate

pytestmark = pytest.mark.slow


def kill_mid_save(root: Path, caught: dict, stop: threading.Event) -> None:
    """SIGKILL the training child while a checkpoint folder newer than a complete one lacks its marker."""
    while not stop.is_set():
        folders = [p for p in root.glob("candidates/*/checkpoints/checkpoint-*") if step_of(p.name) >= 0]
        complete = [step_of(p.name) for p in folders if (p / MARKER).exists()]
        saving = [p for p in folders if not (p / MARKER).exists() and complete and step_of(p.name) > max(complete)]
        children = training_pids()
        if saving and children:
            for pid in children:
                os.kill(pid, signal.SIGSTOP)
            if not (saving[0] / MARKER).exists():  # frozen before the marker: this is a kill mid-save
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                caught.update(step=step_of(saving[0].name), complete=max(complete),
                              files=sorted(p.name for p in saving[0].iterdir()))
                return
            caught["missed"] = caught.get("missed", 0) + 1
            for pid in children:
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.002)


def test_a_checkpoint_killed_mid_save_is_discarded_and_the_previous_one_resumes(demo_csv, tmp_path, tiny_bert):
    root = tmp_path / "store"
    cfg = parse_config(make_config(demo_csv, root, model={"base": str(tiny_bert), "max_length": 32}, training={
        "epochs": 3, "checkpoint_every_steps": 3, "checkpoint_every_minutes": None}))
    storage = LocalStorage(root)
    prepared = prepare_splits(storage, ingest_dataset(str(demo_csv), storage), cfg)
    caught: dict = {}
    train_until_sigkilled(kill_mid_save, root, caught, storage=storage, prepared=prepared, cfg=cfg)
    assert "step" in caught, f"the child was never caught saving: {caught}"
    checkpoints = next(root.glob("candidates/*/checkpoints"))
    half = checkpoints / f"checkpoint-{caught['step']}"
    assert half.is_dir() and not (half / MARKER).exists(), f"the kill left a half-saved checkpoint: {caught}"
    assert (checkpoints / f"checkpoint-{caught['complete']}" / MARKER).exists()

    trained = train_candidate(storage, prepared, cfg, log_line=lambda line: None)  # what the retry does

    assert trained.resumed_from_step == caught["complete"] < caught["step"], (trained.resumed_from_step, caught)
    log = next(root.glob("candidates/*/train.log")).read_text()  # the whole log of the attempt that succeeded
    assert f"resuming from checkpoint-{caught['complete']}" in log
    assert trained.global_step == trained.max_steps, "training finishes"
