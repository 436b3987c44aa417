"""Model families: every supported architecture with every training method, with no download.

Each family is a tiny randomly initialised model built offline (``tests/tiny_models.py``: 2 layers,
saved as its family's published checkpoints are, with a BERT or SmolLM2 tokenizer). Two levels:

- in-process, every family x method: the classification objective builds the model exactly as the
  training child does (``trainer_parts``) and we check which weights train (freeze: the new head, plus
  the top layer from the model's own layer list; lora: PEFT adapters on the family's attention, the head
  saved beside them; full: everything), then one optimizer step on a padded batch;
- the whole pipeline (slow), every family once, the methods in rotation: ingest -> validate -> prepare
  -> train (the real child process) -> evaluate -> register, then the registered folder loads with
  plain transformers (+ peft) and predicts what ``tuneline.load_model_folder`` predicts.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.conftest import EXAMPLES
from tests.tiny_models import FAMILIES, MAX_POSITIONS, build_tiny_model, layer_list
from tuneline.config import parse_config
from tuneline.errors import ConfigError
from tuneline.models.methods import layer_stack, lora_targets
from tuneline.objectives.classification import Classification
from tuneline.results import Prepared

LABELS = ["negative", "positive"]
METHODS = ["full", "freeze", "lora"]
TEXTS = ["Broke after a day. Avoid.", "This kettle works perfectly, and it is quiet and quick. Love it.",
         "Terrible.", "Great value for the price."]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(family)``: the family's tiny base folder, built once per session on first use."""
    root, built = tmp_path_factory.mktemp("tiny-models"), {}

    def folder(family: str):
        if family not in built:
            built[family] = build_tiny_model(family, root)
        return built[family]

    return folder


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory):
    """The first 60 demo reviews (30 positive, 30 negative)."""
    source = tmp_path_factory.mktemp("data") / "reviews.csv"
    source.write_text("\n".join((EXAMPLES / "data" / "reviews.csv").read_text().splitlines()[:61]) + "\n")
    return source


def family_config(family: str, base, source, storage, method: str = "full", **model):
    return parse_config({
        "name": f"tiny-{family}",
        "data": {"source": str(source), "labels": LABELS},
        "model": {"base": str(base), "max_length": 32, "method": method, **model},
        "training": {"epochs": 1, "batch_size": 8, "checkpoint_every_steps": None},
        "evaluation": {"minimum": 0},
        "storage": str(storage),
    })


def parameter_names(model, prefixes) -> set[str]:
    return {name for name, _ in model.named_parameters() if any(name.startswith(p + ".") for p in prefixes)}


def trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


# -- in-process: how training builds each family, with each method --------------------------------

VARIANTS = {"full": {}, "freeze": {}, "freeze-top-layer": {"unfreeze_top_layers": 1}, "lora": {}}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_builds_every_family_with_every_method(tiny_model, tmp_path, family, variant):
    base, spec = tiny_model(family), FAMILIES[family]
    cfg = family_config(family, base, tmp_path / "data.csv", tmp_path / "store", variant.split("-")[0],
                        **VARIANTS[variant])
    objective = Classification()
    tokenizer = objective.tokenizer(base)
    rows = pd.DataFrame({"text": TEXTS, "label": ["negative", "positive", "negative", "positive"]})
    fitted = objective.fit(rows, rows, cfg)
    assert fitted == {"labels": LABELS}
    train_set = objective.encode(rows, cfg, tokenizer, fitted)
    prepared = Prepared(key="prepared/tiny", uri="memory://prepared/tiny", objective="classification",
                        dataset_fingerprint="0" * 64, counts={"train": len(rows)}, fitted=fitted)

    parts = objective.trainer_parts(cfg, base, prepared, train_set, tokenizer)
    model = parts.model
    task_model = model.get_base_model() if parts.adapter else model
    assert type(task_model).__name__.endswith("ForSequenceClassification")
    assert task_model.config.model_type == spec.model_type and task_model.config.num_labels == 2
    assert task_model.config.pad_token_id == tokenizer.pad_token_id is not None
    head = parameter_names(task_model, spec.classifier_head)
    assert head, f"no {spec.classifier_head} in {type(task_model).__name__}"
    layers = layer_list(task_model, spec)
    assert layer_stack(task_model) is layers  # methods.py finds the family's own layer list

    if variant == "full":
        assert trainable_names(model) == {name for name, _ in model.named_parameters()}
    elif variant.startswith("freeze"):
        top = parameter_names(task_model, [f"{spec.layers}.{len(layers) - 1}"]) if VARIANTS[variant] else set()
        assert trainable_names(model) == head | top
        assert not any(p.requires_grad for p in layers[0].parameters())
    else:
        check_lora(model, task_model, spec, layers)
    assert parts.trainable_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)

    one_training_step(model, parts.collator([train_set[i] for i in range(len(train_set))]))


def check_lora(model, task_model, spec, layers) -> None:
    """Adapters on every layer's targets (methods.py's table or PEFT's default), the new head trained and saved."""
    from peft import PeftModel

    assert isinstance(model, PeftModel)
    settings = model.peft_config["default"]
    targets = lora_targets(None, spec.model_type)
    assert set(settings.target_modules) == set(targets)
    adapted = {name for name, module in task_model.named_modules() if hasattr(module, "lora_A")}
    for index in range(len(layers)):
        inside = f"{spec.layers}.{index}."
        for target in targets:
            assert any(n.startswith(inside) and n.endswith("." + target) for n in adapted), (index, target, adapted)
    assert all(n.startswith(spec.layers + ".") for n in adapted), adapted  # no adapter on the head or embeddings
    assert set(spec.classifier_head) <= set(settings.modules_to_save)
    trainable = trainable_names(model)
    assert all("lora_" in n or ".modules_to_save." in n for n in trainable), sorted(trainable)
    for module in spec.classifier_head:  # the head's trained copy
        assert any(f"{module}.modules_to_save.default." in n for n in trainable), (module, sorted(trainable))


