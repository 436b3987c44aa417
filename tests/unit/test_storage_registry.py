"""LocalStorage keys and atomic writes; the model registry's versions, crash recovery and verified pulls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneline.errors import RegistryError
from tuneline.registry import Registry, files_fingerprint, folder_files, version_dir
from tuneline.storage import LocalStorage, check_key

NAME = "sentiment"


# -- helpers ------------------------------------------------------------------


def make_model(folder: Path, seed: str) -> Path:
    """A small fake save_pretrained folder (config.json + .safetensors name); ``seed`` varies the bytes."""
    files = {
        "config.json": json.dumps({"model": seed}),
        "model.safetensors": f"weights for {seed} ".encode().hex() * 50,
        "tokenizer/vocab.txt": "\n".join(["[PAD]", "[UNK]", seed]),
    }
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text, encoding="utf-8")
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def storage(storage_root) -> LocalStorage:
    return LocalStorage(storage_root)


@pytest.fixture
def registry(storage) -> Registry:
    return Registry(storage)


@pytest.fixture
def models(tmp_path) -> dict[str, Path]:
    return {seed: make_model(tmp_path / "models" / seed, seed) for seed in ("alpha", "beta", "gamma")}


def simulate_crashed_register(storage: LocalStorage, name: str, version: int, model: Path) -> None:
    """What a register that died mid-upload leaves: the claim and part of the files, no manifest."""
    fingerprint = files_fingerprint(folder_files(model))
    prefix = version_dir(name, version)
    assert storage.create_exclusive(f"{prefix}/claim.json", json.dumps({"identity": fingerprint, "model_fingerprint": fingerprint}).encode())
    storage.put_file(model / "config.json", f"{prefix}/model/config.json")


# -- LocalStorage -------------------------------------------------------------


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/etc/passwd", "a\\b", "", "a//b", "./a", "a/."])
def test_check_key_rejects_keys_that_could_escape_the_root(key):
    with pytest.raises(ValueError):
        check_key(key)


@pytest.mark.parametrize("key", ["a", "datasets/ab12/data.parquet", "registry/m/versions/000001/model/x.bin"])
def test_check_key_accepts_relative_keys(key):
    assert check_key(key) == key


def test_storage_refuses_to_write_outside_its_root(storage):
    with pytest.raises(ValueError):
        storage.write_bytes("../escaped.txt", b"x")
    assert not (storage.root.parent / "escaped.txt").exists()


def test_write_bytes_replaces_the_object_and_leaves_no_temp_file(storage):
    storage.write_bytes("a/b/object.json", b"first")
    storage.write_bytes("a/b/object.json", b"second")
    assert storage.read_bytes("a/b/object.json") == b"second"
    assert [p.name for p in (storage.root / "a" / "b").iterdir()] == ["object.json"]
    assert storage.list_keys("a") == ["a/b/object.json"]


def test_put_file_leaves_no_temp_file(storage, tmp_path):
    source = tmp_path / "local.bin"
    source.write_bytes(b"payload")
    storage.put_file(source, "files/remote.bin")
    assert storage.read_bytes("files/remote.bin") == b"payload"
    assert [p.name for p in (storage.root / "files").iterdir()] == ["remote.bin"]


def test_create_exclusive_succeeds_once(storage):
    assert storage.create_exclusive("locks/claim.json", b"mine") is True
    assert storage.create_exclusive("locks/claim.json", b"theirs") is False
    assert storage.read_bytes("locks/claim.json") == b"mine"


def test_json_round_trip_and_listing(storage):
    storage.write_json("x/one.json", {"b": 1, "a": [1, 2]})
    storage.write_json("x/sub/two.json", {})
    assert storage.read_json("x/one.json") == {"a": [1, 2], "b": 1}
    assert storage.list_keys("x") == ["x/one.json", "x/sub/two.json"]
    assert storage.list_children("x") == ["one.json", "sub"]
    assert storage.list_children("nothing/here") == []
    assert storage.exists("x/one.json") and not storage.exists("x/three.json")


# -- Registry: registering ------------------------------------------------------


def test_first_registration_is_version_one(registry, models):
    manifest = registry.register(NAME, models["alpha"], {"note": "first"})
    assert (manifest["version"], manifest["existing"]) == (1, False)
    assert manifest["note"] == "first"
    assert set(manifest["files"]) == set(tree(models["alpha"]))
    assert registry.versions(NAME) == [1]
    assert registry.names() == [NAME]
    assert registry.resolve(NAME) == (NAME, 1)


def test_different_content_gets_the_next_version(registry, models):
    registry.register(NAME, models["alpha"], {})
    manifest = registry.register(NAME, models["beta"], {})
    assert (manifest["version"], manifest["existing"]) == (2, False)
    assert registry.versions(NAME) == [1, 2]
    assert registry.resolve(NAME) == (NAME, 2)


def test_identical_content_returns_the_existing_version(registry, models, tmp_path):
    first = registry.register(NAME, models["alpha"], {"run_id": "one"})
    registry.register(NAME, models["beta"], {})
    copy = make_model(tmp_path / "elsewhere", "alpha")  # same bytes, another folder
    again = registry.register(NAME, copy, {"run_id": "two"})
    assert (again["version"], again["existing"]) == (first["version"], True)
    assert again["run_id"] == "one"
    assert registry.versions(NAME) == [1, 2]


def test_versions_are_per_name(registry, models):
    registry.register(NAME, models["alpha"], {})
    other = registry.register("other-model", models["alpha"], {})
    assert other["version"] == 1
    assert registry.names() == ["other-model", NAME]


def test_registering_an_empty_folder_is_refused(registry, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError) as caught:
        registry.register(NAME, empty, {})
    assert str(empty) in str(caught.value)
    assert registry.names() == []


def test_manifest_records_every_file_with_its_checksum(registry, models, storage):
    manifest = registry.register(NAME, models["alpha"], {})
    assert registry.manifest(NAME, 1) == {k: v for k, v in manifest.items() if k != "existing"}
    for relative, content in tree(models["alpha"]).items():
        assert manifest["files"][relative]["size"] == len(content)
        assert storage.read_bytes(f"{version_dir(NAME, 1)}/model/{relative}") == content


# -- Registry: crash recovery ---------------------------------------------------


def test_version_without_manifest_is_invisible(registry, storage, models):
    registry.register(NAME, models["alpha"], {})
    simulate_crashed_register(storage, NAME, 2, models["beta"])
    assert registry.versions(NAME) == [1]
    assert registry.resolve(NAME) == (NAME, 1)
    with pytest.raises(RegistryError, match="does not exist"):
        registry.resolve(f"{NAME}:2")


def test_a_name_with_only_a_crashed_version_is_not_listed(registry, storage, models):
    simulate_crashed_register(storage, NAME, 1, models["alpha"])
    assert registry.names() == []
    assert registry.versions(NAME) == []
    with pytest.raises(RegistryError, match="no registered versions"):
        registry.resolve(NAME)


def test_retry_after_a_crash_completes_the_claimed_version(registry, storage, models):
    registry.register(NAME, models["alpha"], {})
    simulate_crashed_register(storage, NAME, 2, models["beta"])
    manifest = registry.register(NAME, models["beta"], {})
    assert (manifest["version"], manifest["existing"]) == (2, False)
    assert registry.versions(NAME) == [1, 2]
    assert storage.list_children(f"registry/{NAME}/versions") == ["000001", "000002"]


def test_other_content_does_not_take_over_a_crashed_claim(registry, storage, models):
    registry.register(NAME, models["alpha"], {})
    simulate_crashed_register(storage, NAME, 2, models["beta"])
    manifest = registry.register(NAME, models["gamma"], {})
    assert manifest["version"] == 3
    assert registry.versions(NAME) == [1, 3]


# -- Registry: pulling ----------------------------------------------------------


def test_pull_downloads_identical_files(registry, models, tmp_path):
    registry.register(NAME, models["alpha"], {})
    registry.register(NAME, models["beta"], {})
    dest = registry.pull(f"{NAME}:1", tmp_path / "pulled")
    assert dest == (tmp_path / "pulled").resolve()
    assert tree(dest) == tree(models["alpha"])
    assert tree(registry.pull(NAME, tmp_path / "latest")) == tree(models["beta"])


def test_pull_into_an_existing_empty_folder_works(registry, models, tmp_path):
    registry.register(NAME, models["alpha"], {})
    dest = tmp_path / "empty"
    dest.mkdir()
    assert tree(registry.pull(NAME, dest)) == tree(models["alpha"])


def test_pull_of_a_tampered_file_fails_and_leaves_nothing(registry, storage, models, tmp_path):
    registry.register(NAME, models["alpha"], {})
    stored = storage.root / version_dir(NAME, 1) / "model" / "model.safetensors"
    stored.write_bytes(stored.read_bytes()[:-1] + b"!")
    parent = tmp_path / "downloads"
    parent.mkdir()
    with pytest.raises(RegistryError) as caught:
        registry.pull(NAME, parent / "model")
    assert "model.safetensors" in str(caught.value) and "checksum" in str(caught.value)
    assert list(parent.iterdir()) == []  # neither the destination nor a .partial staging folder


def test_pull_into_a_non_empty_folder_is_refused(registry, models, tmp_path):
    registry.register(NAME, models["alpha"], {})
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(RegistryError, match="not empty"):
        registry.pull(NAME, dest)
    assert tree(dest) == {"keep.txt": b"mine"}


def test_manifest_with_an_unsafe_path_is_refused(registry, storage, models, tmp_path):
    registry.register(NAME, models["alpha"], {})
    key = f"{version_dir(NAME, 1)}/manifest.json"
    manifest = storage.read_json(key)
    manifest["files"] = {"../x": {"sha256": "0" * 64, "size": 1}}
    storage.write_json(key, manifest)
    parent = tmp_path / "downloads"
    parent.mkdir()
    with pytest.raises(RegistryError, match="unsafe path"):
        registry.pull(NAME, parent / "model")
    assert list(parent.iterdir()) == []
    assert not (tmp_path / "x").exists()


# -- Registry: references -------------------------------------------------------


def test_unknown_version_is_an_error_listing_the_versions(registry, models):
    registry.register(NAME, models["alpha"], {})
    with pytest.raises(RegistryError) as caught:
        registry.resolve(f"{NAME}:99")
    assert f"{NAME}:99 does not exist" in str(caught.value)
    assert "[1]" in str(caught.value)


def test_unknown_name_is_an_error(registry):
    with pytest.raises(RegistryError, match="no registered versions"):
        registry.resolve("nobody")


def test_unknown_alias_is_an_error(registry, models):
    registry.register(NAME, models["alpha"], {})
    with pytest.raises(RegistryError, match="no alias 'prod'"):
        registry.resolve(f"{NAME}@prod")


def test_alias_resolves_to_its_version(registry, storage, models):
    registry.register(NAME, models["alpha"], {})
    registry.register(NAME, models["beta"], {})
    storage.write_json(f"registry/{NAME}/aliases/prod.json", {"version": 1})
    assert registry.resolve(f"{NAME}@prod") == (NAME, 1)


@pytest.mark.parametrize("ref", ["Bad Name", f"{NAME}:", f"{NAME}:one", f"{NAME}@", "../etc", f"{NAME}:1@prod"])
def test_bad_reference_syntax_is_an_error(registry, ref):
    with pytest.raises(RegistryError, match="expected NAME, NAME:VERSION or NAME@ALIAS"):
        registry.resolve(ref)
