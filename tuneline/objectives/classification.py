"""``task: classification``: one label per text (or text pair), cross-entropy, optional class weights.

Works with encoders (BERT, RoBERTa, ...) and decoders (Llama, Qwen, Mistral, SmolLM2: the
sequence-classification head pools the last non-pad token; a pad token is set when missing).
Reads ``data.text_column`` [+ ``text_pair_column``] and ``data.label_column``; labels in id order
are ``data.labels`` or, unset, sorted from the data. Metrics: accuracy, macro precision / recall / F1,
a per-class report and the confusion matrix (scikit-learn). Predictions: ``label`` (the most probable)
and ``probability_<label>`` per class (softmax, summing to 1), labels from the model's ``id2label``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneline.data.expectations import MAX_EXAMPLES
from tuneline.data.splits import STRATUM
from tuneline.metrics import classification_metrics
from tuneline.objectives.base import HIGHER, PredictionInputs
from tuneline.objectives.heads import TextObjective

if TYPE_CHECKING:
    import pandas as pd

    from tuneline.config import FinetuneConfig


class Classification(TextObjective):
    name = "classification"
    description = "one label per text or text pair (cross-entropy)"
    metrics = {"accuracy": HIGHER, "f1_macro": HIGHER, "precision_macro": HIGHER, "recall_macro": HIGHER}
    default_metric = "f1_macro"
    has_label_set = True
    weighs_classes = True

    def derive(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> pd.DataFrame:
        frame = super().derive(frame, cfg)
        frame[STRATUM] = frame[cfg.data.label_column].astype(str)
        return frame

    def expectations(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> list:
        import great_expectations.expectations as gxe

        found = super().expectations(frame, cfg)
        if cfg.data.labels:
            found.append(gxe.ExpectColumnValuesToBeInSet(column=cfg.data.label_column, value_set=cfg.data.labels))
        return found

    def checks(self, frame: pd.DataFrame, cfg: FinetuneConfig, before: list[dict] | None = None) -> list[dict]:
        """Every label has ``validation.min_rows_per_class`` rows, and there are at least two labels (counted over
        this batch and the ones ``before``)."""
        import pandas as pd

        counts = frame[cfg.data.label_column].dropna().astype(str).value_counts()
        if before:  # add the earlier batches' counts; most rows first, ties by label
            counts = (pd.Series(before[0]["observed"], dtype="int64").add(counts, fill_value=0).astype("int64")
                      .sort_values(ascending=False, kind="stable"))
        small = counts[counts < cfg.validation.min_rows_per_class]
        return [{
            "expectation": "expect_rows_per_class_to_be_at_least",
            "column": cfg.data.label_column,
            "success": len(counts) >= 2 and small.empty,
            "observed": {str(k): int(v) for k, v in counts.items()},
            "minimum": cfg.validation.min_rows_per_class,
            **({"examples": list(small.index[:MAX_EXAMPLES])} if not small.empty else {}),
            **({"error": "need at least two distinct labels"} if len(counts) < 2 else {}),
        }]

    def fit(self, train: pd.DataFrame, frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
        """Labels in id order: as configured, else sorted from all rows (a class only in test still gets an id)."""
        labels = cfg.data.labels or sorted(frame[cfg.data.label_column].astype(str).unique())
        return {"labels": list(labels)}

    def fit_columns(self, cfg: FinetuneConfig) -> list[str]:
        return [] if cfg.data.labels else [cfg.data.label_column]

    def targets(self, rows: pd.DataFrame, cfg: FinetuneConfig, fitted: dict) -> list:
        ids = {name: i for i, name in enumerate(fitted["labels"])}
        return [ids[str(v)] for v in rows[cfg.data.label_column]]

    def head_options(self, fitted: dict) -> dict:
        labels = fitted["labels"]
        return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)},
                "problem_type": "single_label_classification"}

    def metrics_from(self, logits, labels, fitted: dict, model_config=None) -> dict:
        return classification_metrics(labels, logits.argmax(-1), fitted["labels"])

    def example_prediction(self, cfg: FinetuneConfig) -> list[str]:
        return [*self.example_encoding(cfg),
                "with torch.inference_mode():",
                "    logits = model(**encoded).logits",
                "labels = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]",
                "print(labels)"]

    def predictions_from(self, logits, encoded, rows: pd.DataFrame, inputs: PredictionInputs,
                         model_config) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        labels = [str(model_config.id2label[i]) for i in range(logits.shape[-1])]
        shifted = np.exp(logits.astype("float64") - logits.max(-1, keepdims=True))  # softmax, no overflow
        probabilities = shifted / shifted.sum(-1, keepdims=True)
        columns = {"label": [labels[i] for i in probabilities.argmax(-1)]}
        columns |= {f"probability_{label}": probabilities[:, i] for i, label in enumerate(labels)}
        return pd.DataFrame(columns, index=rows.index)

    def loss(self, cfg: FinetuneConfig, train_set, fitted: dict):
        """``training.class_weights: balanced``: cross-entropy weighted n / (k * count_c) from the training split."""
        if cfg.training.class_weights.value == "none":
            return None
        import numpy as np
        import torch

        labels = fitted["labels"]
        counts = np.bincount(np.asarray(train_set["labels"]), minlength=len(labels)).astype(float)
        weights = np.where(counts > 0, counts.sum() / (len(labels) * np.maximum(counts, 1)), 1.0)
        print(f"class weights: {dict(zip(labels, np.round(weights, 3).tolist()))}", flush=True)
        weight = torch.tensor(weights, dtype=torch.float32)

        def weighted_cross_entropy(outputs, target, num_items_in_batch=None):
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
            return torch.nn.functional.cross_entropy(logits.view(-1, len(labels)).float(), target.view(-1),
                                                     weight=weight.to(logits.device))

        return weighted_cross_entropy

    def claims(self, folder_config: dict, adapter_config: dict | None) -> bool:
        return super().claims(folder_config, adapter_config) and folder_config.get("problem_type") != "regression"
