"""Every storage key tuneline writes, every stage version, and the cache keys built from them.

Reads nothing but its arguments (and the installed library versions); writes nothing.
A stage's output lives under a content key: a hash of everything that changes the output
(its inputs, the objective, the stage's version and the versions of the libraries that
compute it). Same key, same output: a re-run finds it and reports the stage as ``cached``.
Raise a stage's version when its code changes what it writes; every key below it changes too.

Layout of a storage root::

    datasets/<fp16>/data.parquet, meta.json          ingest
    validation/<key>/report.json                     validate
    prepared/<key>/{train,validation,test}, meta.json  prepare
    candidates/<key>/model, training.json, train.log, checkpoints/, registrable/   train
    candidates/<key>/tensorboard/, mlflow-run.json   train with training.report_to
    evaluations/<key>/metrics.json                   evaluate (and a sweep's validation scores)
    registry/<name>/versions/<NNNNNN>/{claim.json, model/, manifest.json}
    registry/<name>/versions/<NNNNNN>/evaluations/<fp16>.json   a version scored on other data (tuneline evaluate)
    registry/<name>/aliases/<alias>.json
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from typing import Any

from tuneline.fingerprints import content_key

# Stage versions: bump when a stage's code changes what it writes.
VALIDATE_VERSION = 3      # 3: read in batches; expect_tags_to_be_bio counts every row with a problem (was: the
                          #    rows among the first 20 problems); 2: keyed by objective
PREPARE_VERSION = 2       # 2: objectives encode; fitted parameters in meta.json
TRAIN_VERSION = 2         # 2: objectives build the model; precision and processes in the key
EVALUATE_VERSION = 2      # 2: one scoring path per objective (Trainer.predict + objective metrics)

LIBRARIES = ("tuneline", "transformers", "torch", "datasets", "peft")
VERSION_DIGITS = 6


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose code shapes a stage's output (part of every cache key)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def cache_key(stage_version: int, objective: str, *parts: Any) -> str:
    """A stage's content key: its version, the objective, the library versions and its own inputs."""
    return content_key(stage_version, objective, library_versions(), *parts)


# -- stage outputs -------------------------------------------------------------------------------

def dataset_prefix(fingerprint: str) -> str:
    return f"datasets/{fingerprint[:16]}"


def validation_report(key: str) -> str:
    return f"validation/{key}/report.json"


def prepared_prefix(key: str) -> str:
    return f"prepared/{key}"


def meta(prefix: str) -> str:
    return f"{prefix}/meta.json"


def candidate_prefix(key: str, run_id: str | None = None) -> str:
    """A candidate's folder; per run (``-run-<id8>``) when caching is off, so nothing is shared."""
    return f"candidates/{key}" if not run_id else f"candidates/{key}-run-{run_id[:8]}"


def candidate_model(prefix: str) -> str:
    return f"{prefix}/model"


def training_record(prefix: str) -> str:
    return f"{prefix}/training.json"


def training_log(prefix: str) -> str:
    return f"{prefix}/train.log"


def training_lease(prefix: str) -> str:
    """Who is training this candidate now (``tuneline.training.lease``)."""
    return f"{prefix}/lease.json"


def failed_training_log(prefix: str, stamp: str) -> str:
    return f"{prefix}/train-failed-{stamp}.log"


def oom_adjustment(prefix: str) -> str:
    return f"{prefix}/oom-adjustment.json"


def checkpoints(prefix: str) -> str:
    return f"{prefix}/checkpoints"


def tensorboard(prefix: str) -> str:
    """TensorBoard event files of every attempt (``training.report_to: [tensorboard]``): a logdir."""
    return f"{prefix}/tensorboard"


def mlflow_run(prefix: str) -> str:
    """The candidate's MLflow run (id, tracking URI, experiment), written when its first attempt starts it."""
    return f"{prefix}/mlflow-run.json"


def registrable(prefix: str) -> str:
    return f"{prefix}/registrable"


def evaluation_metrics(key: str) -> str:
    return f"evaluations/{key}/metrics.json"


# -- registry ------------------------------------------------------------------------------------

def model_versions(name: str) -> str:
    return f"registry/{name}/versions"


def version_dir(name: str, version: int) -> str:
    return f"{model_versions(name)}/{version:0{VERSION_DIGITS}d}"


def version_evaluations(name: str, version: int) -> str:
    """Where a version's scores on other labelled data live, beside (never inside) its manifest."""
    return f"{version_dir(name, version)}/evaluations"


def version_evaluation(name: str, version: int, dataset_fingerprint: str) -> str:
    """One version's score on one dataset (its fingerprint's first 16 hex digits, as ``datasets/<fp16>``)."""
    return f"{version_evaluations(name, version)}/{dataset_fingerprint[:16]}.json"


def model_aliases(name: str) -> str:
    return f"registry/{name}/aliases"


def alias_pointer(name: str, alias: str) -> str:
    return f"{model_aliases(name)}/{alias}.json"
