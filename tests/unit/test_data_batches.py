"""The data stages in batches: a dataset larger than one batch is ingested, validated and prepared exactly as if
it were read at once (every row counted, the same splits), whatever ``data.batch_rows`` and ``data.num_proc``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tuneline.config import parse_config
from tuneline.data.ingest import ingest_dataset, load_dataset_frame, read_table
from tuneline.data.splits import INPUT, STRATUM, SplitTally, assign_splits, split_names
from tuneline.errors import DataError
from tuneline.stages.prepare import prepare_splits, split_rows
from tuneline.stages.validate import validate_frame
from tuneline.storage import LocalStorage

LABELS = ["ham", "spam"]
ROWS = 240
SMALL = 16  # rows per batch in these tests: 15 batches of the dataset


def config(task: str = "classification", data: dict | None = None, validation: dict | None = None, **sections):
    raw = {"name": "batched", "task": task, "data": {"source": "unused.csv", **(data or {})},
           "validation": validation or {}, **sections}
    if task == "classification":
        raw["data"].setdefault("labels", LABELS)
    return parse_config(raw)


def sms_frame(rows: int = ROWS) -> pd.DataFrame:
    texts = [f"message number {i}, {'win cash' if i % 5 == 0 else 'see you'}" for i in range(rows)]
    return pd.DataFrame({"text": texts, "label": ["spam" if i % 5 == 0 else "ham" for i in range(rows)]})


def batched(frame: pd.DataFrame, cfg_of, batch_rows: int = SMALL) -> tuple[dict, dict]:
    """(report read at once, report read ``batch_rows`` rows at a time)."""
    whole = validate_frame(frame, cfg_of(10_000))
    return whole, validate_frame(frame, cfg_of(batch_rows))


def failed(report: dict) -> dict[str, dict]:
    return {r["expectation"]: r for r in report["results"] if not r["success"]}


# -- validation: problems in a late batch, counted over every row ------------------------------------------------

def test_a_null_and_an_unknown_label_in_the_last_batch_are_counted_with_every_row():
    frame = sms_frame()
    frame.loc[[3, ROWS - 2], "text"] = None  # the first batch and the last
    frame.loc[ROWS - 5, "label"] = "neutral"
    whole, report = batched(frame, lambda n: config(data={"batch_rows": n}, validation={"min_rows_per_class": 1}))
    assert report == whole
    nulls = failed(report)["expect_column_values_to_not_be_null"]
    assert (nulls["column"], nulls["unexpected_count"], nulls["element_count"]) == ("text", 2, ROWS)
    unknown = failed(report)["expect_column_values_to_be_in_set"]
    assert (unknown["unexpected_count"], unknown["element_count"], unknown["examples"]) == (1, ROWS, ["neutral"])
    assert report["rows"] == ROWS


def test_duplicates_spread_over_batches_count_toward_the_duplicate_share():
    frame = sms_frame()
    copies = list(range(100, ROWS, 2))  # every other row of the later batches repeats row 0's text
    frame.loc[copies, ["text", "label"]] = frame.loc[0, ["text", "label"]].tolist()
    whole, report = batched(frame, lambda n: config(data={"batch_rows": n}, validation={"max_duplicate_fraction": 0.2}))
    assert report == whole
    share = failed(report)["expect_column_proportion_of_unique_values_to_be_between"]["observed"]
    assert share == pytest.approx(frame["text"].nunique() / ROWS)


def test_rows_per_class_and_the_row_count_cover_every_batch():
    frame = sms_frame()
    whole, report = batched(frame, lambda n: config(data={"batch_rows": n}, validation={"min_rows": ROWS}))
    assert report == whole and report["success"], failed(report)
    per_class = next(r for r in report["results"] if r["expectation"] == "expect_rows_per_class_to_be_at_least")
    assert per_class["observed"] == {"ham": ROWS * 4 // 5, "spam": ROWS // 5}
    rows = next(r for r in report["results"] if r["expectation"] == "expect_table_row_count_to_be_between")
    assert rows["observed"] == ROWS


def test_a_training_text_repeated_in_a_late_test_row_is_a_split_overlap():
    frame = sms_frame()
    frame["split"] = ["test" if i >= ROWS - 10 else "train" for i in range(ROWS)]
    leaked = frame.loc[ROWS - 1, "text"]
    frame.loc[2, ["text", "label"]] = [leaked, frame.loc[ROWS - 1, "label"]]  # batch 1 (train) = last batch (test)
    whole, report = batched(frame, lambda n: config(data={"batch_rows": n, "split_column": "split"}))
    assert report == whole
    overlap = failed(report)["expect_train_texts_not_in_evaluation_splits"]
    assert (overlap["unexpected_count"], overlap["element_count"], overlap["examples"]) == (1, ROWS - 10, [leaked])


@pytest.mark.parametrize("batch_rows", [1, 7, 64])
def test_every_objectives_report_is_the_same_whatever_the_batch_size(batch_rows):
    targets = [str(v) for v in np.linspace(0, 5, 60).round(2)]
    targets[3], targets[45] = "high", "9"
    tags = [{"tokens": [f"w{i}", "in", "Paris"], "tags": ["O", "O", "B-LOC"]} for i in range(60)]
    tags[40]["tags"], tags[50]["tags"] = ["O", "I-LOC", "B-LOC"], ["O", "O"]
    chats = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
             for i in range(40)]
    chats[33]["messages"] = [{"role": "user", "content": "unanswered"}]
    cases = [
        (sms_frame(60), "classification", {"labels": None}, {}),
        (pd.DataFrame({"text": [f"s {i}" for i in range(60)], "label": targets}), "regression", {},
         {"target_min": 0, "target_max": 5}),
        (pd.DataFrame(tags), "token_classification", {}, {}),
        (pd.DataFrame(chats), "causal_lm", {"messages_column": "messages"}, {}),
    ]
    for frame, task, data, validation in cases:
        whole = validate_frame(frame, config(task, data=data, validation=validation))
        report = validate_frame(frame, config(task, data={**data, "batch_rows": batch_rows}, validation=validation))
        assert report == whole, task
        assert not report["success"] or task == "classification", task


def test_bio_problems_count_every_row_and_name_rows_across_batches():
    rows = [{"tokens": ["a", "b"], "tags": ["O", "I-PER"]} for _ in range(30)]  # 30 problems: more than listed
    frame = pd.DataFrame(rows)
    report = validate_frame(frame, config("token_classification", data={"batch_rows": 7}))
    bio = failed(report)["expect_tags_to_be_bio"]
    assert bio["unexpected_count"] == 30 and bio["element_count"] == 30
    assert [e.split(",")[0] for e in bio["examples"]] == [f"row {i}" for i in range(5)]


# -- splits: a hash and a stratum per row, batch by batch ---------------------------------------------------------

@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_split_tally_over_batches_equals_the_split_of_the_whole_frame(task):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"text": [f"text {i}" for i in rng.integers(0, 300, 500)],
                          "label": [str(v) for v in rng.integers(0, 3, 500)] if task == "classification"
                          else [f"{v:.2f}" for v in rng.normal(size=500)]})
    cfg = config(task, data={"labels": ["0", "1", "2"]} if task == "classification" else {})
    whole = split_rows(frame, cfg)
    from tuneline import objectives

    tally = SplitTally(cfg.data)
    for start in range(0, len(frame), 37):
        tally.add(objectives.get(task).derive(frame.iloc[start:start + 37], cfg))
    assert split_names(tally.splits()).tolist() == whole.tolist()
    per_text = whole.groupby(frame["text"]).nunique()
    assert (per_text == 1).all()


def test_groups_are_drawn_in_the_order_of_their_first_row():
    """Groups are drawn in order of their first row, not of their hash: reordering rows reorders the draw."""
    frame = pd.DataFrame({INPUT: [f"row {i}" for i in range(100)], STRATUM: "all"})
    cfg = config()
    forward = assign_splits(frame, cfg.data)
    backward = assign_splits(frame.iloc[::-1].reset_index(drop=True), cfg.data)
    assert sorted(forward.value_counts().items()) == sorted(backward.value_counts().items())
    assert forward.tolist() != backward.iloc[::-1].tolist()


# -- ingest: files larger than one batch ---------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "conll"])
def test_a_file_of_many_batches_gives_the_snapshot_of_one_read(tmp_path, fmt):
    frame = sms_frame(50)
    frame.loc[4, "text"] = "NA"
    frame.loc[9, "text"] = None
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.fillna("").to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        write_jsonl(path, [{k: None if pd.isna(v) else v for k, v in row.items()} for row in frame.to_dict("records")])
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        sentences = (f"{t.split()[0]}\tO\nword{i}\tB-LOC" for i, t in enumerate(frame["text"].fillna("x")))
        path.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    once = ingest_dataset(str(path), LocalStorage(tmp_path / "once"))
    batched_ = ingest_dataset(str(path), LocalStorage(tmp_path / "batched"), batch_rows=3)
    assert (batched_.rows, batched_.columns) == (once.rows, once.columns)
    one = load_dataset_frame(LocalStorage(tmp_path / "once"), once)
    many = load_dataset_frame(LocalStorage(tmp_path / "batched"), batched_)
    pd.testing.assert_frame_equal(many.map(str), one.map(str))
    pd.testing.assert_series_equal(many.dtypes, one.dtypes)
    if fmt != "conll":
        pd.testing.assert_frame_equal(one, read_table(path))


def test_jsonl_columns_that_widen_in_a_later_batch_are_stored_as_one_read_stores_them(tmp_path):
    rows = [{"text": f"t{i}", "score": i, "note": None} for i in range(10)]
    rows[7]["score"] = 2.5  # whole numbers, then a fraction
    rows[8]["note"] = "late text"  # null, then text
    rows[9]["extra"] = ["a"]  # a column that first appears in the last batch
    path = write_jsonl(tmp_path / "widening.jsonl", rows)
    once = ingest_dataset(str(path), LocalStorage(tmp_path / "once"))
    batched_ = ingest_dataset(str(path), LocalStorage(tmp_path / "batched"), batch_rows=2)
    one = load_dataset_frame(LocalStorage(tmp_path / "once"), once)
    many = load_dataset_frame(LocalStorage(tmp_path / "batched"), batched_)
    assert batched_.columns == once.columns == ["text", "score", "note", "extra"]
    pd.testing.assert_series_equal(many.dtypes, one.dtypes)
    assert many.map(str).equals(one.map(str))


def test_a_malformed_line_in_a_late_batch_names_its_line(tmp_path):
    lines = ["text,label", *[f"row {i},ham" for i in range(100)]]
    lines.insert(90, "a,b,c")  # line 91 of the file
    path = tmp_path / "late.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"late\.csv: malformed CSV: .*line 91"):
        ingest_dataset(str(path), LocalStorage(tmp_path / "store"), batch_rows=4)
    jsonl = write_jsonl(tmp_path / "late.jsonl", [{"text": f"t{i}", "label": "ham"} for i in range(60)])
    with jsonl.open("a", encoding="utf-8") as handle:
        handle.write('{"text": 61, "label": "ham"}\n')
    with pytest.raises(DataError, match=r"line 61: column 'text' holds a number where line 1 holds a string"):
        ingest_dataset(str(jsonl), LocalStorage(tmp_path / "store"), batch_rows=4)
    assert not (tmp_path / "store" / "datasets").exists() or not any((tmp_path / "store" / "datasets").iterdir())


# -- prepare: the same splits, fitted values and encoded rows whatever the batch size and processes ------------------

def prepared_rows(storage_root: Path, dataset_source: Path, cfg_raw: dict) -> dict:
    from datasets import load_from_disk

    cfg = parse_config({**cfg_raw, "storage": str(storage_root)})
    storage = LocalStorage(storage_root)
    dataset = ingest_dataset(str(dataset_source), storage, cfg.data.format.value)
    prepared = prepare_splits(storage, dataset, cfg)
    splits = {split: load_from_disk(str(storage_root / prepared.key / split)).to_dict()
              for split, count in prepared.counts.items() if count}
    folder = storage_root / prepared.key
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.glob("*/*")}  # the split folders
    return {"key": prepared.key, "counts": prepared.counts, "fitted": prepared.fitted, "stats": prepared.stats,
            "splits": splits, "files": files}


PREPARE_CASES = {
    "classification": ({"labels": None}, {}),
    "regression": ({"scale_targets": "standard"}, {}),
    "token_classification": ({}, {}),
}


@pytest.mark.parametrize("task", list(PREPARE_CASES))
def test_prepared_splits_are_identical_whatever_the_batch_size_and_processes(tmp_path, task):
    rng = np.random.default_rng(0)
    if task == "token_classification":
        rows = [{"tokens": [f"w{i % 90}", "visited", "Paris"], "tags": ["B-PER" if i % 3 else "O", "O", "B-LOC"]}
                for i in range(120)]
        source = write_jsonl(tmp_path / "data.jsonl", rows)
    else:
        labels = (["ham", "spam", "spam", "ham", "ham"] * 24 if task == "classification"
                  else [f"{v:.2f}" for v in rng.uniform(0, 5, 120)])
        frame = pd.DataFrame({"text": [f"message {i % 100} about {i % 7}" for i in range(120)], "label": labels})
        source = tmp_path / "data.csv"
        frame.to_csv(source, index=False)
    data, extra = PREPARE_CASES[task]
    raw = {"name": "p", "task": task, "data": {"source": str(source), **data}, "model": {"max_length": 16}, **extra}
    once = prepared_rows(tmp_path / "once", source, raw)
    for settings in ({"batch_rows": 7}, {"batch_rows": 11, "num_proc": 2}):
        again = prepared_rows(tmp_path / f"store-{len(settings)}", source,
                              {**raw, "data": {**raw["data"], **settings}})
        assert again == once, settings  # the key and the files' bytes: batch_rows and num_proc change how, not what
    assert sum(once["counts"].values()) == 120 and all(once["counts"].values())
