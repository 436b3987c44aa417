"""``task: regression``: one numeric target per text (or text pair), least squares (MSE).

Reads ``data.text_column`` [+ ``text_pair_column``] and a numeric ``data.label_column``. Splits are
stratified by target quantile. ``data.scale_targets`` trains on scaled targets; the scaling parameters are a plain dict saved in the prepared meta and in
the model's ``config.json`` as ``tuneline_target_scaling``:
``{"kind": "standard", "mean": m, "std": s}`` (y' = (y - m) / s) or
``{"kind": "minmax", "min": a, "max": b}`` (y' = (y - a) / (b - a)), or ``{"kind": "none"}``.
A prediction p in scaled units is ``p * std + mean`` (standard) or ``p * (max - min) + min`` (minmax);
batch predictions (``prediction``) are un-scaled so, with the model's own parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tuneline.data.expectations import check_entry
from tuneline.data.splits import STRATUM
from tuneline.metrics import regression_metrics
from tuneline.objectives.base import HIGHER, LOWER, PredictionInputs
from tuneline.objectives.heads import TextObjective

if TYPE_CHECKING:
    import pandas as pd

    from tuneline.config import FinetuneConfig

NUMERIC_TARGET = "_target"  # derived column: the label column parsed as numbers (unparseable -> null)
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


class Regression(TextObjective):
    name = "regression"
    description = "one number per text or text pair (least squares); metrics in the target's units"
    metrics = {"mse": LOWER, "rmse": LOWER, "mae": LOWER, "r2": HIGHER, "pearson": HIGHER, "spearman": HIGHER}
    default_metric = "pearson"
    scales_targets = True

    def derive(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> pd.DataFrame:
        import pandas as pd

        frame = super().derive(frame, cfg)
        labels = frame[cfg.data.label_column]
        numbers = pd.to_numeric(labels.str.strip(), errors="coerce")
        frame[NUMERIC_TARGET] = numbers.where(numbers.abs() != float("inf"))
        frame[STRATUM] = pd.to_numeric(labels, errors="coerce")  # a number: binned by quantiles over all rows
        return frame

    def expectations(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> list:
        import great_expectations.expectations as gxe

        found, limits = super().expectations(frame, cfg), cfg.validation
        if limits.target_min is not None or limits.target_max is not None:
            found.append(gxe.ExpectColumnValuesToBeBetween(column=NUMERIC_TARGET, min_value=limits.target_min,
                                                           max_value=limits.target_max))
        return found

    def checks(self, frame: pd.DataFrame, cfg: FinetuneConfig, before: list[dict] | None = None) -> list[dict]:
        """Every non-null target parses as a finite number."""
        raw = frame[cfg.data.label_column]
        bad = raw[raw.notna() & frame[NUMERIC_TARGET].isna()]
        return [check_entry("expect_column_values_to_be_numeric", cfg.data.label_column, bad, raw.notna().sum(),
                            before[0] if before else None)]

    def fit(self, train: pd.DataFrame, frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
        """Target scaling from the training split only, so nothing leaks from evaluation rows (the parsed targets
        when derived: validated data holds only finite numbers)."""
        kind = cfg.data.scale_targets.value
        if kind == "none":
            return {"target_scaling": fit_scaling([], kind)}
        targets = train[NUMERIC_TARGET] if NUMERIC_TARGET in train else parse_targets(train[cfg.data.label_column])
        return {"target_scaling": fit_scaling(targets, kind)}

    def fit_columns(self, cfg: FinetuneConfig) -> list[str]:
        return [NUMERIC_TARGET] if cfg.data.scale_targets.value != "none" else []

    def targets(self, rows: pd.DataFrame, cfg: FinetuneConfig, fitted: dict) -> list:
        return scale(parse_targets(rows[cfg.data.label_column]), fitted["target_scaling"]).astype("float32").tolist()

    def head_options(self, fitted: dict) -> dict:
        return {"num_labels": 1, "problem_type": "regression"}

    def configure_model(self, model, fitted: dict) -> None:
        setattr(model.config, CONFIG_KEY, fitted.get("target_scaling") or {"kind": "none"})

    def metrics_from(self, logits, labels, fitted: dict, model_config=None) -> dict:
        """Both sides in the target's original units: labels with this data's scaling, predictions with the
        scored model's own (a champion may have been trained with other statistics)."""
        own = getattr(model_config, CONFIG_KEY, None) if model_config is not None else fitted["target_scaling"]
        return regression_metrics(unscale(labels, fitted["target_scaling"]), unscale(logits[:, 0], own))

    def example_prediction(self, cfg: FinetuneConfig) -> list[str]:
        """The number in the target's units: un-scaled with the statistics the model's config carries."""
        lines = [*self.example_encoding(cfg),
                 "with torch.inference_mode():",
                 "    predictions = model(**encoded).logits[:, 0].tolist()"]
        kind = cfg.data.scale_targets.value
        if kind != "none":
            lines.append(f"scaling = model.config.{CONFIG_KEY}  # from the training split")
            unscaled = {"standard": 'p * scaling["std"] + scaling["mean"]',
                        "minmax": 'p * (scaling["max"] - scaling["min"]) + scaling["min"]'}[kind]
            lines.append(f"predictions = [{unscaled} for p in predictions]  # trained on {kind}-scaled targets")
        return [*lines, "print(predictions)"]

    def predictions_from(self, logits, encoded, rows: pd.DataFrame, inputs: PredictionInputs,
                         model_config) -> pd.DataFrame:
        """``prediction`` in the target's original units (the scaling the model's config carries)."""
        import pandas as pd

        return pd.DataFrame({"prediction": unscale(logits[:, 0], getattr(model_config, CONFIG_KEY, None))},
                            index=rows.index)

    def claims(self, folder_config: dict, adapter_config: dict | None) -> bool:
        return super().claims(folder_config, adapter_config) and folder_config.get("problem_type") == "regression"
