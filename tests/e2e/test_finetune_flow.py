"""The whole flow on the project's sample data, on CPU, under a real Prefect test harness.

What a user checks: a version is registered with a complete manifest, the folder
loads with plain ``transformers`` and predicts, a re-run reuses finished stages,
and a candidate below the gate is not registered.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from tests.conftest import EXAMPLES, make_config
from tuneline.config import parse_config
from tuneline.errors import GateFailed
from tuneline.fingerprints import sha256_file
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
STAGES = ["ingest", "validate", "preprocess", "train", "evaluate", "register"]


def predict(model_dir, texts):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    return [model.config.id2label[i] for i in logits.argmax(-1).tolist()]


def test_flow_registers_a_model_that_loads_with_plain_transformers(demo_csv, storage_root):
    from flows.finetune import finetune

    config = parse_config(make_config(demo_csv, storage_root, training={"epochs": 2}))
    started = time.perf_counter()
    summary = finetune(config=config)
    wall_s = time.perf_counter() - started

    assert list(summary["stages"]) == STAGES
    assert all(s["status"] == "ran" for s in summary["stages"].values())
    seconds = {name: s["seconds"] for name, s in summary["stages"].items()}
    assert sum(seconds.values()) <= wall_s + 0.01 * len(STAGES), (seconds, wall_s)  # each stage timed on its own
    assert summary["version"] == 1 and summary["gate"]["passed"]
    assert summary["metrics"]["f1_macro"] >= 0.8

    manifest = Registry(LocalStorage(storage_root)).manifest("test-model", 1)
    for key in ("metrics", "gate", "config", "dataset_fingerprint", "base_model", "code_version", "files"):
        assert manifest[key], key
    assert seconds["train"] >= manifest["training"]["train_seconds"] > 0  # the stage spans the training it ran
    model_dir = storage_root / "registry/test-model/versions/000001/model"
    assert manifest["uri"] == str(model_dir)
    assert {p.name for p in model_dir.iterdir()} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert not list(model_dir.glob("*.bin")), "weights must be safetensors only"
    for relative, entry in manifest["files"].items():
        assert sha256_file(model_dir / relative) == entry["sha256"]
    assert manifest["metrics"]["confusion_matrix"]["labels"] == ["negative", "positive"]

    assert predict(model_dir, ["This kettle works perfectly. Love it.",
                               "The tent broke after two days. Avoid it."]) == ["positive", "negative"]

    again = finetune(config=config)
    assert again["version"] == 1, "identical inputs must not register a duplicate version"
    assert [again["stages"][s]["status"] for s in STAGES[:-1]] == ["cached"] * 5
    assert again["stages"]["train"]["seconds"] < seconds["train"] / 2, "a cached train stage does not train"


def test_failing_gate_registers_nothing_unless_kept(demo_csv, storage_root, tmp_path):
    from flows.finetune import finetune

    weak = make_config(demo_csv, storage_root, training={"epochs": 0.05}, evaluation={"minimum": 0.99})
    with pytest.raises(GateFailed, match=r"f1_macro = 0\.\d+ < evaluation.minimum 0.99"):
        finetune(config=parse_config(weak))
    assert Registry(LocalStorage(storage_root)).names() == []

    with pytest.raises(GateFailed) as failure:  # cache=false: every stage runs again, nothing reused
        finetune(config=parse_config({**weak, "cache": False}))
    assert {stage["status"] for stage in failure.value.summary["stages"].values()} == {"ran"}

    kept = tmp_path / "kept.yaml"
    kept.write_text(yaml.safe_dump({**weak, "register": {"keep_failed": True}}))
    done = run_cli("run", str(kept), "--json", cwd=tmp_path)  # the --json contract for a failed gate
    assert done.returncode == 1 and "error: the candidate failed the gate" in done.stderr, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["version"] == 1 and summary["gate"]["passed"] is False and "kept as version 1" in summary["error"]
    assert summary["stages"]["train"]["status"] == "cached"
    manifest = Registry(LocalStorage(storage_root)).manifest("test-model", 1)
    assert manifest["gate"]["passed"] is False


def run_cli(*args, cwd, env_extra=None):
    import os

    env = {**os.environ, "PREFECT_HOME": str(cwd / "prefect-home"), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_run_json_then_list_show_pull(tmp_path):
    store = tmp_path / "store"
    done = run_cli("run", str(EXAMPLES / "demo.yaml"), "--json", "--set", f"storage={store}",
                   "--set", "training.epochs=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOAD_GLOBAL" not in done.stderr + done.stdout, "no bytecode disassembly in the run log"
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["model"] == "demo-sentiment" and summary["version"] == 1
    assert summary["uri"].startswith(str(store))
    assert set(summary["stages"]) == set(STAGES)
    assert {"status", "seconds"} <= set(summary["stages"]["train"])

    env = {"TUNELINE_STORAGE": str(store)}
    listed = run_cli("models", "list", cwd=tmp_path, env_extra=env)
    assert listed.returncode == 0 and listed.stdout.startswith("demo-sentiment:1\t")
    shown = run_cli("models", "show", "demo-sentiment:1", cwd=tmp_path, env_extra=env)
    assert json.loads(shown.stdout)["dataset_fingerprint"] == summary["dataset_fingerprint"]
    pulled = run_cli("models", "pull", "demo-sentiment", str(tmp_path / "pulled"), cwd=tmp_path, env_extra=env)
    assert pulled.returncode == 0, pulled.stderr
    assert predict(tmp_path / "pulled", ["The monitor is worth every penny."]) == ["positive"]

    missing = run_cli("models", "show", "demo-sentiment:7", cwd=tmp_path, env_extra=env)
    assert missing.returncode != 0 and missing.stderr.startswith("error: model demo-sentiment:7 does not exist")
    assert "Traceback" not in missing.stderr


def test_champion_challenger_gate_on_s3(demo_csv, s3_root):
    """The whole flow against real S3: the first passing model becomes champion, a better one replaces
    it, a worse one is registered but not promoted; both sets of metrics are in the manifest."""
    from flows.finetune import finetune
    from tuneline.storage import open_storage

    def run(epochs, seed):
        raw = make_config(demo_csv, s3_root, training={"epochs": epochs, "seed": seed},
                          evaluation={"minimum": 0.0}, retries={"attempts": 1})
        return finetune(config=parse_config(raw))

    weak = run(0.1, 1)
    assert weak["version"] == 1 and weak["promoted"] and weak["gate"]["reason"] == "no champion yet"
    strong = run(2, 1)
    assert strong["metrics"]["f1_macro"] > weak["metrics"]["f1_macro"]
    assert strong["promoted"] and strong["gate"]["champion"]["version"] == 1
    weaker = run(0.1, 2)
    assert weaker["version"] == 3 and not weaker["promoted"] and weaker["gate"]["decision"] == "keep"

    registry = Registry(open_storage(s3_root))
    assert registry.alias("test-model", "production")["version"] == 2
    history = registry.alias("test-model", "production")["history"]
    assert [(move["from"], move["to"]) for move in history] == [(None, 1), (1, 2)]
    runs = [uuid.UUID(move["by"]) for move in history]  # by: the flow run that promoted
    assert runs[0] != runs[1] and all(move["at"] for move in history)
    manifest = registry.manifest("test-model", 3)
    assert manifest["champion_metrics"]["f1_macro"] == strong["metrics"]["f1_macro"]
    assert manifest["metrics"]["f1_macro"] == weaker["metrics"]["f1_macro"]
    assert manifest["uri"].startswith(s3_root)
    import os

    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for version in (1, 2, 3):
        assert secret not in json.dumps(registry.manifest("test-model", version)), "a manifest holds the secret"
    assert all(secret not in json.dumps(s) for s in (weak, strong, weaker)), "a run summary holds the secret"
