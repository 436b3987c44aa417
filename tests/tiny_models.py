"""Tiny randomly initialised models of each supported family, saved as plain base-model folders.

Writes ``<dest>/<family>/`` (config.json, model.safetensors, the tokenizer): what a published checkpoint
of that family looks like, at a size that trains in a second on CPU. Encoders are saved with their
pre-training head (``AutoModelForPreTraining``, else ``AutoModelForMaskedLM``) and carry the BERT tokenizer
of the embedded all-MiniLM-L6-v2; decoders are saved as ``AutoModelForCausalLM`` with the SmolLM2 tokenizer.
Nothing is downloaded. ``FAMILIES`` also says, per family, what tests expect: the new task head's modules
and where the model keeps its transformer layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ENCODER_TOKENIZER = "all-MiniLM-L6-v2"
DECODER_TOKENIZER = "SmolLM2-135M-Instruct"
LAYERS = 2
MAX_POSITIONS = 64


@dataclass(frozen=True)
class Family:
    model_type: str
    decoder: bool
    classifier_head: tuple[str, ...]  # the whole modules a sequence-classification model adds to the saved base
    layers: str  # attribute path of the layer list in the sequence-classification model
    options: dict = field(default_factory=dict)  # config values beyond the shared small sizes
    takes_token_types: bool = True  # False: its own tokenizers emit no token_type_ids (forward refuses them)


ENCODER_SIZES = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
DECODER_SIZES = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
                 "tie_word_embeddings": True}

FAMILIES = {
    "bert": Family("bert", False, ("classifier",), "bert.encoder.layer"),
    "roberta": Family("roberta", False, ("classifier",), "roberta.encoder.layer"),
    "xlm-roberta": Family("xlm-roberta", False, ("classifier",), "roberta.encoder.layer"),
    # DeBERTa-v3 style: relative attention only, no absolute position embeddings.
    "deberta-v2": Family("deberta-v2", False, ("pooler", "classifier"), "deberta.encoder.layer",
                         {"relative_attention": True, "position_biased_input": False, "pos_att_type": ["p2c", "c2p"],
                          "max_relative_positions": -1, "position_buckets": 32, "norm_rel_ebd": "layer_norm",
                          "share_att_key": True, "type_vocab_size": 0, "pooler_hidden_size": 32}),
    "distilbert": Family("distilbert", False, ("pre_classifier", "classifier"), "distilbert.transformer.layer",
                         {"dim": 32, "n_heads": 2, "hidden_dim": 64, "n_layers": LAYERS},
                         takes_token_types=False),
    "electra": Family("electra", False, ("classifier",), "electra.encoder.layer",
                      {"embedding_size": 32}),
    "modernbert": Family("modernbert", False, ("classifier",), "model.layers",
                         {"local_attention": 16, "global_attn_every_n_layers": 2},
                         takes_token_types=False),
    "llama": Family("llama", True, ("score",), "model.layers"),
    "qwen2": Family("qwen2", True, ("score",), "model.layers"),
    "mistral": Family("mistral", True, ("score",), "model.layers", {"head_dim": 16}),
    "gemma": Family("gemma", True, ("score",), "model.layers", {"head_dim": 16}),
    "phi": Family("phi", True, ("score",), "model.layers", {"num_key_value_heads": 4}),
}


def tokenizer_for(family: Family):
    from transformers import AutoTokenizer

    from tuneline.models.base import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_base_model(DECODER_TOKENIZER if family.decoder else ENCODER_TOKENIZER))
    if not family.takes_token_types:  # as DistilBERT's and ModernBERT's own tokenizers (saved with the folder)
        tokenizer.model_input_names = tokenizer.init_kwargs["model_input_names"] = ["input_ids", "attention_mask"]
    tokenizer.model_max_length = tokenizer.init_kwargs["model_max_length"] = MAX_POSITIONS
    return tokenizer


def tiny_config(family: Family, tokenizer):
    """A 2-layer config whose vocabulary, special tokens and positions fit ``tokenizer``."""
    from transformers import AutoConfig

    special = {"pad_token_id": tokenizer.pad_token_id}
    if family.decoder:
        special |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    else:
        special |= {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id,
                    "cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id}
    sizes = DECODER_SIZES if family.decoder else ENCODER_SIZES
    settings = {"vocab_size": len(tokenizer), "num_hidden_layers": LAYERS, "max_position_embeddings": MAX_POSITIONS,
                **sizes, **special, **family.options}
    config = AutoConfig.for_model(family.model_type, **settings)
    assert config.vocab_size >= len(tokenizer) and 0 <= config.pad_token_id < config.vocab_size
    return config


def base_model_class(family: Family):
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_PRETRAINING_MAPPING_NAMES

    if family.decoder:
        return transformers.AutoModelForCausalLM
    if family.model_type in MODEL_FOR_PRETRAINING_MAPPING_NAMES:
        return transformers.AutoModelForPreTraining
    return transformers.AutoModelForMaskedLM


def build_tiny_model(name: str, dest: Path) -> Path:
    """``dest/<name>``: a randomly initialised (seeded) base model of family ``name`` plus its tokenizer."""
    import torch

    family = FAMILIES[name]
    folder = Path(dest) / name
    tokenizer = tokenizer_for(family)
    torch.manual_seed(0)
    model = base_model_class(family).from_config(tiny_config(family, tokenizer))
    model.save_pretrained(folder)  # safetensors
    tokenizer.save_pretrained(folder)
    return folder


def layer_list(model, family: Family):
    """The sequence-classification model's transformer layers, by the family's own attribute path."""
    module = model
    for part in family.layers.split("."):
        module = getattr(module, part)
    return module
