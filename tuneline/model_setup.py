"""Build the model the Trainer trains: the task head, and which weights train (full | freeze | lora).

Reads the base model folder, the config and the prepared meta (labels, target scaling);
writes nothing. Also the class-weighted loss for ``training.class_weights: balanced``.

- full:   every weight trains.
- freeze: only the new task head (the weights the base checkpoint lacks, e.g. BERT's
          ``classifier``) trains, plus the top ``model.unfreeze_top_layers`` encoder layers.
- lora:   PEFT low-rank adapters on ``model.lora.target_modules`` (per-architecture
          defaults below); the new head is trained in full and saved beside the adapter
          (``modules_to_save``). The base weights never change.
"""

from __future__ import annotations

from tuneline.base_models import EMBEDDED
from tuneline.config import FinetuneConfig, Task
from tuneline.errors import ConfigError
from tuneline.targets import CONFIG_KEY

# Attention projections per model type (BERT-like encoders: query / key / value); others use PEFT's table.
LORA_TARGETS = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "electra": ["query", "key", "value"],
    "mpnet": ["q", "k", "v"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj"],
}


def portable_base_name(base: str) -> str:
    """How an adapter names its base: the hub id of an embedded model, else the configured folder."""
    if base in EMBEDDED:
        return "sentence-transformers/all-MiniLM-L6-v2" if "MiniLM-L6" in base else base
    return base


def head_options(cfg: FinetuneConfig, prepared: dict) -> dict:
    """from_pretrained kwargs for the task head: one output for regression, one per label otherwise."""
    if cfg.task == Task.regression:
        return {"num_labels": 1, "problem_type": "regression"}
    labels = prepared["labels"]
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "problem_type": "single_label_classification"}


def build_model(cfg: FinetuneConfig, base, prepared: dict):
    """(model ready for the Trainer, number of trainable parameters)."""
    from transformers import AutoModelForSequenceClassification

    model, info = AutoModelForSequenceClassification.from_pretrained(
        base, output_loading_info=True, **head_options(cfg, prepared))
    if cfg.task == Task.regression:
        setattr(model.config, CONFIG_KEY, prepared.get("target_scaling") or {"kind": "none"})
    new_weights = sorted(info["missing_keys"])  # the freshly initialised head
    method = cfg.model.method.value
    if method == "freeze":
        freeze_all_but_head(model, new_weights, cfg.model.unfreeze_top_layers)
    elif method == "lora":
        model = add_lora(model, cfg, new_weights)
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad)


def encoder_layers(model):
    """The stack of transformer layers (the ModuleList as long as config.num_hidden_layers)."""
    import torch

    count = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(f"model.unfreeze_top_layers: cannot find the encoder layers of {type(model).__name__}")


def freeze_all_but_head(model, new_weights: list[str], top_layers: int) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name in new_weights
    if top_layers:
        layers = encoder_layers(model)
        if top_layers > len(layers):
            raise ConfigError(f"model.unfreeze_top_layers: {top_layers} > the model's {len(layers)} layers")
        for layer in list(layers)[-top_layers:]:
            for parameter in layer.parameters():
                parameter.requires_grad = True


def lora_targets(cfg: FinetuneConfig, model_type: str) -> list[str]:
    if cfg.model.lora.target_modules:
        return list(cfg.model.lora.target_modules)
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    if model_type in PEFT_TARGETS:
        return list(PEFT_TARGETS[model_type])
    raise ConfigError(f"model.lora.target_modules: no default for model type {model_type!r}; name the modules")


def add_lora(model, cfg: FinetuneConfig, new_weights: list[str]):
    from peft import LoraConfig, TaskType, get_peft_model

    lora = cfg.model.lora
    head_modules = sorted({name.rsplit(".", 1)[0] for name in new_weights})  # e.g. "classifier"
    settings = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=lora_targets(cfg, model.config.model_type), modules_to_save=head_modules)
    try:
        return get_peft_model(model, settings)
    except ValueError as err:  # e.g. a target module that does not exist
        raise ConfigError(f"model.lora: {err}") from None


def class_weight_loss(cfg: FinetuneConfig, train_set, labels: list[str] | None):
    """``compute_loss_func`` for the Trainer: cross-entropy weighted n / (k * count_c); None when off."""
    if cfg.task != Task.classification or cfg.training.class_weights.value == "none":
        return None
    import numpy as np
    import torch

    counts = np.bincount(np.asarray(train_set["labels"]), minlength=len(labels)).astype(float)
    weights = np.where(counts > 0, counts.sum() / (len(labels) * np.maximum(counts, 1)), 1.0)
    print(f"class weights: {dict(zip(labels, np.round(weights, 3).tolist()))}", flush=True)
    weight = torch.tensor(weights, dtype=torch.float32)

    def loss(outputs, target, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return torch.nn.functional.cross_entropy(logits.view(-1, len(labels)).float(), target.view(-1),
                                                 weight=weight.to(logits.device))

    return loss
