"""Base models from where users keep them, tested without a network.

- The Hugging Face Hub through a pre-filled cache (``HF_HOME`` with ``models--ORG--NAME/snapshots/<sha>/``
  and ``refs/<branch>``) and ``HF_HUB_OFFLINE=1``: the real ``huggingface_hub`` resolution runs.
- An S3 base folder on a real SeaweedFS server.
- The registry itself: a version continues from ``registry:NAME@ALIAS``, the manifest keeps the lineage.
- Bad input: an unknown Hub id offline, pickled-only weights, custom code, no tokenizer, a too long
  ``model.max_length``; and a token that must not leak anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tuneline.config import parse_config
from tuneline.errors import ConfigError
from tuneline.models.base import pin_base, resolve, resolve_base_model
from tuneline.registry import Registry
from tuneline.results import Prepared
from tuneline.storage import LocalStorage
from tuneline.training.launcher import train_key

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAIN, OTHER = "1" * 40, "2" * 40
TOKEN = "hf_tunelineTestTokenThatMustNeverLeak"


def fill_hub_cache(home: Path, repo: str, commit: str, source: Path, ref: str = "main", drop=()) -> Path:
    """The standard cache layout: models--ORG--NAME/snapshots/<commit>/ and refs/<ref>."""
    entry = home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / commit
    shutil.copytree(source, snapshot, ignore=shutil.ignore_patterns(*drop))
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "hf-home"
    fill_hub_cache(home, HUB_ID, MAIN, resolve_base_model("all-MiniLM-L6-v2"))
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home


def run_cli(*args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(cwd / "prefect-home"), **env}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_a_hub_id_resolves_through_the_cache_and_each_revision_keys_its_own_work(hub_home):
    pinned = pin_base(parse_config({"name": "m", "data": {"source": "d.csv"},
                                    "model": {"base": HUB_ID}}).model)
    assert pinned == {"base": HUB_ID, "revision": MAIN}, "a branch is pinned to its commit"
    other = fill_hub_cache(hub_home, HUB_ID, OTHER, resolve_base_model("all-MiniLM-L6-v2"), ref="v2")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.2}))
    first, second = resolve(HUB_ID, "main"), resolve(HUB_ID, "v2")
    assert (first.source["commit"], second.source["commit"]) == (MAIN, OTHER)
    prepared = Prepared(key="prepared/x", uri="u", objective="classification", dataset_fingerprint="fp",
                        counts={"train": 8}, fitted={"labels": ["a", "b"]})
    keys = {train_key(prepared, parse_config({"name": "m", "data": {"source": "d.csv"},
                                              "model": {"base": HUB_ID, "revision": commit}}))
            for commit in (MAIN, OTHER)}
    assert len(keys) == 2


def test_bad_bases_are_refused_with_the_reason(hub_home, tmp_path):
    with pytest.raises(ConfigError) as offline:
        resolve("acme/not-cached")
    assert "not in the Hugging Face cache" in str(offline.value) and "HF_HUB_OFFLINE=1" in str(offline.value)
    source = resolve_base_model("all-MiniLM-L6-v2")
    pickled = fill_hub_cache(hub_home, "acme/pickled", MAIN, source, drop=("*.safetensors",))
    (pickled / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="no .safetensors weights .*pytorch_model.bin"):
        resolve("acme/pickled")
    custom = fill_hub_cache(hub_home, "acme/custom-code", MAIN, source)
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Custom"}}))
    with pytest.raises(ConfigError, match="trust_remote_code"):
        resolve("acme/custom-code")
    untokenized = tmp_path / "no-tokenizer"
    shutil.copytree(source, untokenized, ignore=shutil.ignore_patterns("tokenizer*", "vocab.txt", "special*"))
    with pytest.raises(ConfigError, match="no tokenizer files"):
        resolve(str(untokenized))


@pytest.mark.slow
def test_hub_base_then_continue_from_the_registry_with_lineage_and_no_token_anywhere(tmp_path, hub_home):
    store = tmp_path / "store"
    env = {"HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1", "HF_TOKEN": TOKEN}
    common = ("--json", "--set", f"storage={store}", "--set", "training.epochs=1")
    first = run_cli("run", str(EXAMPLES / "demo.yaml"), *common, "--set", f"model.base={HUB_ID}", cwd=tmp_path,
                    env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    registry = Registry(LocalStorage(store))
    v1 = registry.manifest("demo-sentiment", 1)
    assert v1["base_model"]["kind"] == "hub" and v1["base_model"]["commit"] == MAIN
    assert v1["config"]["model"]["revision"] == MAIN and v1["parent"] is None

    second = run_cli("run", str(EXAMPLES / "demo.yaml"), *common, "--set", "model.base=registry:demo-sentiment@production",
                     cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    v2 = registry.manifest("demo-sentiment", 2)
    assert v2["config"]["model"]["base"] == "registry:demo-sentiment:1", "the alias was pinned to its version"
    assert v2["parent"] == {"name": "demo-sentiment", "version": 1, "model_fingerprint": v1["model_fingerprint"]}
    shown = run_cli("models", "--storage", str(store), "show", "demo-sentiment:2", cwd=tmp_path, env=env)
    assert json.loads(shown.stdout)["parent"]["version"] == 1

    leaked = [str(p) for p in store.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    for output in (first, second, shown):
        assert TOKEN not in output.stdout and TOKEN not in output.stderr
    assert not leaked, leaked


@pytest.mark.slow
def test_a_max_length_beyond_the_model_is_a_config_error_before_training(tmp_path):
    store = tmp_path / "store"
    done = run_cli("run", str(EXAMPLES / "demo.yaml"), "--set", f"storage={store}", "--set", "model.max_length=1024",
                   cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model.max_length: 1024 is more than the 512 positions" in done.stderr
    assert not (store / "candidates").exists() and not (store / "prepared").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_an_s3_base_folder_trains_an_adapter_that_a_later_run_continues_merged(s3_server, s3_env, tmp_path):
    from flows.finetune import finetune
    from tuneline.storage import open_storage

    uri = f"s3://{s3_server.bucket}/bases/minilm-{tmp_path.name}/"
    bucket = open_storage(f"s3://{s3_server.bucket}")
    bucket.put_dir(resolve_base_model("all-MiniLM-L6-v2"), uri.split("/", 3)[3].rstrip("/"))
    store = tmp_path / "store"
    raw = {"name": "from-s3", "data": {"source": str(EXAMPLES / "data" / "reviews.csv"), "test_fraction": 0.2},
           "model": {"base": uri, "max_length": 32, "method": "lora"},
           "training": {"epochs": 1, "learning_rate": 2e-3}, "evaluation": {"minimum": 0.5}, "storage": str(store)}
    finetune(config=parse_config(raw))
    v1 = Registry(LocalStorage(store)).manifest("from-s3", 1)
    assert v1["base_model"]["kind"] == "s3" and v1["base_model"]["fingerprint"].startswith("s3:")
    adapter = json.loads((store / "registry/from-s3/versions/000001/model/adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == uri

    continued = {**raw, "model": {"base": "registry:from-s3@production", "max_length": 32, "method": "full"},
                 "training": {"epochs": 1, "learning_rate": 5e-5}}
    summary = finetune(config=parse_config(continued))
    v2 = Registry(LocalStorage(store)).manifest("from-s3", 2)
    assert v2["parent"]["version"] == 1 and summary["gate"]["passed"]
    assert (store / "registry/from-s3/versions/000002/model/model.safetensors").is_file(), "a plain folder"


@pytest.mark.usefixtures("prefect_harness")
def test_a_token_from_a_prefect_secret_block_reaches_the_hub_client_only(hub_home, monkeypatch):
    from prefect import flow
    from prefect.blocks.system import Secret

    from tasks.base_model import pin_base_model

    monkeypatch.setenv("HF_TOKEN", "placeholder")  # restored after the test, whatever the flow sets
    Secret(value=TOKEN).save("tuneline-test-hf-token", overwrite=True)
    config = parse_config({"name": "m", "data": {"source": "d.csv"},
                           "model": {"base": HUB_ID, "token_secret": "tuneline-test-hf-token"}})

    @flow
    def pin() -> dict:
        return pin_base_model(config).model.model_dump()

    model = pin()
    assert os.environ["HF_TOKEN"] == TOKEN, "huggingface_hub reads HF_TOKEN"
    assert model["revision"] == MAIN and TOKEN not in json.dumps(model)
