"""Hyper-parameter sweeps without Prefect: expand a grid, build each trial's config, score it on
the validation split, pick the best.

Reads the base config, ``--grid key.path=v1,v2`` assignments and the trials' results; writes
``evaluations/<key>/metrics.json`` for a trial's validation split (the same scoring as the
test split's, ``tuneline.stages.evaluate.score_model``). The flow in ``flows/sweep.py`` runs each
trial as a child flow run and registers the best only.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import yaml

from tuneline import keys, objectives
from tuneline.config import FinetuneConfig, apply_override, parse_config
from tuneline.errors import ConfigError
from tuneline.metrics import headline
from tuneline.results import Prepared, Trained, ValidationScore
from tuneline.stages.evaluate import score_model
from tuneline.storage import Storage


def parse_grid(assignments: list[str]) -> dict[str, list]:
    """``["training.learning_rate=1e-4,3e-4"]`` -> ``{"training.learning_rate": [0.0001, 0.0003]}`` (YAML values)."""
    grid: dict[str, list] = {}
    for assignment in assignments:
        key, sep, values = assignment.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {assignment!r}: expected key.path=value1,value2,...")
        if key.strip() in grid:
            raise ConfigError(f"--grid {key.strip()}: given twice; list all its values in one --grid")
        grid[key.strip()] = [grid_value(v) for v in values.split(",")]
    return grid


def grid_value(text: str) -> Any:
    """A YAML scalar, with 5e-5 read as a number (YAML 1.1 wants 5.0e-5)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def expand_grid(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination, in a stable order: the first key varies slowest."""
    if not grid:
        raise ConfigError("a sweep needs at least one --grid key.path=v1,v2")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid {key}: needs a non-empty list of values")
    names = list(grid)
    return [dict(zip(names, combination)) for combination in itertools.product(*(grid[k] for k in names))]


def trial_config(base: FinetuneConfig, parameters: dict[str, Any], trial: int) -> FinetuneConfig:
    """The base config with one trial's values applied, validated like any config."""
    raw = base.model_dump(mode="json")
    for key, value in parameters.items():
        apply_override(raw, f"{key}={json.dumps(value)}")
    return parse_config(raw, where=f"sweep trial {trial} ({parameters})")


def validation_metric(cfg: FinetuneConfig) -> tuple[str, bool]:
    """(metric the trials are ranked by on the validation split, lower is better): the objective's choice."""
    return objectives.get(cfg.task.value).ranking_metric(cfg)


def validation_scores(storage: Storage, prepared: Prepared, trained: Trained, cfg: FinetuneConfig) -> ValidationScore:
    """A trained candidate's metrics on the validation split (never the test split), stored once."""
    metric, lower = validation_metric(cfg)
    metrics, reused = score_model(storage, storage.local_dir(keys.candidate_model(trained.key)),
                                  trained.model_fingerprint, prepared, cfg, split="validation", reuse=cfg.cache)
    scalars = headline(metrics)
    return ValidationScore(metric=metric, lower_is_better=lower, value=scalars[metric], metrics=scalars,
                           reused=reused)


def choose_best(trials: list[dict], lower_is_better: bool) -> int | None:
    """Index of the trial with the best validation value (the first one on a tie); None if none finished."""
    finished = [(i, t["validation"]) for i, t in enumerate(trials)
                if t.get("validation") is not None and t["validation"] == t["validation"]]  # not NaN
    if not finished:
        return None
    return min(finished, key=lambda item: (item[1] if lower_is_better else -item[1], item[0]))[0]
