"""Faults in what users hand us and in the registry: each caused for real, each with one clear outcome.

- ``data.labels`` with a repeated label (a class id no row can get) is a config error naming the key.
- A name or alias with a trailing newline (``evil\\n``) is refused, not a second model ``show`` confuses.
- ``models push`` of a folder holding a symbolic link (to a secrets file) is refused; nothing is registered.
- Registry files are readable by other users of a shared folder (the umask, not mkstemp's 0600).
- Two registrations completing one claim at once: the manifest is written once (versions are immutable).
- A failing progress reporter (the Prefect API down) or a stray ``PROGRESS`` line never stops training.
"""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from tuneline.config import parse_config
from tuneline.errors import ConfigError, RegistryError
from tuneline.registry import Registry, version_dir
from tuneline.storage import LocalStorage


def model_folder(path, payload: bytes = b"weights"):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (path / "model.safetensors").write_bytes(payload)
    return path


def test_a_repeated_label_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"data.labels: \['spam'\] listed more than once"):
        parse_config({"name": "m", "data": {"source": "d.csv", "labels": ["ham", "spam", "spam"]}})


def test_names_and_aliases_with_a_trailing_newline_are_refused(tmp_path, capsys):
    from flows.cli import main

    registry = Registry(LocalStorage(tmp_path / "store"))
    registry.register("good", model_folder(tmp_path / "m"), {})
    with pytest.raises(RegistryError, match="alias"):
        registry.promote("good", 1, "evil\n")
    with pytest.raises(RegistryError, match="model reference"):
        registry.resolve("good\n")
    code = main(["models", "--storage", str(tmp_path / "store"), "push", str(tmp_path / "m"), "evil\n"])
    assert code != 0 and "model name" in capsys.readouterr().err
    assert registry.names() == ["good"]


def test_push_refuses_a_symbolic_link_and_registers_nothing(tmp_path):
    secret = tmp_path / "secrets.env"
    secret.write_text("AWS_SECRET_ACCESS_KEY=do-not-ship\n")
    folder = model_folder(tmp_path / "m")
    (folder / "special_tokens_map.json").symlink_to(secret)
    registry = Registry(LocalStorage(tmp_path / "store"))
    with pytest.raises(RegistryError, match="symbolic links .*special_tokens_map.json"):
        registry.register("linked", folder, {}, idempotent=False)
    assert registry.versions("linked") == []
    assert not any(b"do-not-ship" in p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())


def test_registry_files_follow_the_umask_so_a_shared_folder_stays_readable(tmp_path):
    previous = os.umask(0o022)
    try:
        registry = Registry(LocalStorage(tmp_path / "store"))
        manifest = registry.register("shared", model_folder(tmp_path / "m"), {})
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), \
        {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert manifest["version"] == 1


def test_a_manifest_is_written_once_when_two_registrations_complete_one_claim(tmp_path):
    """A crash left a claim without a manifest; two retries of the same candidate then race to complete it."""
    storage = LocalStorage(tmp_path / "store")
    folder = model_folder(tmp_path / "m")
    from tuneline.fingerprints import files_fingerprint, folder_files

    fingerprint = files_fingerprint(folder_files(folder))
    claim = {"identity": fingerprint, "model_fingerprint": fingerprint}
    assert storage.create_exclusive(f"{version_dir('raced', 1)}/claim.json", json.dumps(claim).encode())
    start, results = threading.Barrier(2), []

    def retry(run: str) -> None:
        start.wait()
        results.append(Registry(storage).register("raced", folder, {"run_id": run}))

    threads = [threading.Thread(target=retry, args=(run,)) for run in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r["version"] for r in results) == [1, 1]
    written = Registry(storage).manifest("raced", 1)
    assert [r["existing"] for r in results].count(False) <= 1
    assert all(r["run_id"] == written["run_id"] for r in results if not r["existing"])
    assert Registry(storage).versions("raced") == [1]


def test_progress_reporting_failures_never_stop_the_log_reader():
    from tuneline.training.launcher import progress_lines

    logged, calls = [], []

    def broken_api(report):
        calls.append(report)
        raise ConnectionError("Prefect API unreachable")

    route = progress_lines(logged.append, broken_api)
    route('PROGRESS {"step": 1, "max_steps": 10}')
    route('PROGRESS {"step": 2, "max_steps": 10}')
    route("PROGRESS {not json")
    assert len(calls) == 2, "every report is still offered"
    assert sum("progress not reported (ConnectionError" in line for line in logged) == 1, logged
    assert any(line.startswith("PROGRESS {not json") for line in logged), "a stray line is logged as text"


@pytest.mark.slow
def test_training_finishes_while_the_progress_reporter_fails(tmp_path, demo_csv):
    """The real training child, its output read by the parent while every progress report raises."""
    from tests.conftest import make_config
    from tuneline.data.ingest import ingest_dataset
    from tuneline.stages.prepare import prepare_splits
    from tuneline.training.launcher import train_candidate

    cfg = parse_config(make_config(demo_csv, tmp_path / "store", model={"max_length": 32},
                                   training={"epochs": 1, "checkpoint_every_steps": None}))
    storage = LocalStorage(tmp_path / "store")
    prepared = prepare_splits(storage, ingest_dataset(str(demo_csv), storage), cfg)
    logged = []

    def broken(report):
        raise ConnectionError("Prefect API unreachable")

    trained = train_candidate(storage, prepared, cfg, log_line=logged.append, on_progress=broken)
    assert trained.global_step == trained.max_steps > 0
    assert any("progress not reported" in line for line in logged)
