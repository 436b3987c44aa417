"""Sweep plumbing without Prefect: grid parsing and expansion, trial configs, best-trial choice."""

from __future__ import annotations

import math

import pytest

from tests.conftest import make_config
from tuneline.config import parse_config
from tuneline.errors import ConfigError
from tuneline.stages.sweep import choose_best, expand_grid, parse_grid, trial_config, validation_metric


def test_grid_values_are_typed_and_combinations_are_ordered():
    grid = parse_grid(["training.learning_rate=5e-5,2.0e-4", "training.batch_size=8,16", "model.method=full,lora"])
    assert grid["training.learning_rate"] == [5e-5, 2e-4]
    assert grid["training.batch_size"] == [8, 16]
    points = expand_grid(grid)
    assert len(points) == 8
    assert points[0] == {"training.learning_rate": 5e-5, "training.batch_size": 8, "model.method": "full"}
    assert points[-1] == {"training.learning_rate": 2e-4, "training.batch_size": 16, "model.method": "lora"}


@pytest.mark.parametrize("bad", ["training.learning_rate", "=1,2", "training.epochs="])
def test_malformed_grid_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="--grid"):
        parse_grid([bad])


def test_empty_grid_and_repeated_key_are_refused():
    with pytest.raises(ConfigError, match="at least one"):
        expand_grid({})
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["training.epochs=1", "training.epochs=2"])


def test_trial_config_applies_values_and_validates(tmp_path):
    base = parse_config(make_config(tmp_path / "d.csv", tmp_path / "s"))
    trial = trial_config(base, {"training.learning_rate": 3e-4, "training.epochs": 2}, 0)
    assert trial.training.learning_rate == 3e-4 and trial.training.epochs == 2
    assert trial.data == base.data and base.training.learning_rate is None  # the base is untouched (method default)
    with pytest.raises(ConfigError, match=r"sweep trial 1 .*training.learning_rate"):
        trial_config(base, {"training.learning_rate": -1}, 1)


def test_best_trial_follows_the_metric_direction_and_skips_failures():
    trials = [{"validation": 0.7}, {"validation": None, "status": "failed"}, {"validation": 0.9},
              {"validation": math.nan}, {"validation": 0.9}]
    assert choose_best(trials, lower_is_better=False) == 2  # the first of a tie
    assert choose_best(trials, lower_is_better=True) == 0
    assert choose_best([{"validation": None}], lower_is_better=False) is None


def test_causal_lm_trials_are_ranked_by_validation_perplexity(tmp_path):
    cfg = parse_config({"name": "x", "task": "causal_lm", "data": {"source": str(tmp_path / "d.jsonl")}})
    assert validation_metric(cfg) == ("perplexity", True)
    assert validation_metric(parse_config(make_config(tmp_path / "d.csv", tmp_path))) == ("f1_macro", False)
