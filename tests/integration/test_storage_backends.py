"""The storage contract on both backends (a local folder and a real SeaweedFS S3), the
registry on both, s3:// data sources for ingest, and secrets kept out of reprs, errors and logs.

Every ``any_storage`` test runs twice: ``[local]`` and ``[s3]``; the S3 runs skip when the
``weed`` binary is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tuneline.errors import ConfigError, DataError, RegistryError
from tuneline.registry import Registry, version_dir
from tuneline.storage import LocalStorage, open_storage

THREADS = 8


def run_in_threads(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` threads released at the same instant; results in order."""
    barrier = threading.Barrier(count)

    def start(i):
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


def make_model(folder: Path, seed: str) -> Path:
    """A fake but registrable model folder (config.json + safetensors); ``seed`` varies the bytes."""
    files = {
        "config.json": json.dumps({"model_type": "bert", "seed": seed}),
        "model.safetensors": f"weights {seed} " * 2000,
        "tokenizer/tokenizer.json": json.dumps({"vocab": ["[PAD]", seed]}),
    }
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the storage contract --------------------------------------------------------


def test_write_read_exists_and_missing_keys(any_storage):
    any_storage.write_bytes("a/b/c.txt", b"one")
    any_storage.write_bytes("a/b/c.txt", b"two")  # a write replaces
    assert any_storage.read_bytes("a/b/c.txt") == b"two"
    assert any_storage.exists("a/b/c.txt")
    assert not any_storage.exists("a/b/missing.txt")
    with pytest.raises(FileNotFoundError):
        any_storage.read_bytes("a/b/missing.txt")
    any_storage.write_json("a/meta.json", {"x": 1})
    assert any_storage.read_json("a/meta.json") == {"x": 1}
    assert any_storage.uri("a/meta.json").endswith("/a/meta.json")
    with pytest.raises(ValueError):
        any_storage.write_bytes("../escape", b"x")


def test_list_keys_and_children(any_storage):
    for key in ["d/x.txt", "d/sub/y.txt", "d/sub/deeper/z.txt", "dd/other.txt", "e.txt"]:
        any_storage.write_bytes(key, key.encode())
    assert any_storage.list_keys("d") == ["d/sub/deeper/z.txt", "d/sub/y.txt", "d/x.txt"]
    assert any_storage.list_children("d") == ["sub", "x.txt"]  # "dd" is not under "d/"
    assert any_storage.list_children("d/sub") == ["deeper", "y.txt"]
    assert any_storage.list_keys("nothing") == []
    assert any_storage.list_children("nothing") == []


def test_put_dir_local_dir_and_delete_prefix(any_storage, tmp_path):
    model = make_model(tmp_path / "model", "alpha")
    names = any_storage.put_dir(model, "models/m1")
    assert names == sorted(tree(model))
    assert any_storage.list_keys("models/m1") == [f"models/m1/{n}" for n in names]
    assert tree(any_storage.local_dir("models/m1")) == tree(model)
    assert tree(any_storage.local_dir("models/m1")) == tree(model)  # second call: from the cache
    any_storage.delete_prefix("models/m1")
    assert any_storage.list_keys("models") == []
    assert not any_storage.exists("models/m1/config.json")


def test_local_dir_follows_a_rewritten_prefix(any_storage, tmp_path):
    """A cached copy never serves stale or removed files after the prefix changes."""
    any_storage.put_dir(make_model(tmp_path / "v1", "one"), "cand")
    any_storage.local_dir("cand")
    any_storage.delete_prefix("cand")
    replacement = make_model(tmp_path / "v2", "two")
    (replacement / "tokenizer" / "tokenizer.json").unlink()
    any_storage.put_dir(replacement, "cand")
    assert tree(any_storage.local_dir("cand")) == tree(replacement)


def test_create_exclusive_writes_once(any_storage):
    assert any_storage.create_exclusive("claims/1.json", b"first")
    assert not any_storage.create_exclusive("claims/1.json", b"second")
    assert any_storage.read_bytes("claims/1.json") == b"first"


def test_create_exclusive_race_has_exactly_one_winner(any_storage):
    won = run_in_threads(THREADS, lambda i: any_storage.create_exclusive("race/claim.json", f"{i}".encode()))
    assert sum(won) == 1
    assert any_storage.read_bytes("race/claim.json") == str(won.index(True)).encode()


