"""classification_metrics against a small example worked out by hand."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from tuneline.metrics import classification_metrics, headline

LABELS = ["cat", "dog", "fox"]
CAT, DOG, FOX = range(3)

# Six examples. Per true class:  cat -> cat, cat, dog   dog -> dog, dog   fox -> cat
Y_TRUE = [CAT, CAT, CAT, DOG, DOG, FOX]
Y_PRED = [CAT, CAT, DOG, DOG, DOG, CAT]


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# Worked by hand from the lists above (true positives / predicted / actual per class):
#   cat: tp 2, predicted 3, actual 3     dog: tp 2, predicted 3, actual 2     fox: tp 0, predicted 0, actual 1
HAND = {
    "cat": {"precision": 2 / 3, "recall": 2 / 3},
    "dog": {"precision": 2 / 3, "recall": 2 / 2},
    "fox": {"precision": 0.0, "recall": 0 / 1},  # never predicted: precision 0/0 counts as 0
}


def test_accuracy_is_the_share_of_exact_matches():
    metrics = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["support"] == 6


def test_macro_averages_weigh_every_class_equally():
    metrics = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    precision = [HAND[name]["precision"] for name in LABELS]
    recall = [HAND[name]["recall"] for name in LABELS]
    f1s = [f1(p, r) for p, r in zip(precision, recall)]
    assert metrics["precision_macro"] == pytest.approx(sum(precision) / 3)  # (2/3 + 2/3 + 0) / 3
    assert metrics["recall_macro"] == pytest.approx(sum(recall) / 3)  # (2/3 + 1 + 0) / 3
    assert metrics["f1_macro"] == pytest.approx(sum(f1s) / 3)  # (2/3 + 4/5 + 0) / 3
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 3)


def test_per_class_report_is_keyed_by_label_name():
    per_class = classification_metrics(Y_TRUE, Y_PRED, LABELS)["per_class"]
    assert list(per_class) == LABELS
    for name in LABELS:
        expected = HAND[name]
        assert per_class[name]["precision"] == pytest.approx(expected["precision"]), name
        assert per_class[name]["recall"] == pytest.approx(expected["recall"]), name
        assert per_class[name]["f1-score"] == pytest.approx(f1(expected["precision"], expected["recall"])), name
        assert per_class[name]["support"] == Y_TRUE.count(LABELS.index(name)), name


def test_confusion_matrix_rows_are_true_labels_and_columns_predictions():
    confusion = classification_metrics(Y_TRUE, Y_PRED, LABELS)["confusion_matrix"]
    assert confusion["labels"] == LABELS
    #                 predicted: cat dog fox
    assert confusion["matrix"] == [[2, 1, 0],  # true cat
                                   [0, 2, 0],  # true dog
                                   [1, 0, 0]]  # true fox
    for row, true_id in zip(confusion["matrix"], range(3)):
        assert sum(row) == Y_TRUE.count(true_id)


def test_a_class_that_is_never_predicted_scores_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's UndefinedMetricWarning would fail the test
        metrics = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    fox = metrics["per_class"]["fox"]
    assert (fox["precision"], fox["recall"], fox["f1-score"]) == (0.0, 0.0, 0.0)
    assert all(math.isfinite(v) for v in headline(metrics).values())


def test_a_label_absent_from_the_data_still_has_a_row_and_column():
    metrics = classification_metrics([CAT, DOG, CAT], [CAT, DOG, DOG], LABELS)
    matrix = metrics["confusion_matrix"]["matrix"]
    assert len(matrix) == len(LABELS) and all(len(row) == len(LABELS) for row in matrix)
    assert matrix[FOX] == [0, 0, 0] and [row[FOX] for row in matrix] == [0, 0, 0]
    assert metrics["per_class"]["fox"]["support"] == 0


def test_perfect_predictions_score_one():
    metrics = classification_metrics(Y_TRUE, Y_TRUE, LABELS)
    for name in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert metrics[name] == pytest.approx(1.0), name


def test_metrics_are_plain_json():
    metrics = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert json.loads(json.dumps(metrics)) == metrics


def test_headline_keeps_only_the_scalar_metrics():
    metrics = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert headline(metrics) == {k: metrics[k] for k in
                                 ("accuracy", "precision_macro", "recall_macro", "f1_macro", "support")}
