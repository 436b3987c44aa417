"""Faults caused for real: a killed or preempted training process resumes from its last checkpoint.

The training child is SIGKILLed (or SIGTERMed, as on preemption) once its first
checkpoint is complete; Prefect's retry must continue from that checkpoint, skip a
half-written one, finish the planned number of steps, and land close to an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_config, task_runs_of, training_pids
from tuneline.config import parse_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def training_config(csv, root):
    return parse_config(make_config(
        csv, root,
        model={"max_length": 32},
        training={"epochs": 2, "checkpoint_every_steps": 8, "checkpoint_every_minutes": None},
        retries={"attempts": 2, "backoff_seconds": 0},
    ))


def early_stopping_state(checkpoint: Path) -> tuple[float | None, int]:
    """(best metric, early-stopping patience counter) saved in a checkpoint's trainer_state.json."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    saved = (state.get("stateful_callbacks") or {}).get("ResumableEarlyStopping") or {}
    saved = saved[0] if isinstance(saved, list) else saved
    return state.get("best_metric"), saved.get("attributes", {}).get("early_stopping_patience_counter", 0)


def interrupt_after_first_checkpoint(root: Path, sig: int, done: threading.Event, ready=lambda checkpoint: True):
    """Wait for a COMPLETE checkpoint that satisfies ``ready``, signal the trainer, then (SIGKILL) leave a
    half-written newer checkpoint behind."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not done.is_set():
        markers = [m for m in root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE") if ready(m.parent)]
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


def test_lora_with_early_stopping_resumes_its_patience_and_registers_the_best_checkpoint(demo_csv, tmp_path):
    """Killed when F1 is already 1.0 (it cannot improve) and early stopping is one evaluation short of its
    patience: the resumed run must stop at its very next evaluation, which it does only if the patience
    counter came back with the checkpoint. The evaluations from before the kill are kept, and the registered
    adapter is the best checkpoint's."""
    from flows.finetune import finetune
    from tuneline.data.encoded import load_split
    from tuneline.results import Prepared
    from tuneline.storage import LocalStorage

    patience, every = 2, 8  # 8 steps between evaluations: a wide window for the watcher, even on a loaded machine
    root = tmp_path / "store"
    root.mkdir()
    config = parse_config(make_config(
        demo_csv, root,
        model={"max_length": 32, "method": "lora"},
        training={"epochs": 6, "learning_rate": 2e-3, "checkpoint_every_steps": every,
                  "checkpoint_every_minutes": None, "early_stopping_patience": patience},
        retries={"attempts": 2, "backoff_seconds": 0},
    ))
    fired = threading.Event()
    watcher = threading.Thread(target=interrupt_after_first_checkpoint, daemon=True, args=(
        root, signal.SIGKILL, fired, lambda c: early_stopping_state(c) == (1.0, patience - 1)))
    watcher.start()
    summary = finetune(config=config)
    watcher.join(5)

    assert fired.is_set(), "F1 never reached 1.0 with early stopping one evaluation from its patience"
    train = summary["stages"]["train"]
    assert train["status"] == "resumed" and train["attempts"] == 2, train
    storage = LocalStorage(root)
    record = storage.read_json(f"{next(root.glob('candidates/*')).relative_to(root)}/training.json")
    steps = [e["step"] for e in record["evaluations"]]
    scores = [e["f1_macro"] for e in record["evaluations"]]
    resumed = record["resumed_from_step"]
    assert steps == list(range(every, resumed + every + 1, every)), "pre-kill evaluations kept, one after"
    assert record["stopped_early"] and record["global_step"] == resumed + every < record["max_steps"]
    best = scores.index(1.0)  # the first of equal scores: a tie is no improvement
    assert record["best_metric"] == 1.0 and record["best_checkpoint"] == f"checkpoint-{steps[best]}"
    assert len(scores) - 1 - best == patience, (steps, scores)

    folder = root / "registry" / "test-model" / "versions" / "000001" / "model"
    assert (folder / "adapter_model.safetensors").exists() and not (folder / "model.safetensors").exists()
    prepared = Prepared(**json.loads(next(root.glob("prepared/*/meta.json")).read_text()))
    validation = load_split(storage, prepared, "validation")
    losses = [e["loss"] for e in record["evaluations"]]
    assert abs(losses[best] - losses[-1]) > 1e-3, "best and last checkpoints must be told apart by their loss"
    assert abs(validation_loss(folder, validation) - losses[best]) < 1e-4, "the registered adapter is not the best"


def validation_loss(folder: Path, dataset) -> float:
    """Mean cross-entropy per row of a registered model folder, loaded as a user would."""
    import torch
    from transformers import DataCollatorWithPadding

    from tuneline.loading import load_model_folder

    model, tokenizer = load_model_folder(folder)
    batch = DataCollatorWithPadding(tokenizer)(list(dataset))
    with torch.inference_mode():
        logits = model.eval()(**{k: v for k, v in batch.items() if k != "labels"}).logits
    return torch.nn.functional.cross_entropy(logits, batch["labels"]).item()


def test_validation_failure_is_attempted_once(tmp_path, storage_root):
    """Bad data is no outage: this run's validate task fails after one attempt, although 3 are configured,
    and nothing after it runs. Its task runs are looked up by this flow run's id (the Prefect test server is
    shared by every test on the worker)."""
    from flows.finetune import finetune
    from tuneline.errors import ValidationFailed

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n" + "".join(f"row {i},positive\n" for i in range(30)))
    config = parse_config(make_config(bad, storage_root, retries={"attempts": 3, "backoff_seconds": 0}))
    state = finetune(config=config, return_state=True)
    assert state.is_failed(), state
    with pytest.raises(ValidationFailed):
        state.result()
    runs = task_runs_of(state.state_details.flow_run_id, "validate")
    validate = [r for r in runs if r.task_key.startswith("validate")]
    seen = [(r.name, r.state_name, r.run_count) for r in runs]
    assert [(r.state_name, r.run_count) for r in validate] == [("Failed", 1)], seen
    assert sorted(r.task_key.split("-")[0] for r in runs) == ["ingest", "validate"], seen  # nothing ran after it
