"""Classification metrics with scikit-learn (no metric scripts from a hub).

Reads true and predicted label ids; returns plain JSON-able dicts.
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
