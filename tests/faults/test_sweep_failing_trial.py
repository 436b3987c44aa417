"""Fault: a sweep trial that really fails, and a sweep whose trials all fail.

Caused for real: ``model.method: freeze`` with a grid over ``model.unfreeze_top_layers``, one value beyond the
base model's layers. It passes config validation (the config cannot know the model's depth) and fails in the
training child, deterministically, when the objective freezes the loaded model. The sweep must record that
trial as failed with its error, choose the winner among the others and register only it; a sweep whose every
trial fails must end with one clear error naming each trial's cause (the CLI prints it as one ``error:`` line, exit 1).
"""

from __future__ import annotations

import pytest

from tests.conftest import make_config
from tests.tiny_models import LAYERS
from tuneline.config import parse_config
from tuneline.errors import TunelineError
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

TOO_DEEP = f"model.unfreeze_top_layers: {LAYERS + 7} > the model's {LAYERS} layers"


def test_a_failing_trial_is_recorded_and_the_winner_comes_from_the_others(demo_csv, tmp_path, tiny_bert):
    from flows.sweep import sweep

    root = tmp_path / "store"
    raw = make_config(demo_csv, root, name="sweep-faults", model={"base": str(tiny_bert), "max_length": 32,
                                                                  "method": "freeze"},
                      training={"epochs": 1, "learning_rate": 1e-3}, evaluation={"minimum": 0.0},
                      retries={"attempts": 2, "backoff_seconds": 0})

    summary = sweep(config=parse_config(raw), grid={"model.unfreeze_top_layers": [LAYERS + 7, 1]})

    failed, survivor = summary["trials"]
    assert failed["status"] == "failed" and failed["validation"] is None
    assert failed["error"] == f"TrainingInputError: {TOO_DEEP}", failed
    assert survivor["status"] == "completed" and isinstance(survivor["validation"], float)
    assert summary["sweep"]["best_trial"] == 1 and summary["sweep"]["best_parameters"] == {
        "model.unfreeze_top_layers": 1}
    registry = Registry(LocalStorage(root))
    assert registry.versions("sweep-faults") == [1]
    assert registry.manifest("sweep-faults", 1)["config"]["model"]["unfreeze_top_layers"] == 1
    assert len(list(root.glob("candidates/*/training.json"))) == 1, "the failed trial trained nothing"

    failed_logs = list(root.glob("candidates/*/train-failed-*.log"))
    assert len(failed_logs) == 1, "deterministic: the failed trial's training was attempted once, not retried"

    with pytest.raises(TunelineError) as every:
        sweep(config=parse_config(raw), grid={"model.unfreeze_top_layers": [LAYERS + 7, LAYERS + 8]})
    assert str(every.value) == (f"every sweep trial failed: TrainingInputError: {TOO_DEEP}; TrainingInputError: "
                                f"model.unfreeze_top_layers: {LAYERS + 8} > the model's {LAYERS} layers")
    assert registry.versions("sweep-faults") == [1], "nothing more is registered"
