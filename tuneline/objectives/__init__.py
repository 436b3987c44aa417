"""The objectives: one per task kind, picked by the config's ``task`` (see ``base.Objective``).

Reads model folders' config files (``for_folder``); writes nothing. Adding a task kind is one
objective module plus one line in ``OBJECTIVES`` below.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneline.errors import ConfigError
from tuneline.objectives.base import HIGHER, LOWER, Objective
from tuneline.objectives.causal_lm import CausalLM
from tuneline.objectives.classification import Classification
from tuneline.objectives.regression import Regression
from tuneline.objectives.token_classification import TokenClassification

OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Classification(),
    Regression(),
    CausalLM(),
    TokenClassification(),
)}

__all__ = ["HIGHER", "LOWER", "OBJECTIVES", "Objective", "all_metrics", "for_folder", "get", "lower_is_better"]


def get(name: str) -> Objective:
    name = str(getattr(name, "value", name))
    if name not in OBJECTIVES:
        raise ConfigError(f"task: unknown objective {name!r}; use one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def all_metrics() -> dict[str, str]:
    """Every gate metric of every objective, with its direction (HIGHER or LOWER is better)."""
    return {metric: direction for o in OBJECTIVES.values() for metric, direction in o.metrics.items()}


def lower_is_better(metric: str) -> bool:
    return all_metrics()[str(getattr(metric, "value", metric))] == LOWER


def for_folder(folder: Path) -> Objective:
    """The objective that wrote a model folder, from its config.json / adapter_config.json."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    adapter = folder / "adapter_config.json"
    adapter_config = json.loads(adapter.read_text()) if adapter.is_file() else None
    for objective in OBJECTIVES.values():
        if objective.claims(config, adapter_config):
            return objective
    raise ConfigError(f"{folder}: not a model folder tuneline can load (architectures "
                      f"{config.get('architectures')}, adapter task {(adapter_config or {}).get('task_type')})")
