"""Fault: the newest complete checkpoint is damaged (a truncated ``model.safetensors``); and what a
killed attempt leaves: its whole log beside the candidate, its last lines in the error, no scratch folder.

Caused for real: a training process is SIGKILLed after its second complete checkpoint, the newest
checkpoint's weights are truncated on disk, and the next run must discard that checkpoint (its files no
longer match the checksums in its COMPLETE marker) and resume from the intact one before it, instead of
failing on every retry with a SafetensorError.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_config, training_pids
from tuneline.config import parse_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def config(csv: Path, root: Path, attempts: int):
    return parse_config(make_config(csv, root, model={"max_length": 32},
                                    training={"epochs": 2, "checkpoint_every_steps": 8, "checkpoint_every_minutes": None},
                                    retries={"attempts": attempts, "backoff_seconds": 0}))


def kill_after_two_checkpoints(root: Path, done: threading.Event) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if len(list(root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE"))) >= 2:
            for pid in training_pids():
                os.kill(pid, signal.SIGKILL)
            done.set()
            return
        time.sleep(0.05)


def test_a_damaged_newest_checkpoint_is_discarded_and_the_previous_one_resumes(demo_csv, tmp_path, monkeypatch):
    import tempfile

    from flows.finetune import finetune

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where this process's training scratch goes
    root = tmp_path / "store"
    killed = threading.Event()
    threading.Thread(target=kill_after_two_checkpoints, args=(root, killed), daemon=True).start()
    with pytest.raises(Exception, match="training process ended with signal SIGKILL") as failure:
        finetune(config=config(demo_csv, root, attempts=1))
    assert killed.is_set()
    logs = list(root.glob("candidates/*/train-failed-*.log"))
    assert len(logs) == 1 and "checkpoint saved at step" in logs[0].read_text(), "the whole log is kept"
    assert str(logs[0]) in str(failure.value) and "checkpoint saved at step" in str(failure.value)
    assert not list(scratch.glob("tuneline-train-*")), "no scratch folder is left behind"
    checkpoints = sorted(root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE"),
                         key=lambda marker: int(marker.parent.name.split("-")[1]))
    older, newest = (int(m.parent.name.split("-")[1]) for m in checkpoints[-2:])
    weights = checkpoints[-1].parent / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated on disk

    summary = finetune(config=config(demo_csv, root, attempts=1))
    train = summary["stages"]["train"]
    assert train["status"] == "resumed" and train["resumed_from_step"] == older < newest, train
    assert summary["version"] == 1 and summary["gate"]["passed"]
