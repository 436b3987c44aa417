"""Ingest: every supported format reads into the same rows; bad files fail with a DataError naming them."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tuneline.errors import DataError
from tuneline.data.ingest import fingerprint_files, ingest_dataset, load_dataset_frame, read_table
from tuneline.storage import LocalStorage

# Texts a naive reader would turn into nulls or split apart.
ROWS = [
    {"text": "Great value, would buy again.", "label": "positive"},
    {"text": "NA", "label": "negative"},
    {"text": "None", "label": "negative"},
    {"text": "null", "label": "positive"},
    {"text": "N/A", "label": "negative"},
    {"text": "He said \"meh\" and left", "label": "negative"},
    {"text": "0042", "label": "positive"},
]


# -- writers: one per format, each the way a user's tool would write it ---------


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_tsv(path: Path, rows: list[dict]) -> Path:
    lines = ["\t".join(rows[0])] + ["\t".join(row.values()) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


WRITERS = {"csv": write_csv, "tsv": write_tsv, "jsonl": write_jsonl, "parquet": write_parquet}


def records(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict("records")


def data_error(path: Path) -> str:
    with pytest.raises(DataError) as caught:
        ingest_dataset(str(path), LocalStorage(path.parent / "store"))
    return str(caught.value)


@pytest.fixture
def storage(storage_root) -> LocalStorage:
    return LocalStorage(storage_root)


# -- reading ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_each_format_reads_into_the_same_rows(tmp_path, fmt):
    path = WRITERS[fmt](tmp_path / f"reviews.{fmt}", ROWS)
    frame = read_table(path)
    assert list(frame.columns) == ["text", "label"]
    assert records(frame) == ROWS


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_ingested_snapshot_holds_the_same_rows(tmp_path, storage, fmt):
    path = WRITERS[fmt](tmp_path / f"reviews.{fmt}", ROWS)
    dataset = ingest_dataset(str(path), storage)
    assert dataset.rows == len(ROWS)
    assert dataset.columns == ["text", "label"]
    assert records(load_dataset_frame(storage, dataset)) == ROWS


def test_na_like_texts_stay_text_not_null(tmp_path, storage):
    dataset = ingest_dataset(str(write_csv(tmp_path / "reviews.csv", ROWS)), storage)
    frame = load_dataset_frame(storage, dataset)
    assert not frame["text"].isna().any()
    assert {"NA", "None", "null", "N/A"} <= set(frame["text"])


def test_leading_zeros_survive(tmp_path):
    frame = read_table(write_csv(tmp_path / "reviews.csv", ROWS))
    assert "0042" in set(frame["text"])


def test_an_empty_csv_field_is_a_null(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("text,label\n,positive\nfine,negative\n", encoding="utf-8")
    frame = read_table(path)
    assert frame["text"].isna().tolist() == [True, False]


def test_header_whitespace_is_stripped(tmp_path):
    path = tmp_path / "spaced.csv"
    path.write_text(" text , label\nfine,positive\n", encoding="utf-8")
    assert list(read_table(path).columns) == ["text", "label"]


def test_utf8_with_byte_order_mark_reads_the_first_column_name(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\ncafé,positive\n".encode("utf-8-sig"))
    assert records(read_table(path)) == [{"text": "café", "label": "positive"}]


def test_a_directory_of_files_in_mixed_formats_reads_into_the_union(tmp_path, storage):
    folder = tmp_path / "parts"
    folder.mkdir()
    write_csv(folder / "a.csv", ROWS[:3])
    write_jsonl(folder / "b.jsonl", ROWS[3:5])
    write_parquet(folder / "c.parquet", ROWS[5:])
    (folder / "README.md").write_text("not data", encoding="utf-8")
    dataset = ingest_dataset(str(folder), storage)
    assert dataset.rows == len(ROWS)
    assert [Path(f).name for f in dataset.files] == ["a.csv", "b.jsonl", "c.parquet"]
    assert records(load_dataset_frame(storage, dataset)) == ROWS


def test_a_nested_directory_is_read_recursively(tmp_path, storage):
    folder = tmp_path / "parts"
    (folder / "2024").mkdir(parents=True)
    write_csv(folder / "2024" / "jan.csv", ROWS[:4])
    write_csv(folder / "top.csv", ROWS[4:])
    dataset = ingest_dataset(str(folder), storage)
    assert sorted(map(str, load_dataset_frame(storage, dataset)["text"])) == sorted(r["text"] for r in ROWS)


# -- fingerprint and snapshot reuse -------------------------------------------


def test_fingerprint_is_stable_for_identical_bytes(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = write_csv(tmp_path / "one" / "reviews.csv", ROWS)
    second = tmp_path / "two" / "reviews.csv"
    shutil.copyfile(first, second)
    assert fingerprint_files([first]) == fingerprint_files([first])
    assert fingerprint_files([first]) == fingerprint_files([second])


def test_fingerprint_changes_when_one_byte_changes(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", ROWS)
    before = fingerprint_files([path])
    data = bytearray(path.read_bytes())
    data[-2] = ord("X")
    path.write_bytes(bytes(data))
    assert fingerprint_files([path]) != before


def test_ingesting_the_same_data_twice_reuses_the_snapshot(tmp_path, storage):
    path = write_csv(tmp_path / "reviews.csv", ROWS)
    first = ingest_dataset(str(path), storage)
    second = ingest_dataset(str(path), storage)
    assert (first.reused, second.reused) == (False, True)
    assert second.key == first.key
    assert second.fingerprint == first.fingerprint
    assert second.uri == first.uri
    assert len(storage.list_children("datasets")) == 1


def test_changed_data_gets_a_new_snapshot(tmp_path, storage):
    path = write_csv(tmp_path / "reviews.csv", ROWS)
    first = ingest_dataset(str(path), storage)
    write_csv(path, ROWS + [{"text": "one more", "label": "positive"}])
    second = ingest_dataset(str(path), storage)
    assert second.reused is False
    assert second.key != first.key
    assert second.rows == first.rows + 1
    assert len(load_dataset_frame(storage, first)) == len(ROWS)  # the old snapshot is untouched


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"], ids=["zero-bytes", "blank-lines"])
def test_empty_file_is_a_data_error(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    message = data_error(path)
    assert str(path) in message and "empty" in message


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_header_only_file_is_a_data_error(tmp_path, fmt):
    path = tmp_path / f"header.{fmt}"
    path.write_text("text,label\n" if fmt == "csv" else "text\tlabel\n", encoding="utf-8")
    message = data_error(path)
    assert str(path) in message and "no data rows" in message


def test_malformed_csv_line_names_the_file_and_line(tmp_path):
    lines = ["text,label", "fine,positive", "also fine,negative", "broken,positive,surplus", "last,negative"]
    bad_line = next(i for i, line in enumerate(lines, start=1) if line.count(",") == 2)
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = data_error(path)
    assert str(path) in message
    assert f"line {bad_line}" in message


def test_malformed_jsonl_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok", "label": "positive"}\n{"text": "cut off\n', encoding="utf-8")
    message = data_error(path)
    assert str(path) in message and "line 2" in message


def test_jsonl_line_that_is_not_an_object_is_a_data_error(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "ok", "label": "positive"}\n["text", "label"]\n', encoding="utf-8")
    message = data_error(path)
    assert "line 2" in message and "list" in message


def test_non_utf8_bytes_name_the_file_and_line(tmp_path):
    lines = ["text,label".encode(), "fine,positive".encode(), "caf\xe9 au lait,negative".encode("latin-1")]
    bad_line = next(i for i, line in enumerate(lines, start=1) if not line.isascii())
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    message = data_error(path)
    assert str(path) in message
    assert f"line {bad_line}" in message
    assert "UTF-8" in message


def test_unsupported_extension_is_a_data_error(tmp_path):
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a spreadsheet")
    message = data_error(path)
    assert str(path) in message and "unsupported extension" in message


def test_missing_path_is_a_data_error(tmp_path):
    message = data_error(tmp_path / "nowhere.csv")
    assert "nowhere.csv" in message and "does not exist" in message


def test_directory_without_data_files_is_a_data_error(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello", encoding="utf-8")
    message = data_error(folder)
    assert str(folder) in message and "holds no" in message


def test_directory_with_mismatched_columns_is_a_data_error(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write_csv(folder / "a.csv", ROWS[:3])
    write_csv(folder / "b.csv", [{"text": r["text"], "target": r["label"]} for r in ROWS[3:]])
    message = data_error(folder)
    assert "b.csv" in message and "a.csv" in message
    assert "target" in message


def test_failed_ingest_writes_no_snapshot(tmp_path, storage):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError):
        ingest_dataset(str(path), storage)
    assert storage.list_keys("datasets") == []
