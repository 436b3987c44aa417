"""Evaluate a registered version on new labelled data, with the pipeline's own parts and the version's settings.

Reads a version's manifest (its ``config`` and ``fitted`` values) and model folder, and a labelled data
source; writes what the pipeline's stages write for it (the data's snapshot ``datasets/<fp16>/``, its
validation report, the rows encoded as one split under ``prepared/<key>/test``, the metrics under
``evaluations/<key>/``) and, beside the version, ``registry/<name>/versions/<NNNNNN>/evaluations/<fp16>.json``:
metrics, data fingerprint and source, rows, when, code version. The manifest is never rewritten (versions
stay immutable). The same version on the same data again returns the stored result (``reused``).

The data is read as the version read its training data: its columns and format, its label set (a label it
never learnt is a validation error), the labels' ids and target scaling it was fitted with (nothing is refitted
on the new rows), its tokenizer and ``model.max_length``. The checks that guard training only (enough rows
to train, per class; the split column; no input shared between splits) do not apply to rows that are only
scored. Scoring is the evaluate stage's ``score_model`` (the metrics training and the gate use).
"""

from __future__ import annotations

import copy
from pathlib import Path

from tuneline import keys, objectives
from tuneline.config import FinetuneConfig, parse_config
from tuneline.data.ingest import fingerprint_files, ingest_dataset, list_source_files
from tuneline.errors import ConfigError, RegistryError
from tuneline.fingerprints import code_version
from tuneline.metrics import headline
from tuneline.registry import Registry, now_iso
from tuneline.results import Dataset, VersionEvaluation
from tuneline.stages.evaluate import reference_scores, score_model
from tuneline.stages.prepare import prepare_rows
from tuneline.stages.validate import validate_dataset
from tuneline.storage import Storage

# Validation settings for rows that are only scored: the training-only checks are off.
SCORING_VALIDATION = {"min_rows": 1, "min_rows_per_class": 1, "check_split_overlap": False}


def data_location(data: str) -> str:
    """A data source as it is recorded: an s3:// URI as given, a local path made absolute."""
    return data if data.startswith("s3://") else str(Path(data).expanduser().absolute())


def evaluation_config(manifest: dict, data: str, storage_root: str) -> FinetuneConfig:
    """The version's own config reading ``data``: its columns, format and label set; no split column."""
    ref = f"{manifest['name']}:{manifest['version']}"
    if not manifest.get("config") or manifest.get("fitted") is None:
        why = "it was pushed (tuneline models push)" if manifest.get("source") == "push" else "an older manifest"
        raise RegistryError(f"model {ref} has no config and fitted values (labels, target scaling) to read new data "
                            f"with ({why}); only versions the pipeline trained can be evaluated")
    raw = copy.deepcopy(manifest["config"])
    objective = objectives.get(raw.get("task", "classification"))
    pinned = objective.fitted_data_settings(manifest["fitted"])  # its label set
    raw["data"].update(source=data_location(data), split_column=None, **pinned)
    raw.setdefault("validation", {}).update(SCORING_VALIDATION)
    raw.update(storage=storage_root, cache=True)
    return parse_config(raw, where=f"the config of {ref}")


def registered_manifest(registry: Registry, ref: str) -> dict:
    """The manifest of the version ``ref`` names, with its ``name`` and ``version``."""
    name, version = registry.resolve(ref)
    return {**registry.manifest(name, version), "name": name, "version": version}


def plan_evaluations(storage: Storage, refs: list[str], data: str) -> list[tuple[str, FinetuneConfig]]:
    """``(NAME:VERSION, config)`` per distinct version the refs name: every ref resolved before anything is
    written, so an unknown one fails the whole command at once."""
    if not refs:
        raise ConfigError("name at least one registered version to evaluate (NAME, NAME:VERSION or NAME@ALIAS)")
    planned = {}
    for ref in refs:
        manifest = registered_manifest(Registry(storage), ref)
        planned.setdefault(f"{manifest['name']}:{manifest['version']}",
                           evaluation_config(manifest, data, storage.root_uri))
    return list(planned.items())


def evaluate_registered(storage: Storage, ref: str, data: str) -> VersionEvaluation:
    """A registered version's metrics on labelled ``data``, stored beside the version once per dataset."""
    registry = Registry(storage)
    manifest = registered_manifest(registry, ref)
    name, version = manifest["name"], manifest["version"]
    cfg = evaluation_config(manifest, data, storage.root_uri)
    data, fmt = cfg.data.source, cfg.data.format.value
    stored = registry.evaluation(name, version, fingerprint_files(list_source_files(data, fmt), fmt))
    if stored is not None:
        return VersionEvaluation(**stored, reused=True)
    dataset = ingest_dataset(data, storage, fmt)
    validate_dataset(storage, dataset, cfg)  # raises ValidationFailed: nothing is stored beside the version
    metric, key = cfg.evaluation.metric.value, keys.version_evaluation(name, version, dataset.fingerprint)
    result = VersionEvaluation(
        model=name, version=version, model_fingerprint=manifest["model_fingerprint"], task=cfg.task.value,
        metric=metric, lower_is_better=objectives.lower_is_better(metric), dataset_fingerprint=dataset.fingerprint,
        source=data, rows=dataset.rows, metrics=version_metrics(storage, manifest, dataset, cfg),
        evaluated_at=now_iso(), code_version=code_version(), key=key, uri=storage.uri(key),
    )
    record, written = registry.add_evaluation(name, version, result.stored())
    return VersionEvaluation(**record, reused=not written)


def version_metrics(storage: Storage, manifest: dict, dataset: Dataset, cfg: FinetuneConfig) -> dict:
    """The pipeline's metrics of a registered version on a validated dataset: every row in one split, encoded with
    the version's fitted values and tokenizer, scored by the evaluate stage (beside its reference: causal_lm's base)."""
    folder = storage.local_dir(f"{keys.version_dir(manifest['name'], manifest['version'])}/model")
    prepared = prepare_rows(storage, dataset, cfg, manifest["fitted"], folder, manifest["model_fingerprint"])
    scores, _ = score_model(storage, folder, manifest["model_fingerprint"], prepared, cfg)
    return objectives.get(cfg.task.value).with_reference(scores, reference_scores(storage, prepared, cfg))


def compare(evaluations: list[VersionEvaluation]) -> dict:
    """Versions side by side on the same data: what ``tuneline evaluate --json`` prints and the flow returns.
    ``metric_order``: the first version's gate metric, then every other scalar metric."""
    first = evaluations[0]
    order = [first.metric]
    for evaluation in evaluations:
        order += [m for m in headline(evaluation.metrics) if m not in order]
    return {"source": first.source, "dataset_fingerprint": first.dataset_fingerprint, "rows": first.rows,
            "metric": first.metric, "lower_is_better": first.lower_is_better, "metric_order": order,
            "evaluations": [evaluation.model_dump(mode="json") for evaluation in evaluations]}


def comparison_table(comparison: dict) -> list[dict]:
    """One row per metric (the gate metric first), one column per version (``NAME:VERSION``)."""
    columns = {f"{e['model']}:{e['version']}": e["metrics"] for e in comparison["evaluations"]}
    return [{"metric": metric, **{column: metrics.get(metric) for column, metrics in columns.items()}}
            for metric in comparison["metric_order"]]

