"""Fault: the training child is SIGKILLed on an S3 storage root (the nightly deployment's setup), and the retry
runs where nothing of the first attempt is on local disk.

Caused for real against SeaweedFS: the child is killed once a checkpoint's ``COMPLETE`` marker is in the
bucket. On S3 roots the Trainer writes into a scratch folder that the failed attempt removes, and the retry
here also gets a fresh ``TUNELINE_CACHE``, so it can only resume from what was mirrored to S3: the newest
complete checkpoint there, downloaded into its own new scratch folder.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time

import pytest

from tests.conftest import make_config, training_pids
from tests.faults.runs import train_until_sigkilled
from tuneline.config import parse_config
from tuneline.data.ingest import ingest_dataset
from tuneline.stages.prepare import prepare_splits
from tuneline.storage import open_storage
from tuneline.training.checkpoints import MARKER, step_of
from tuneline.training.launcher import train_candidate

pytestmark = pytest.mark.slow


def complete_steps(storage) -> list[int]:
    """Steps of the complete checkpoints under the storage root's candidates/, from S3 listings."""
    return sorted(step_of(key.split("/")[-2]) for key in storage.list_keys("candidates")
                  if key.endswith(f"/{MARKER}") and "/checkpoints/" in key)


def kill_after_a_checkpoint_in_s3(root: str, done: threading.Event) -> None:
    storage = open_storage(root)  # its own client: this thread polls while the test thread trains
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not done.is_set():
        if complete_steps(storage):
            for pid in training_pids():
                os.kill(pid, signal.SIGKILL)
            done.set()
            return
        time.sleep(0.1)


def test_a_killed_run_on_s3_resumes_from_the_mirrored_checkpoint_on_a_fresh_machine(demo_csv, tmp_path, tiny_bert,
                                                                                     s3_root, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where this process's training scratch goes
    cfg = parse_config(make_config(demo_csv, s3_root, model={"base": str(tiny_bert), "max_length": 32}, training={
        "epochs": 2, "checkpoint_every_steps": 4, "checkpoint_every_minutes": None}))
    storage = open_storage(s3_root)
    prepared = prepare_splits(storage, ingest_dataset(str(demo_csv), storage), cfg)
    train_until_sigkilled(kill_after_a_checkpoint_in_s3, s3_root, storage=storage, prepared=prepared, cfg=cfg)
    assert not training_pids()
    in_s3 = complete_steps(storage)
    assert in_s3 and in_s3[-1] < 36, f"killed before the end of training: {in_s3}"
    assert not list(scratch.iterdir()), "the killed attempt's scratch folder (its checkpoint copies) is gone"
    monkeypatch.setenv("TUNELINE_CACHE", str(tmp_path / "fresh-cache"))  # nothing local is reused either

    trained = train_candidate(storage, prepared, cfg, log_line=lambda line: None)  # what the retry does

    assert trained.resumed_from_step == in_s3[-1] >= 4, (trained.resumed_from_step, in_s3)
    assert trained.global_step == trained.max_steps == 36, "training finishes"
    record = storage.read_json(f"{trained.key}/training.json")
    assert record["resumed_from_step"] == in_s3[-1]
    assert f"resuming from checkpoint-{in_s3[-1]}" in storage.read_bytes(f"{trained.key}/train.log").decode()
    assert (tmp_path / "fresh-cache").is_dir() and not list(scratch.iterdir())
