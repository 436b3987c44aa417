"""Aliases, promotion races, push and load_model on both storage backends (local and real S3); ``tuneline models``
as a user drives it (push, promote, show by alias / latest / version, list, errors) and the alias history it leaves."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from flows.cli import main
from tuneline.errors import RegistryError
from tuneline.registry import Registry
from tuneline.storage import LocalStorage


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> Path:
    """A real (tiny, randomly initialised) BERT classifier saved with save_pretrained."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tuneline.models.base import resolve_base_model

    folder = tmp_path_factory.mktemp("tiny") / "model"
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=2, id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1})
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def variant(base: Path, tmp_path: Path, tag: str) -> Path:
    """A copy of a model folder whose files differ (a note in config.json), so it registers as new."""
    import shutil

    folder = tmp_path / tag
    shutil.copytree(base, folder)
    config = json.loads((folder / "config.json").read_text())
    config["tuneline_test_tag"] = tag
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_racing_promotions_all_land_in_the_alias_history(any_storage, tiny_classifier, tmp_path):
    registry = Registry(any_storage)
    versions = [registry.register("racer", variant(tiny_classifier, tmp_path, f"v{i}"), {})["version"]
                for i in range(2)]
    barrier = threading.Barrier(8)
    outcomes = []

    def promote(i):
        barrier.wait()
        outcomes.append(registry.promote("racer", versions[i % 2], "production", by=f"runner-{i}"))

    threads = [threading.Thread(target=promote, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    pointer = registry.alias("racer", "production")
    moved = [o for o in outcomes if o["moved"]]
    assert len(outcomes) == 8 and all(o["moved"] or "already at" in o["reason"] for o in outcomes)
    assert len(pointer["history"]) == len(moved), "every move that reported success is in the history"
    assert {m["by"] for m in pointer["history"]} <= {f"runner-{i}" for i in range(8)}
    for before, after in zip(pointer["history"], pointer["history"][1:]):
        assert after["from"] == before["to"], "no update was lost between two moves"
    assert pointer["version"] == pointer["history"][-1]["to"]
    assert registry.resolve("racer@production") == ("racer", pointer["version"])


def test_promotion_against_a_stale_champion_does_not_move_the_alias(any_storage, tiny_classifier, tmp_path):
    registry = Registry(any_storage)
    one, two, three = (registry.register("gated", variant(tiny_classifier, tmp_path, t), {})["version"]
                       for t in ("a", "b", "c"))
    registry.promote("gated", one, "production")
    registry.promote("gated", two, "production")  # someone else moved it meanwhile
    stale = registry.promote("gated", three, "production", expected_version=one)
    assert stale["moved"] is False and registry.alias("gated", "production")["version"] == two
    with pytest.raises(RegistryError, match="does not exist"):
        registry.promote("gated", 42, "production")
    with pytest.raises(RegistryError, match="alias"):
        registry.promote("gated", one, "bad/alias")


def test_load_model_returns_model_and_tokenizer(any_storage, tiny_classifier, monkeypatch, tmp_path):
    import tuneline

    monkeypatch.setenv("TUNELINE_CACHE", str(tmp_path / "cache"))
    registry = Registry(any_storage)
    version = registry.register("loader", tiny_classifier, {})["version"]
    registry.promote("loader", version, "production")
    model, tokenizer = tuneline.load_model("loader@production", storage_root=any_storage.root_uri)
    logits = model(**tokenizer(["hello there"], return_tensors="pt")).logits
    assert tuple(logits.shape) == (1, 2) and model.config.id2label[0] == "no"


def cli(*args, env):
    import os

    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_push_registers_a_folder_and_refuses_pickles(any_storage, tiny_classifier, tmp_path):
    env = {"TUNELINE_STORAGE": any_storage.root_uri}
    pushed = cli("models", "push", str(tiny_classifier), "external", "--alias", "staging", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert Registry(any_storage).alias("external", "staging")["version"] == 1
    pulled = cli("models", "pull", "external@staging", str(tmp_path / "pulled"), env=env)
    assert pulled.returncode == 0, pulled.stderr
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "pulled").config.id2label[1] == "yes"

    pickled = variant(tiny_classifier, tmp_path, "pickled")
    (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    refused = cli("models", "push", str(pickled), "external", env=env)
    assert refused.returncode != 0 and "pytorch_model.bin" in refused.stderr
    assert Registry(any_storage).versions("external") == [1]

    promoted = cli("models", "promote", "external:1", "production", env=env)
    assert promoted.returncode == 0 and Registry(any_storage).aliases("external") == {"staging": 1, "production": 1}


def test_eight_concurrent_pushes_of_one_folder_give_eight_complete_versions(any_storage, tiny_classifier, tmp_path):
    """Each `models push` is its own version, even of identical files, and none is left half-written."""
    import os

    env = {**os.environ, "TUNELINE_STORAGE": any_storage.root_uri}
    pushes = [subprocess.Popen([sys.executable, "-m", "flows.cli", "models", "push", str(tiny_classifier), "fleet"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outputs = [p.communicate(timeout=300) for p in pushes]
    assert all(p.returncode == 0 for p in pushes), [err for _, err in outputs]
    registry = Registry(any_storage)
    assert registry.versions("fleet") == list(range(1, 9))
    reported = sorted(int(out.split("\t")[0].split(":")[1]) for out, _ in outputs)
    assert reported == list(range(1, 9)), "every push reports its own number"
    pulled = registry.pull("fleet:8", tmp_path / "eighth")
    assert sorted(p.name for p in pulled.iterdir()) == sorted(p.name for p in tiny_classifier.iterdir())


def models_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["models", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_push_promote_show_list_and_the_alias_history(tmp_path, capsys, tiny_classifier):
    store = str(tmp_path / "store")
    assert models_cli(capsys, "--storage", store, "push", str(tiny_classifier), "tiny", "--alias", "production")[0] == 0
    other = variant(tiny_classifier, tmp_path, "v2")
    code, out, _ = models_cli(capsys, "--storage", store, "push", str(other), "tiny")
    assert code == 0 and out.startswith("tiny:2\t")

    def shown(ref: str) -> dict:
        code, out, err = models_cli(capsys, "--storage", store, "show", ref)
        assert code == 0, err
        return json.loads(out)

    assert shown("tiny@production")["version"] == 1
    assert shown("tiny")["version"] == 2, "a bare name is the latest version"
    assert shown("tiny:1")["model_fingerprint"] != shown("tiny:2")["model_fingerprint"]

    code, out, _ = models_cli(capsys, "--storage", store, "promote", "tiny:2", "production")
    assert code == 0 and out.strip() == "tiny@production -> 2"
    assert shown("tiny@production")["version"] == 2
    code, out, _ = models_cli(capsys, "--storage", store, "list", "tiny")
    assert code == 0 and [line.split("\t")[:2] for line in out.splitlines()] == [["tiny:1", "-"],
                                                                                  ["tiny:2", "production"]]

    history = Registry(LocalStorage(store)).alias("tiny", "production")["history"]
    assert [(move["from"], move["to"], move["by"]) for move in history] == [
        (None, 1, "tuneline models push"), (1, 2, "tuneline models promote")]
    times = [datetime.fromisoformat(move["at"].replace("Z", "+00:00")) for move in history]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)


@pytest.mark.parametrize("args, message", [
    (("list", "nosuch"), "model 'nosuch' has no registered versions"),
    (("show", "nosuch@production"), "model nosuch has no alias 'production'"),
    (("show", "nosuch"), "model 'nosuch' has no registered versions"),
    (("promote", "nosuch", "production"), "model 'nosuch' has no registered versions"),
])
def test_unknown_models_are_one_clear_error(tmp_path, capsys, args, message):
    code, out, err = models_cli(capsys, "--storage", str(tmp_path / "store"), *args)
    assert code == 1 and out == "" and err.strip() == f"error: {message}"
