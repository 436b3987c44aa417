"""Fault: CUDA out of memory in the training child, caused on a CPU.

The child's test hook ``TUNELINE_FAULT_OOM_AT_STEP`` (tuneline/training/loop.py) raises a real
``torch.OutOfMemoryError`` from inside ``Trainer.train`` at step 6, after the checkpoint at step 4, on the
first attempt only. The product does the rest: the child writes ``oom-adjustment.json`` and exits as
out-of-memory, the launcher raises ``OutOfMemory``, which the stage policy retries; the retry (a second
``train_candidate`` call, as Prefect's task retry makes it) resumes from checkpoint-4 with half the
per-device batch and twice the accumulation (the same effective batch) and records ``oom_retries``.
"""

from __future__ import annotations

import pytest

from tests.conftest import make_config
from tuneline.config import parse_config
from tuneline.data.ingest import ingest_dataset
from tuneline.stages.prepare import prepare_splits
from tuneline.storage import LocalStorage
from tuneline.training.launcher import train_candidate
from tuneline.training.loop import FAULT_OOM_AT_STEP
from tuneline.training.outcomes import OutOfMemory

pytestmark = pytest.mark.slow


class FailedState:
    """What Prefect hands the retry condition: a state whose result() raises the attempt's error."""

    def __init__(self, error: BaseException):
        self.error = error

    def result(self):
        raise self.error


def test_out_of_memory_is_retried_with_half_the_batch_and_the_same_effective_batch(demo_csv, tmp_path, tiny_bert,
                                                                                   monkeypatch):
    from tasks.policy import is_transient

    root = tmp_path / "store"
    cfg = parse_config(make_config(demo_csv, root, model={"base": str(tiny_bert), "max_length": 32},
                                   training={"epochs": 1, "batch_size": 16, "gradient_accumulation": 1,
                                             "checkpoint_every_steps": 4, "checkpoint_every_minutes": None}))
    storage = LocalStorage(root)
    prepared = prepare_splits(storage, ingest_dataset(str(demo_csv), storage), cfg)
    monkeypatch.setenv(FAULT_OOM_AT_STEP, "6")  # the training child inherits it

    with pytest.raises(OutOfMemory, match=f"OutOfMemoryError: {FAULT_OOM_AT_STEP}=6") as failure:
        train_candidate(storage, prepared, cfg, log_line=lambda line: None)
    assert is_transient(None, None, FailedState(failure.value)), "the train stage's policy retries it"
    candidate = next(root.glob("candidates/*/oom-adjustment.json")).parent
    assert storage.read_json(f"{candidate.relative_to(root)}/oom-adjustment.json") == {
        "batch_size": 8, "gradient_accumulation": 2, "oom_retries": 1}
    assert not (candidate / "training.json").exists()

    trained = train_candidate(storage, prepared, cfg, log_line=lambda line: None)  # what the retry does

    assert trained.resumed_from_step == 4, "the retry resumes from the checkpoint before the OOM"
    record = storage.read_json(f"{candidate.relative_to(root)}/training.json")
    assert (record["batch_size"], record["gradient_accumulation"], record["oom_retries"]) == (8, 2, 1)
    assert record["batch_size"] * record["gradient_accumulation"] == 16, "the effective batch is unchanged"
    assert record["global_step"] == record["max_steps"] == 18, "the same plan: 280 rows / 16 per update"
    # the loss of a half batch accumulated twice is still a per-example mean (it was doubled: BERT's forward takes
    # **kwargs, so the Trainer counted its mean loss as already scaled for accumulation)
    before = [h["loss"] for h in record["train_losses"] if h["step"] <= 4]
    after = [h["loss"] for h in record["train_losses"] if h["step"] > 4]
    assert before and after and max(after) < 1.3 * max(before), record["train_losses"]
