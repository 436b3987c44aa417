"""Classification and regression metrics with scikit-learn and scipy (no metric scripts from a hub).

Reads true and predicted label ids (or numeric targets); returns plain JSON-able dicts.
"""

from __future__ import annotations

from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict:
    """Accuracy, macro precision / recall / F1, a per-class report and the confusion matrix."""
    ids = list(range(len(labels)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, average="macro", zero_division=0
    )
    report = classification_report(
        y_true, y_pred, labels=ids, target_names=labels, output_dict=True, zero_division=0
    )
    per_class = {name: {k: float(v) for k, v in report[name].items()} for name in labels}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist()},
        "support": int(len(y_true)),
    }


def headline(metrics: dict) -> dict:
    """The scalar metrics only (what summaries and tables show)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def regression_metrics(y_true, y_pred) -> dict:
    """MSE, RMSE, MAE, R², Pearson and Spearman correlation, in the units of the targets given."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    mse = float(mean_squared_error(y_true, y_pred))
    constant = np.ptp(y_true) == 0 or np.ptp(y_pred) == 0  # correlation undefined: report 0, not NaN
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) > 1 else 0.0,
        "pearson": 0.0 if constant else float(pearsonr(y_true, y_pred)[0]),
        "spearman": 0.0 if constant else float(spearmanr(y_true, y_pred)[0]),
        "support": int(len(y_true)),
    }
