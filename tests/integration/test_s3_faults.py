"""The S3 backend when the server dies: a real SeaweedFS process is killed mid-operation.

What must hold: the caller gets ``S3Unreachable`` naming the endpoint (a botocore
``EndpointConnectionError``, not a ``TunelineError``: Prefect retries it as an outage; never
a credential, parameter or other botocore error), nothing half-written is visible as a
version or an object, and after the server is back the same call completes and verifies.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from tuneline.errors import TunelineError
from tuneline.registry import Registry, version_dir
from tuneline.storage.s3 import S3Storage, S3Unreachable

MB = 1024 * 1024
# Fail fast while the server is down: one retry, short timeouts (production uses 5 attempts).
FAST_FAIL = {"max_attempts": 2, "connect_timeout_s": 2, "read_timeout_s": 5}


class StopServerAfterPuts(S3Storage):
    """An S3Storage that kills the real server right after its ``after``-th completed object PUT."""

    def __init__(self, *args, server, after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.server, self.after, self.puts = server, after, 0
        self.lock = threading.Lock()
        self.client.meta.events.register("after-call.s3.PutObject", self._count)

    def _count(self, **_):
        with self.lock:
            self.puts += 1
            if self.puts == self.after:
                self.server.stop(hard=True)


def unreachable(server) -> str:
    """The start of S3Unreachable's message for ``server``: which endpoint failed (a pattern for ``match``)."""
    return re.escape(f"storage: the S3 endpoint {server.endpoint} ")


def make_sharded_model(folder: Path) -> Path:
    """A model folder with several weight shards, so the upload is many put_file calls."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for shard in range(1, 5):
        (folder / f"model-0000{shard}-of-00004.safetensors").write_bytes(os.urandom(256 * 1024))
    (folder / "tokenizer.json").write_text(json.dumps({"vocab": ["[PAD]"]}))
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.timeout(120)  # fails fast instead of hanging on the dead server
def test_server_killed_mid_registration_leaves_no_version_and_the_retry_completes(s3_private_server, tmp_path):
    server = s3_private_server
    model = make_sharded_model(tmp_path / "model")
    dying = StopServerAfterPuts(server.bucket, "root", server=server, after=3, **FAST_FAIL)

    with pytest.raises(S3Unreachable, match=unreachable(server)) as failure:
        Registry(dying).register("sharded", model, {"run": "first"})
    assert not isinstance(failure.value, TunelineError)  # an outage, so Prefect's retry policy retries it
    assert not server.running

    storage = S3Storage(server.bucket, "root", **FAST_FAIL)
    # while down, readers fail loudly instead of seeing "no versions"
    with pytest.raises(S3Unreachable, match=unreachable(server)):
        Registry(storage).versions("sharded")

    server.start()
    registry = Registry(storage)
    uploaded = storage.list_keys(version_dir("sharded", 1))
    # The claim and model files landed (with 8 uploads in flight, possibly all of them before the
    # kill took effect), but never the manifest: it is written only after every file returned.
    assert f"{version_dir('sharded', 1)}/claim.json" in uploaded, uploaded
    assert len(uploaded) >= 3 and f"{version_dir('sharded', 1)}/manifest.json" not in uploaded, uploaded
    assert registry.versions("sharded") == [] and registry.names() == []  # the partial upload is no version

    result = registry.register("sharded", model, {"run": "retry"})
    assert (result["version"], result["existing"]) == (1, False)  # the retry reuses its own claim
    assert registry.versions("sharded") == [1] and registry.names() == ["sharded"]
    assert tree(registry.pull("sharded:1", tmp_path / "pulled")) == tree(model)


def test_server_killed_mid_multipart_upload_leaves_no_object(s3_private_server, tmp_path):
    """A big put_file interrupted between parts: the object never appears half-written."""
    from boto3.s3.transfer import TransferConfig

    server = s3_private_server
    storage = S3Storage(server.bucket, "root", **FAST_FAIL,
                        transfer=TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB,
                                                max_concurrency=1))
    parts_done = []

    def kill_after_first_part(**_):
        parts_done.append(1)
        if len(parts_done) == 1:
            server.stop(hard=True)

    storage.client.meta.events.register("after-call.s3.UploadPart", kill_after_first_part)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(30 * MB))

    with pytest.raises(S3Unreachable, match=unreachable(server)):
        storage.put_file(weights, "big/model.safetensors")

    server.start()
    storage.client.meta.events.unregister("after-call.s3.UploadPart", kill_after_first_part)
    assert not storage.exists("big/model.safetensors")
    assert storage.list_keys("big") == []
    storage.put_file(weights, "big/model.safetensors")
    storage.get_file("big/model.safetensors", tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == weights.read_bytes()


def test_download_from_a_dead_server_leaves_no_file(s3_private_server, tmp_path):
    server = s3_private_server
    storage = S3Storage(server.bucket, "root", **FAST_FAIL)
    storage.write_bytes("model/config.json", b"{}")
    server.stop(hard=True)
    target = tmp_path / "out" / "config.json"
    with pytest.raises(S3Unreachable, match=unreachable(server)):
        storage.get_file("model/config.json", target)
    with pytest.raises(S3Unreachable, match=unreachable(server)):
        storage.local_dir("model")
    assert not target.exists() and list(target.parent.iterdir()) == []
    server.start()
    assert (storage.local_dir("model") / "config.json").read_bytes() == b"{}"