def test_replace_if_match_is_compare_and_swap(any_storage):
    assert any_storage.read_with_token("cas.json") is None
    assert any_storage.replace_if_match("cas.json", b"v1", None)
    assert not any_storage.replace_if_match("cas.json", b"again", None)  # None: only if absent
    data, token = any_storage.read_with_token("cas.json")
    assert data == b"v1"
    assert any_storage.replace_if_match("cas.json", b"v2", token)
    assert not any_storage.replace_if_match("cas.json", b"v3", token)  # stale token
    assert any_storage.read_bytes("cas.json") == b"v2"


def test_concurrent_read_modify_write_loses_no_update(any_storage, request):
    all_read = threading.Barrier(THREADS)  # every thread's first write races the others' on the same state

    def append(i):
        for attempt in range(200):
            current = any_storage.read_with_token("list.json")
            ids = json.loads(current[0]) if current else []
            if attempt == 0:
                all_read.wait()
            if any_storage.replace_if_match("list.json", json.dumps(ids + [i]).encode(),
                                            current[1] if current else None):
                return attempt
        raise AssertionError(f"thread {i} never won")

    attempts = run_in_threads(THREADS, append)
    assert sorted(json.loads(any_storage.read_bytes("list.json"))) == list(range(THREADS))
    assert sum(attempts) >= THREADS - 1  # all first writes collided: one won, every other thread retried


def test_big_file_round_trips_intact(any_storage, tmp_path):
    """20 MB of random bytes: on S3 this is the multipart path (threshold lowered below), and it was taken:
    4 parts of 5 MB were uploaded, and the stored object's ETag is a multipart one (``"<md5 of md5s>-4"``)."""
    parts = []
    if not isinstance(any_storage, LocalStorage):
        from boto3.s3.transfer import TransferConfig

        MB = 1024 * 1024
        any_storage.transfer = TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=5 * MB,
                                              max_concurrency=4)
        any_storage.client.meta.events.register("after-call.s3.UploadPart", lambda **_: parts.append(1))
    source = tmp_path / "weights.safetensors"
    source.write_bytes(os.urandom(20 * 1024 * 1024))
    any_storage.put_file(source, "big/weights.safetensors")
    if not isinstance(any_storage, LocalStorage):
        head = any_storage.client.head_object(Bucket=any_storage.bucket,
                                              Key=any_storage.object_key("big/weights.safetensors"))
        assert (len(parts), head["ETag"].strip('"').rpartition("-")[2]) == (4, "4"), (len(parts), head["ETag"])
        assert head["ContentLength"] == 20 * 1024 * 1024
    target = tmp_path / "back" / "weights.safetensors"
    any_storage.get_file("big/weights.safetensors", target)
    assert sha256(target) == sha256(source)
    assert [p.name for p in target.parent.iterdir()] == ["weights.safetensors"]  # no temp file left


# -- the registry on both backends -----------------------------------------------


def test_registry_numbers_versions(any_storage, tmp_path):
    registry = Registry(any_storage)
    first = registry.register("demo", make_model(tmp_path / "a", "alpha"), {})
    second = registry.register("demo", make_model(tmp_path / "b", "beta"), {})
    again = registry.register("demo", make_model(tmp_path / "c", "alpha"), {})
    assert (first["version"], second["version"]) == (1, 2)
    assert again["existing"] and again["version"] == 1
    assert registry.versions("demo") == [1, 2]
    assert registry.names() == ["demo"]
    assert tree(registry.pull("demo:2", tmp_path / "pulled")) == tree(tmp_path / "b")


def test_concurrent_registers_get_distinct_complete_versions(any_storage, tmp_path):
    registry = Registry(any_storage)
    folders = [make_model(tmp_path / f"m{i}", f"seed-{i}") for i in range(THREADS)]
    results = run_in_threads(THREADS, lambda i: registry.register("busy", folders[i], {"i": i}))
    assert sorted(r["version"] for r in results) == list(range(1, THREADS + 1))
    assert registry.versions("busy") == list(range(1, THREADS + 1))
    for result in results:
        pulled = registry.pull(f"busy:{result['version']}", tmp_path / f"pulled-{result['version']}")
        assert tree(pulled) == tree(folders[result["i"]])


