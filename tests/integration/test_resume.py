"""Faults caused for real: a killed or preempted training process resumes from its last checkpoint.

The training child is SIGKILLed (or SIGTERMed, as on preemption) once its first
checkpoint is complete; Prefect's retry must continue from that checkpoint, skip a
half-written one, finish the planned number of steps, and land close to an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_config
from tuneline.config import parse_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def training_config(csv, root):
    return parse_config(make_config(
        csv, root,
        model={"max_length": 32},
        training={"epochs": 2, "checkpoint_every_steps": 8, "checkpoint_every_minutes": None},
        retries={"attempts": 2, "backoff_seconds": 0},
    ))


def training_pids() -> list[int]:
    """This test process's own training children (other pytest workers train at the same time)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == os.getpid() and b"tuneline.train_process" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def interrupt_after_first_checkpoint(root: Path, sig: int, done: threading.Event):
    """Wait for a COMPLETE checkpoint, signal the trainer, then leave a half-written newer checkpoint."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not done.is_set():
        markers = list(root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE"))
        if markers:
            for pid in training_pids():
                os.kill(pid, sig)
            if sig == signal.SIGKILL:
                half = markers[0].parent.parent / "checkpoint-9999"
                half.mkdir(exist_ok=True)
                (half / "model.safetensors").write_bytes(b"\0" * 100)  # truncated, no COMPLETE marker
            done.set()
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def baseline(prefect_harness, tmp_path_factory):
    """An uninterrupted run with the same seed, shared by the interrupted runs."""
    import shutil

    from flows.finetune import finetune
    from tests.conftest import EXAMPLES

    folder = tmp_path_factory.mktemp("baseline")
    shutil.copy(EXAMPLES / "data" / "reviews.csv", folder / "reviews.csv")
    summary = finetune(config=training_config(folder / "reviews.csv", folder / "store"))
    return summary, next((folder / "store").glob("candidates/*/training.json"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_interrupted_training_resumes_from_checkpoint(demo_csv, tmp_path, sig, baseline):
    import json

    from flows.finetune import finetune

    baseline_summary, baseline_record = baseline

    root = tmp_path / "interrupted"
    root.mkdir()
    fired = threading.Event()
    watcher = threading.Thread(target=interrupt_after_first_checkpoint, args=(root, sig, fired), daemon=True)
    watcher.start()
    summary = finetune(config=training_config(demo_csv, root))
    watcher.join(5)

    assert fired.is_set(), "the training process was never interrupted"
    train = summary["stages"]["train"]
    assert train["status"] == "resumed" and train["attempts"] == 2, train
    assert train["resumed_from_step"] >= 8
    from tuneline.storage import LocalStorage

    record = LocalStorage(root).read_json(f"{next(root.glob('candidates/*')).relative_to(root)}/training.json")
    assert record["global_step"] == record["max_steps"] == 36
    assert record["resumed_from_step"] != 9999, "a half-written checkpoint must never be loaded"
    assert not training_pids(), "no training process may outlive the task"
    assert abs(summary["metrics"]["f1_macro"] - baseline_summary["metrics"]["f1_macro"]) <= 0.05
    assert abs(record["eval_loss"] - json.loads(baseline_record.read_text())["eval_loss"]) <= 0.05


def test_validation_failure_is_attempted_once(tmp_path, storage_root):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from flows.finetune import finetune
    from tuneline.errors import ValidationFailed

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n" + "".join(f"row {i},positive\n" for i in range(30)))
    config = parse_config(make_config(bad, storage_root, retries={"attempts": 3, "backoff_seconds": 0}))
    with pytest.raises(ValidationFailed):
        finetune(config=config)
    with get_client(sync_client=True) as client:
        for _ in range(50):  # task-run records arrive through events; give them a moment
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="validate")))
            failed = [r for r in runs if r.state and r.state.is_failed()]
            if failed:
                break
            time.sleep(0.2)
    assert failed and all(r.run_count == 1 for r in failed), [(r.name, r.run_count) for r in runs]