def one_training_step(model, batch) -> None:
    """Forward + backward + one SGD step on a padded batch: trainable weights move, frozen ones do not."""
    assert (batch["attention_mask"] == 0).any(), "the batch should need padding"
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    output = model(**batch)
    assert output.logits.shape == (len(batch["labels"]), 2)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    torch.optim.SGD(trainable, lr=0.5).step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed and changed <= trainable_names(model)


# -- the whole pipeline, each family once, methods in rotation ------------------------------------

ROTATION = [(family, METHODS[i % len(METHODS)]) for i, family in enumerate(FAMILIES)]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "method"), ROTATION)
def test_pipeline_trains_registers_and_plain_transformers_loads_it(tiny_model, reviews_csv, tmp_path, family,
                                                                   method):
    from tuneline import keys
    from tuneline.data.ingest import ingest_dataset
    from tuneline.loading import load_model_folder
    from tuneline.stages.evaluate import evaluate_candidate
    from tuneline.stages.prepare import prepare_splits
    from tuneline.stages.register import register_candidate
    from tuneline.stages.validate import validate_dataset
    from tuneline.storage import open_storage
    from tuneline.training.launcher import train_candidate

    base = tiny_model(family)
    cfg = family_config(family, base, reviews_csv, tmp_path / "store", method)
    storage = open_storage(cfg.storage_root())
    dataset = ingest_dataset(cfg.data.source, storage, cfg.data.format.value)
    assert validate_dataset(storage, dataset, cfg).success
    prepared = prepare_splits(storage, dataset, cfg)
    assert prepared.labels == LABELS and sum(prepared.counts.values()) == 60
    log: list[str] = []
    trained = train_candidate(storage, prepared, cfg, log_line=log.append)
    assert trained.method == method and trained.global_step > 0, log[-20:]
    evaluation = evaluate_candidate(storage, prepared, trained, cfg)
    assert 0 <= evaluation.metrics["f1_macro"] <= 1 and evaluation.gate["passed"]
    registered = register_candidate(storage, cfg, dataset, prepared, trained, evaluation)
    assert registered.registered and registered.version == 1
    folder = storage.local_dir(f"{keys.version_dir(cfg.name, registered.version)}/model")

    check_saved_weights(folder, base, method, FAMILIES[family])
    plain = load_plainly(folder, base, method)
    ours, tokenizer = load_model_folder(folder)
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        expected, got = plain.eval()(**batch).logits, ours.eval()(**batch).logits
    assert expected.shape == (len(TEXTS), 2)
    assert torch.allclose(expected, got, atol=1e-5)
    assert expected.argmax(-1).tolist() == got.argmax(-1).tolist()


def check_saved_weights(folder, base, method: str, spec) -> None:
    """freeze: every base weight saved unchanged; full: base weights moved; lora: adapters + the head only."""
    from safetensors.torch import load_file

    if method == "lora":
        saved = load_file(str(folder / "adapter_model.safetensors"))
        heads = [f".{module}." for module in spec.classifier_head]
        assert all("lora_" in k or any(h in k for h in heads) for k in saved), sorted(saved)
        assert all(any(h in k for k in saved) for h in heads), sorted(saved)
        return
    before, after = load_file(str(base / "model.safetensors")), load_file(str(folder / "model.safetensors"))
    shared = [k for k in before if k in after and before[k].shape == after[k].shape]
    assert len(shared) > 10, sorted(after)
    unchanged = [k for k in shared if torch.equal(before[k], after[k])]
    assert unchanged == shared if method == "freeze" else len(unchanged) < len(shared)


def load_plainly(folder, base, method: str):
    """The registered folder with transformers alone (+ peft for an adapter, over the tiny base folder)."""
    import json

    from transformers import AutoConfig, AutoModelForSequenceClassification

    assert not any(folder.rglob("*.bin")) and any(folder.rglob("*.safetensors"))
    config = AutoConfig.from_pretrained(folder)
    assert config.id2label == dict(enumerate(LABELS)) and config.pad_token_id is not None
    if method != "lora":
        assert not (folder / "adapter_config.json").exists()
        return AutoModelForSequenceClassification.from_pretrained(folder)
    from peft import PeftModel

    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and adapter["base_model_name_or_path"] == str(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, config=config)
    return PeftModel.from_pretrained(model, folder)


# -- model.max_length against the model's positions ----------------------------------------------

@pytest.mark.parametrize("family", ["bert", "llama"])
def test_max_length_beyond_the_models_positions_is_a_config_error(tiny_model, reviews_csv, tmp_path, family):
    from tuneline.data.ingest import ingest_dataset
    from tuneline.stages.prepare import prepare_splits
    from tuneline.storage import open_storage

    base = tiny_model(family)
    too_long = family_config(family, base, reviews_csv, tmp_path / "store", max_length=2 * MAX_POSITIONS)
    storage = open_storage(too_long.storage_root())
    dataset = ingest_dataset(too_long.data.source, storage)
    with pytest.raises(ConfigError) as raised:
        prepare_splits(storage, dataset, too_long)
    message = str(raised.value)
    assert "model.max_length" in message and str(2 * MAX_POSITIONS) in message and str(MAX_POSITIONS) in message
    fits = family_config(family, base, reviews_csv, tmp_path / "store", max_length=MAX_POSITIONS)
    assert prepare_splits(storage, dataset, fits).counts["train"] > 0
