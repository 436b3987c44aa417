"""Which weights train: full | freeze (the new head, plus top layers) | lora (PEFT adapters).

Reads a loaded model and the ``model`` config section; changes ``requires_grad`` or wraps the
model with PEFT; writes nothing. Objectives call ``apply_method`` after loading a model with
their head; the method logic is the same for every task kind and model family.

- full:   every weight trains.
- freeze: only the new task head (the weights the base checkpoint lacks, e.g. BERT's
          ``classifier`` or Llama's ``score``) trains, plus the top ``model.unfreeze_top_layers``
          transformer layers.
- lora:   PEFT low-rank adapters on ``model.lora.target_modules`` (per-architecture defaults
          below, else PEFT's own table); the new head trains in full and is saved beside the
          adapter (``modules_to_save``). The base weights never change.
"""

from __future__ import annotations

from tuneline.errors import ConfigError

# Attention projections per model type where PEFT has no default (or a narrower one).
LORA_TARGETS = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "electra": ["query", "key", "value"],
    "mpnet": ["q", "k", "v"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj"],
    "modernbert": ["Wqkv"],  # q, k and v in one fused projection
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def apply_method(model, model_cfg, new_weights: list[str], peft_task_type: str):
    """(model ready for the Trainer, number of trainable parameters) for ``model.method``."""
    method = model_cfg.method.value
    if method == "freeze":
        freeze_all_but(model, new_weights, model_cfg.unfreeze_top_layers)
    elif method == "lora":
        model = add_lora(model, model_cfg, new_weights, peft_task_type)
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_stack(model):
    """The stack of transformer layers (the ModuleList as long as config.num_hidden_layers)."""
    import torch

    count = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(f"model.unfreeze_top_layers: cannot find the transformer layers of {type(model).__name__}")


def freeze_all_but(model, new_weights: list[str], top_layers: int) -> None:
    """Only ``new_weights`` (the head) and the top ``top_layers`` layers keep requires_grad."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name in new_weights
    if top_layers:
        layers = layer_stack(model)
        if top_layers > len(layers):
            raise ConfigError(f"model.unfreeze_top_layers: {top_layers} > the model's {len(layers)} layers")
        for layer in list(layers)[-top_layers:]:
            for parameter in layer.parameters():
                parameter.requires_grad = True


def lora_targets(configured: list[str] | None, model_type: str) -> list[str]:
    if configured:
        return list(configured)
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    if model_type in PEFT_TARGETS:
        return list(PEFT_TARGETS[model_type])
    raise ConfigError(f"model.lora.target_modules: no default for model type {model_type!r}; name the modules")


def head_modules(model, new_weights: list[str]) -> list[str]:
    """The outermost modules holding only new weights: RoBERTa's whole ``classifier``, not its ``dense`` and
    ``out_proj``. PEFT adds ``classifier`` / ``score`` to ``modules_to_save`` itself and matches names by suffix,
    so saving the inner modules as well would nest one saved copy in another and leave the head untrained."""
    new, found = set(new_weights), set()
    for weight in new:
        path = weight.split(".")[:-1]
        for depth in range(1, len(path) + 1):
            name = ".".join(path[:depth])
            inside = [f"{name}.{inner}" for inner, _ in model.get_submodule(name).named_parameters()]
            if inside and new.issuperset(inside):
                found.add(name)
                break
    return sorted(found)


def add_lora(model, model_cfg, new_weights: list[str], peft_task_type: str):
    """Wrap with LoRA adapters; the new head (``new_weights``' modules) trains in full and is saved."""
    from peft import LoraConfig, get_peft_model

    lora = model_cfg.lora
    settings = LoraConfig(task_type=peft_task_type, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=lora_targets(lora.target_modules, model.config.model_type),
                          modules_to_save=head_modules(model, new_weights) or None)
    try:
        return get_peft_model(model, settings)
    except ValueError as err:  # e.g. a target module that does not exist
        raise ConfigError(f"model.lora: {err}") from None
