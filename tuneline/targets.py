"""Regression targets: parse, scale with training-split statistics, and un-scale predictions.

Reads nothing; the scaling parameters are a plain dict saved in the prepared meta and in
the model's ``config.json`` as ``tuneline_target_scaling``:
``{"kind": "standard", "mean": m, "std": s}`` (y' = (y - m) / s) or
``{"kind": "minmax", "min": a, "max": b}`` (y' = (y - a) / (b - a)), or ``{"kind": "none"}``.
A prediction p in scaled units is ``p * std + mean`` (standard) or ``p * (max - min) + min`` (minmax).
"""

from __future__ import annotations

import numpy as np

CONFIG_KEY = "tuneline_target_scaling"  # the attribute on the saved model's config


def parse_targets(values) -> np.ndarray:
    """Numeric targets from a column that may hold strings (ingest keeps text as text)."""
    import pandas as pd

    return pd.to_numeric(pd.Series(values).astype(str).str.strip()).to_numpy(dtype=float)


def fit_scaling(values, kind: str) -> dict:
    """Scaling parameters for ``kind`` (none | standard | minmax) from the training targets."""
    values = np.asarray(values, dtype=float)
    if kind == "standard":
        std = float(values.std())
        return {"kind": "standard", "mean": float(values.mean()), "std": std if std > 0 else 1.0}
    if kind == "minmax":
        low, high = float(values.min()), float(values.max())
        return {"kind": "minmax", "min": low, "max": high if high > low else low + 1.0}
    return {"kind": "none"}


def scale(values, params: dict | None) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    kind = (params or {}).get("kind", "none")
    if kind == "standard":
        return (values - params["mean"]) / params["std"]
    if kind == "minmax":
        return (values - params["min"]) / (params["max"] - params["min"])
    return values


def unscale(values, params: dict | None) -> np.ndarray:
    """Scaled model outputs back in the target's original units."""
    values = np.asarray(values, dtype=float)
    kind = (params or {}).get("kind", "none")
    if kind == "standard":
        return values * params["std"] + params["mean"]
    if kind == "minmax":
        return values * (params["max"] - params["min"]) + params["min"]
    return values