def test_pull_of_a_tampered_object_fails_and_leaves_nothing(any_storage, tmp_path):
    registry = Registry(any_storage)
    registry.register("demo", make_model(tmp_path / "a", "alpha"), {})
    any_storage.write_bytes(f"{version_dir('demo', 1)}/model/model.safetensors", b"not the weights")
    dest = tmp_path / "out" / "pulled"
    with pytest.raises(RegistryError, match="checksum"):
        registry.pull("demo:1", dest)
    assert not dest.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no staging folder either


# -- s3:// data sources -------------------------------------------------------------


def test_ingest_from_s3_matches_ingest_from_disk(s3_root, demo_csv, tmp_path):
    from tuneline.data.ingest import ingest_dataset, load_dataset_frame

    bucket_uri = f"{s3_root}/raw"
    source = open_storage(bucket_uri)
    source.put_file(demo_csv, f"one/{demo_csv.name}")
    folder = tmp_path / "folder"
    (folder / "part").mkdir(parents=True)
    (folder / "part" / demo_csv.name).write_bytes(demo_csv.read_bytes())
    (folder / "notes.txt").write_text("ignored: not a data file")
    source.put_dir(folder, "many")

    local_store = LocalStorage(tmp_path / "store-local")
    from_disk = ingest_dataset(str(demo_csv), local_store)
    from_file = ingest_dataset(f"{bucket_uri}/one/{demo_csv.name}", LocalStorage(tmp_path / "store-s3"))
    from_prefix = ingest_dataset(f"{bucket_uri}/many/", LocalStorage(tmp_path / "store-s3-dir"))
    from_disk_dir = ingest_dataset(str(folder), LocalStorage(tmp_path / "store-local-dir"))

    assert from_file.fingerprint == from_disk.fingerprint
    assert from_prefix.fingerprint == from_disk_dir.fingerprint
    assert from_file.rows == from_disk.rows == from_prefix.rows
    assert [Path(f).name for f in from_prefix.files] == [demo_csv.name]  # notes.txt is not data
    frame = load_dataset_frame(LocalStorage(tmp_path / "store-s3"), from_file)
    assert frame.equals(load_dataset_frame(local_store, from_disk))


def test_ingest_from_a_missing_s3_source_is_a_data_error(s3_root):
    from tuneline.data.ingest import ingest_dataset

    with pytest.raises(DataError, match="does not exist"):
        ingest_dataset(f"{s3_root}/nothing-here.csv", LocalStorage(Path(os.environ["TUNELINE_CACHE"]) / "s"))


# -- S3 errors and secrets ------------------------------------------------------------


@pytest.mark.parametrize("uri", ["s3://ab/x", "s3://", "s3://Upper/x", "s3://bucket/a/../b", "s3://bucket/a//b"])
def test_bad_s3_uris_are_config_errors_naming_storage(uri):
    with pytest.raises(ConfigError, match="^storage: "):
        open_storage(uri)


def test_missing_bucket_and_wrong_secret_are_clear_errors_without_the_secret(s3_env, s3_root, monkeypatch, caplog):
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    caplog.set_level(logging.DEBUG)  # botocore logs requests, headers and signatures at DEBUG
    storage = open_storage(s3_root)
    storage.write_bytes("x.txt", b"x")
    assert secret not in repr(storage) and secret not in str(vars(storage))

    missing = open_storage("s3://no-such-bucket-here/p")
    with pytest.raises(ConfigError, match="no-such-bucket-here.*does not exist") as missing_error:
        missing.list_keys("x")
    with pytest.raises(ConfigError, match="does not exist"):
        missing.write_bytes("x", b"1")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret[::-1])
    wrong = open_storage(s3_root)
    with pytest.raises(ConfigError, match="access to S3 bucket 'tuneline-test' was denied") as denied_error:
        wrong.read_bytes("x.txt")

    assert any(r.name.startswith("botocore") for r in caplog.records)  # the debug logs were captured
    for text in (str(missing_error.value), str(denied_error.value), caplog.text, repr(wrong)):
        assert secret not in text
        assert secret[::-1] not in text
