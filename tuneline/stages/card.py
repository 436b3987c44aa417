"""The model card: the ``README.md`` of a registered version, in the Hugging Face model-card format.

Reads the registration's manifest fields (config, metrics, gate decision, champion metrics, base model,
fitted labels, training facts) and the split sizes; writes nothing (``Registry.register`` stores it in the
version's folder). The YAML header comes from ``huggingface_hub``'s ``ModelCardData`` and ``EvalResult``
(``model-index``); the body says what the model is for, how it was trained, what the gate decided against
which champion, and how to load it with plain transformers (the objective writes that example).

The card is deterministic: the same registration gives the same bytes (no timestamps, no run id), so a
retried registration writes the card its first attempt wrote.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from tuneline import objectives
from tuneline.errors import redact_urls
from tuneline.models.base import portable_base_name

if TYPE_CHECKING:
    from tuneline.config import FinetuneConfig
    from tuneline.objectives import Objective

TUNELINE = "tuneline"


def model_card(cfg: FinetuneConfig, fields: dict, version: int, counts: dict[str, int]) -> str:
    """The card of ``cfg.name`` version ``version`` from its manifest ``fields`` (``build_manifest``)."""
    from huggingface_hub import ModelCard

    objective = objectives.get(fields["task"])
    adapter = bool(fields["training"].get("adapter"))
    header = card_data(cfg, fields, objective, adapter).to_yaml()
    sections = [title(cfg, fields, objective, version, adapter), intended_use(cfg, fields, objective, counts),
                training(cfg, fields), evaluation(cfg, fields, counts), how_to_load(cfg, objective, version, adapter)]
    return str(ModelCard(f"---\n{header}\n---\n\n" + "\n\n".join(sections) + "\n"))


def card_data(cfg: FinetuneConfig, fields: dict, objective: Objective, adapter: bool):
    """The YAML header: base model and revision, task, library, dataset fingerprint, test metrics (model-index)."""
    from huggingface_hub import EvalResult, ModelCardData

    source = data_source(cfg)
    results = [EvalResult(task_type=objective.pipeline_tag, task_name=objective.description, dataset_type=source,
                          dataset_name=PurePosixPath(source.rstrip("/")).name or source, dataset_split="test",
                          dataset_revision=fields["dataset_fingerprint"], metric_type=name, metric_name=name,
                          metric_value=value)
               for name, value in scores(fields["metrics"]).items()]
    revision = base_revision(fields["base_model"])
    return ModelCardData(
        model_name=cfg.name, base_model=base_name(fields["base_model"]), pipeline_tag=objective.pipeline_tag,
        library_name="peft" if adapter else "transformers", tags=[TUNELINE, objective.name, cfg.model.method.value],
        eval_results=results, dataset_fingerprint=fields["dataset_fingerprint"],
        **({"base_model_revision": revision} if revision else {}),
    )


def scores(metrics: dict) -> dict[str, float]:
    """The scalar scores of a metrics dict (counts such as ``support`` are not scores)."""
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def data_source(cfg: FinetuneConfig) -> str:
    return redact_urls(cfg.data.source)


def base_name(base: dict) -> str:
    """The base model as the Hub names it (embedded models by their Hub id), else as configured."""
    return portable_base_name(base["name"])


def base_revision(base: dict) -> str | None:
    return base.get("commit") or base.get("revision")


def title(cfg: FinetuneConfig, fields: dict, objective: Objective, version: int, adapter: bool) -> str:
    method = cfg.model.method.value + (" (a PEFT adapter over the base model)" if adapter else "")
    return (f"# {cfg.name} v{version}\n\n"
            f"Fine-tuned by {TUNELINE} from `{base_name(fields['base_model'])}` for `task: {objective.name}`: "
            f"{objective.description}. Method: {method}.")


def intended_use(cfg: FinetuneConfig, fields: dict, objective: Objective, counts: dict[str, int]) -> str:
    fitted = fields.get("fitted") or {}
    lines = ["## Intended use", "",
             f"Input: {objective.input_noun} like those it was trained on (columns "
             f"{', '.join(f'`{c}`' for c in objective.input_columns(cfg))}); longer than {cfg.model.max_length} "
             "tokens, they are cut."]
    if fitted.get("labels"):
        lines.append(f"Output: one of {', '.join(f'`{label}`' for label in fitted['labels'])}.")
    scaling = fitted.get("target_scaling") or {}
    if scaling.get("kind", "none") != "none":
        lines.append(f"Output: a number; trained on {scaling['kind']}-scaled targets (un-scale with "
                     f"`tuneline_target_scaling` in config.json: {scaling}).")
    split_sizes = ", ".join(f"{counts[s]} {s}" for s in ("train", "validation", "test") if s in counts)
    lines += ["", f"Trained and tested on `{data_source(cfg)}` only (dataset fingerprint "
                  f"`{fields['dataset_fingerprint']}`; rows: {split_sizes}). Use it on data like that; check it on "
                  "your own data before you rely on it anywhere else."]
    return "\n".join(lines)


def training(cfg: FinetuneConfig, fields: dict) -> str:
    trained, settings = fields["training"], cfg.training
    base, revision = fields["base_model"], base_revision(fields["base_model"])
    rows = [("base model", f"`{base_name(base)}`" + (f" at `{revision}`" if revision else "")),
            ("method", cfg.model.method.value + (f" (r={cfg.model.lora.r}, alpha={cfg.model.lora.alpha})"
                                                 if cfg.model.method.value == "lora" else "")),
            ("epochs", settings.epochs), ("learning rate", trained.get("learning_rate")),
            ("batch size x accumulation", f"{trained.get('batch_size')} x {trained.get('gradient_accumulation')}"),
            ("max length (tokens)", cfg.model.max_length), ("precision", trained.get("precision")),
            ("seed", settings.seed), ("steps", f"{trained.get('global_step')} of {trained.get('max_steps')}"),
            ("train loss", trained.get("train_loss")), ("device", trained.get("device")),
            ("code", f"`{fields.get('code_version')}`")]
    return "\n".join(["## Training", "", "| setting | value |", "|---|---|",
                      *(f"| {name} | {cell(value)} |" for name, value in rows)])


def evaluation(cfg: FinetuneConfig, fields: dict, counts: dict[str, int]) -> str:
    gate, metrics, champion = fields["gate"], scores(fields["metrics"]), fields.get("champion_metrics") or {}
    against = gate.get("champion")
    header = f"champion v{against['version']}" if against else "champion"
    lines = ["## Evaluation and gate", "", f"Test split ({counts.get('test', '?')} rows), beside the champion "
             f"(`{cfg.name}@{cfg.evaluation.champion_alias}` when this version was registered) on the same rows:", "",
             f"| metric | this version | {header} |", "|---|---|---|",
             *(f"| {name} | {cell(value)} | {cell(champion.get(name)) or '-'} |" for name, value in metrics.items()),
             "", f"Gate on `{gate['metric']}`: **{gate['decision']}** ({gate['reason']})."]
    if gate.get("promote") and cfg.evaluation.approval.value == "required":
        lines.append(f"The promotion to `{cfg.evaluation.champion_alias}` needs a person's approval "
                     "(`evaluation.approval: required`): who decided, when and why goes into the alias history "
                     f"(`registry/{cfg.name}/aliases/{cfg.evaluation.champion_alias}.json`).")
    return "\n".join(lines)


def how_to_load(cfg: FinetuneConfig, objective: Objective, version: int, adapter: bool) -> str:
    folder = f"{cfg.name}-v{version}"
    example = objective.load_example(folder, cfg, adapter)
    needs = "transformers and peft" if "import PeftModel" in example else "transformers"
    return "\n".join([
        "## How to load", "",
        f"Pull the version (`tuneline models pull {cfg.name}:{version} {folder}`), then with plain {needs} "
        "(safetensors weights; no remote code):", "",
        "```python", example, "```", "",
        f'With tuneline: `model, tokenizer = tuneline.load_model("{cfg.name}:{version}")`.'])


def cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
