"""Data-parallel training (``training.processes: 2``) on this CPU: two gloo processes under torchrun, the
same code path as two GPUs, run for real through the flow.

- One rank SIGKILLed after the first complete checkpoint: torchrun ends the other, the attempt fails as
  transient, the retry resumes from that checkpoint with both ranks, finishes the planned steps (the
  effective batch is batch_size x 2) and the registered model loads and predicts.
- An input error in one rank only (the training child's test hook ``TUNELINE_FAULT_INPUT_ERROR_RANK``,
  tuneline/training/loop.py): the attempt fails as an input error and is not retried.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_config, task_runs_of, training_pids
from tests.faults.runs import descendants
from tuneline.config import parse_config
from tuneline.training.loop import FAULT_INPUT_ERROR_RANK

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def rank_of(pid: int) -> int | None:
    """The torchrun rank of a training process (None: not a rank, e.g. torchrun itself)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    rank = next((v for v in environ if v.startswith(b"RANK=")), None)
    return int(rank.split(b"=")[1]) if rank else None


def ranks_running() -> dict[int, int]:
    """rank -> pid of this test's training processes."""
    found = {}
    for pid in descendants(os.getpid()):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"tuneline.training.process" in command and b"torch.distributed.run" not in command:
            rank = rank_of(pid)
            if rank is not None:
                found[rank] = pid
    return found


def kill_rank_after_first_checkpoint(root: Path, rank: int, killed: threading.Event, seen: dict) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ranks = ranks_running()
        seen.update({r: True for r in ranks})
        if ranks and rank in ranks and list(root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE")):
            os.kill(ranks[rank], signal.SIGKILL)
            killed.set()
            return
        time.sleep(0.05)


def two_rank_config(csv: Path, root: Path, tiny_bert: Path, **training):
    return parse_config(make_config(
        csv, root, model={"base": str(tiny_bert), "max_length": 32},
        training={"epochs": 2, "batch_size": 8, "processes": 2, "checkpoint_every_steps": 4,
                  "checkpoint_every_minutes": None, **training},
        retries={"attempts": 2, "backoff_seconds": 0}, evaluation={"metric": "f1_macro", "minimum": 0.0}))


def test_two_ranks_survive_a_killed_rank_and_register_a_model_that_predicts(demo_csv, tmp_path, tiny_bert):
    import tuneline
    from flows.finetune import finetune
    from tuneline.storage import LocalStorage

    root = tmp_path / "store"
    killed, seen = threading.Event(), {}
    watcher = threading.Thread(target=kill_rank_after_first_checkpoint, args=(root, 1, killed, seen), daemon=True)
    watcher.start()
    summary = finetune(config=two_rank_config(demo_csv, root, tiny_bert))
    watcher.join(5)

    assert killed.is_set() and set(seen) == {0, 1}, f"two ranks ran and rank 1 was killed (seen: {seen})"
    train = summary["stages"]["train"]
    assert train["status"] == "resumed" and train["attempts"] == 2, train
    assert train["resumed_from_step"] >= 4
    storage = LocalStorage(root)
    candidate = next(root.glob("candidates/*/training.json")).parent.relative_to(root)
    record = storage.read_json(f"{candidate}/training.json")
    assert record["processes"] == 2 and record["effective_batch_size"] == 16, "8 rows per rank per step"
    counts = storage.read_json(next(root.glob("prepared/*/meta.json")).relative_to(root).as_posix())["counts"]
    assert record["global_step"] == record["max_steps"] == 2 * math.ceil(counts["train"] / 16), counts
    assert not training_pids(), "no rank outlives the task"
    assert [p.name for p in (root / candidate).iterdir() if p.name.startswith("train-failed")], \
        "the killed attempt's log is kept"

    model, tokenizer = tuneline.load_model(f"{summary['model']}:{summary['version']}", str(root))
    import torch

    with torch.inference_mode():
        logits = model(**tokenizer(["great product", "broke in a day"], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 2)


def test_an_input_error_in_one_rank_fails_the_attempt_once(demo_csv, tmp_path, tiny_bert, monkeypatch):
    from flows.finetune import finetune

    monkeypatch.setenv(FAULT_INPUT_ERROR_RANK, "1")  # the training processes inherit it
    state = finetune(config=two_rank_config(demo_csv, tmp_path / "store", tiny_bert), return_state=True)

    assert state.is_failed()
    with pytest.raises(Exception, match="a bad batch in rank 1"):
        state.result()
    [train] = [r for r in task_runs_of(state.state_details.flow_run_id, "train") if r.task_key.startswith("train")]
    assert train.run_count == 1, "an input error is never retried"
    assert not training_pids()
