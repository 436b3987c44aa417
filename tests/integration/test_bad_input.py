"""Bad input through the real flow: the right tuneline error, a message naming the problem, nothing registered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, REPO, make_config
from tuneline.config import parse_config
from tuneline.errors import DataError, ValidationFailed
from tuneline.registry import Registry
from tuneline.storage import LocalStorage


# -- helpers ------------------------------------------------------------------


def csv_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_flow(source: Path, storage_root: Path, error: type[Exception]) -> str:
    """Run the finetune flow on ``source`` and return the message of the ``error`` it must raise."""
    from flows.finetune import finetune

    config = parse_config(make_config(source, storage_root))
    with pytest.raises(error) as caught:
        finetune(config=config)
    return str(caught.value)


def assert_nothing_registered(storage_root: Path) -> None:
    assert Registry(LocalStorage(storage_root)).names() == []
    assert list((storage_root / "registry").rglob("manifest.json")) == []


# -- before any flow ------------------------------------------------------------


def test_unknown_config_key_fails_before_any_flow(demo_csv, storage_root, tmp_path, monkeypatch, capsys):
    """``tuneline run`` on a config with a misspelt key: exit code 2 (a config error), one error line naming
    the key, and nothing written to the storage root."""
    from flows.cli import main

    monkeypatch.delenv("TUNELINE_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)  # were the default ./.tuneline used, it would land here, not in the repository
    config_path = tmp_path / "bad.yaml"
    raw = make_config(demo_csv, storage_root, data={"lables": ["negative", "positive"]})
    config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")

    code = main(["run", str(config_path)])

    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert stderr.startswith("error:") and "data.lables: unknown key" in stderr, stderr
    assert list(storage_root.iterdir()) == []  # nothing ran, nothing written
    assert not (tmp_path / ".tuneline").exists()


# -- through the flow -----------------------------------------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_missing_text_column_fails_validation(demo_csv, storage_root):
    lines = csv_lines(demo_csv)
    assert lines[0] == "text,label"
    write_lines(demo_csv, ["review,label", *lines[1:]])
    message = run_flow(demo_csv, storage_root, ValidationFailed)
    assert "expect_column_to_exist on column 'text'" in message
    assert_nothing_registered(storage_root)


@pytest.mark.usefixtures("prefect_harness")
def test_empty_file_fails_ingest(tmp_path, storage_root):
    source = tmp_path / "empty.csv"
    source.write_bytes(b"")
    message = run_flow(source, storage_root, DataError)
    assert str(source) in message and "empty" in message
    assert_nothing_registered(storage_root)


@pytest.mark.usefixtures("prefect_harness")
def test_malformed_csv_line_fails_ingest(demo_csv, storage_root):
    lines = csv_lines(demo_csv)
    bad_line = 7  # 1-based line number in the file, header included
    lines.insert(bad_line - 1, "a review with, an unquoted comma,positive")
    write_lines(demo_csv, lines)
    message = run_flow(demo_csv, storage_root, DataError)
    assert str(demo_csv) in message
    assert f"line {bad_line}" in message
    assert_nothing_registered(storage_root)


@pytest.mark.usefixtures("prefect_harness")
def test_unknown_label_fails_validation(demo_csv, storage_root):
    lines = csv_lines(demo_csv)
    write_lines(demo_csv, [*lines, "It is a toaster. It toasts.,neutral"])
    message = run_flow(demo_csv, storage_root, ValidationFailed)
    assert "expect_column_values_to_be_in_set on column 'label'" in message
    assert "'neutral'" in message
    assert_nothing_registered(storage_root)


@pytest.mark.usefixtures("prefect_harness")
def test_non_utf8_bytes_fail_ingest(demo_csv, storage_root):
    lines = [line.encode("utf-8") for line in csv_lines(demo_csv)]
    bad_line = 12
    lines.insert(bad_line - 1, "Caf\xe9 grinder, not bad,positive".encode("latin-1"))
    demo_csv.write_bytes(b"\n".join(lines) + b"\n")
    message = run_flow(demo_csv, storage_root, DataError)
    assert str(demo_csv) in message
    assert f"line {bad_line}" in message and "UTF-8" in message
    assert_nothing_registered(storage_root)


# -- through the CLI ------------------------------------------------------------

CLI_BAD_LINE = 5


@pytest.fixture(scope="module")
def cli_bad_run(tmp_path_factory):
    """``tuneline run`` in a subprocess on a CSV with a malformed line; run once for the tests below."""
    work = tmp_path_factory.mktemp("cli")
    source = work / "reviews.csv"
    lines = csv_lines(EXAMPLES / "data" / "reviews.csv")
    lines.insert(CLI_BAD_LINE - 1, "too,many,fields,here")
    write_lines(source, lines)
    storage_root = work / "store"
    config_path = work / "bad.yaml"
    config_path.write_text(yaml.safe_dump(make_config(source, storage_root)), encoding="utf-8")
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home")}
    for name in ("TUNELINE_DEBUG", "TUNELINE_STORAGE", "PREFECT_API_URL"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(config_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return result, source, storage_root


def test_cli_fails_on_bad_data_with_an_error_line_and_no_traceback(cli_bad_run):
    result, source, storage_root = cli_bad_run
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert str(source) in error_lines[0] and f"line {CLI_BAD_LINE}" in error_lines[0]
    assert_nothing_registered(storage_root)


def test_cli_error_is_the_one_paragraph_outside_the_run_log(cli_bad_run):
    """Prefect's timestamped run log goes to stderr too; everything else is one 'error:' paragraph."""
    import re

    result, _, _ = cli_bad_run
    log_line = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| ")
    rest = [line for line in result.stderr.splitlines()
            if line.strip() and not log_line.match(line) and not line.startswith(("See https://", "  -"))]
    assert rest and rest[0].startswith("error:"), result.stderr
    assert len(rest) == 1, rest
