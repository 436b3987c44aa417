"""Batch prediction (`tuneline predict`, the `predict` flow) with registered versions of every task kind.

What a user checks: the output holds the input rows in their order plus the task's predictions, and those are
what the registered model predicts when loaded by hand (classification: the label and probabilities summing
to 1; regression: the value in the target's original units; token classification: a tag per word and the
entities they spell; causal LM: the greedy answer to each prompt, batched with padding); the version used is
recorded (sidecar or Parquet metadata, also on S3); bad input is one error and nothing is written; a write
that fails half-way leaves no file (and an older output untouched).

Kept fast: one real pipeline run (a tiny BERT, 0.2 epochs), the other versions are tiny random models
registered directly (as `models push` does), and every prediction but the flow's runs in-process.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from flows.cli import main
from tests.conftest import EXAMPLES, make_config
from tuneline.config import parse_config
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

NAME = "reviews"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tiny_bert, prefect_harness):
    """A classifier registered by the pipeline (reviews.csv, 0.2 epochs) and 60 rows to predict, with an id column
    and texts of very different lengths (so length-sorted batches reorder them)."""
    from flows.finetune import finetune

    folder = tmp_path_factory.mktemp("predict")
    root = folder / "store"
    raw = make_config(EXAMPLES / "data" / "reviews.csv", root, name=NAME, model={"base": str(tiny_bert),
                      "max_length": 32}, training={"epochs": 0.2}, evaluation={"minimum": 0.0}, retries={"attempts": 1})
    finetune(config=parse_config(raw))
    reviews = pd.read_csv(EXAMPLES / "data" / "reviews.csv", dtype=str, keep_default_na=False).iloc[:60]
    rows = reviews.assign(id=[f"r{i}" for i in range(60)])
    rows.loc[::7, "text"] = rows.loc[::7, "text"] + " And one more thing about it." * 3
    rows.to_csv(folder / "rows.csv", index=False)
    return {"root": root, "rows": rows, "data": str(folder / "rows.csv")}


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def register(root, name: str, folder, task: str, config: dict) -> dict:
    """A version with a pipeline-like manifest (its task and config), registered as `models push` does."""
    return Registry(LocalStorage(root)).register(name, folder, {"task": task, "config": config}, idempotent=False)


def hand_logits(folder_or_model, tokenizer, texts, pairs=None, max_length: int = 32):
    with torch.inference_mode():
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return folder_or_model.eval()(**encoded).logits.float().numpy()


@pytest.mark.slow  # the classifier fixture trains
def test_classification_rows_in_order_with_label_and_probabilities(classifier, capsys, tmp_path):
    import tuneline

    root, rows = classifier["root"], classifier["rows"]
    out = tmp_path / "scored" / "rows.csv"
    code, stdout, err = cli(capsys, "predict", f"{NAME}@production", classifier["data"], "--out", str(out),
                            "--batch-size", "7", "--storage", str(root))
    assert code == 0, err
    scored = pd.read_csv(out, dtype={"id": str, "text": str, "label": str})
    assert list(scored.columns) == ["text", "label", "id", "predicted_label", "probability_negative",
                                    "probability_positive"], "the input's own `label` is kept; the prediction's renamed"
    assert scored["id"].tolist() == rows["id"].tolist() and scored["text"].tolist() == rows["text"].tolist()
    probabilities = scored[["probability_negative", "probability_positive"]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)

    model, tokenizer = tuneline.load_model(f"{NAME}:1", str(root))
    logits = hand_logits(model, tokenizer, rows["text"].tolist())
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(probabilities, expected, atol=1e-5), "batched, sorted and padded: the same probabilities"
    assert scored["predicted_label"].tolist() == [model.config.id2label[i] for i in logits.argmax(-1)]

    manifest = Registry(LocalStorage(root)).manifest(NAME, 1)
    meta = json.loads((tmp_path / "scored" / "rows.csv.meta.json").read_text())
    assert {k: meta[k] for k in ("model", "version", "ref", "task", "model_fingerprint", "model_uri", "input",
                                 "rows")} == {
        "model": NAME, "version": 1, "ref": f"{NAME}@production", "task": "classification",
        "model_fingerprint": manifest["model_fingerprint"], "model_uri": manifest["uri"],
        "input": classifier["data"], "rows": 60}
    assert meta["columns"] == ["predicted_label", "probability_negative", "probability_positive"]
    assert meta["created_at"] and meta["code_version"]
    assert f"model    {NAME}:1 (classification, on cpu)" in stdout and "rows/s" in stdout and str(out) in stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["rows.csv", "rows.csv.meta.json"], "no temporary files"


@pytest.mark.slow  # the classifier fixture trains
def test_flow_writes_parquet_to_s3_with_the_version_in_its_metadata(classifier, s3_root, tmp_path):
    import pyarrow.parquet as pq

    from flows.predict import predict
    from tuneline.storage import open_storage

    out = f"{s3_root}/scores/rows.parquet"
    summary = predict(ref=NAME, data=classifier["data"], out=out, batch_size=16, storage=str(classifier["root"]))
    assert summary["rows"] == 60 and summary["version"] == 1 and summary["output"] == out
    assert summary["metadata"] == out and summary["rows_per_second"] > 0

    local = tmp_path / "rows.parquet"
    open_storage(s3_root).get_file("scores/rows.parquet", local)
    assert not open_storage(s3_root).exists("scores/rows.parquet.meta.json"), "Parquet carries its own metadata"
    table = pq.read_table(local)
    assert table.column("id").to_pylist() == classifier["rows"]["id"].tolist()
    meta = json.loads(table.schema.metadata[b"tuneline"])
    manifest = Registry(LocalStorage(classifier["root"])).manifest(NAME, 1)
    assert (meta["model"], meta["version"], meta["model_fingerprint"], meta["input"], meta["rows"]) == (
        NAME, 1, manifest["model_fingerprint"], classifier["data"], 60)


def test_regression_values_in_original_units(tiny_bert, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root, folder = tmp_path / "store", tmp_path / "regressor"
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=1, problem_type="regression")
    model.config.tuneline_target_scaling = {"kind": "standard", "mean": 2.5, "std": 1.5}
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    register(root, "pairs", folder, "regression",
             {"data": {"text_column": "sentence1", "text_pair_column": "sentence2"}, "model": {"max_length": 32}})
    pairs = pd.read_csv(EXAMPLES / "data" / "pairs.csv", dtype=str, keep_default_na=False).iloc[:20]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in pairs.to_dict(orient="records")))

    out = tmp_path / "pairs-scored.jsonl"
    code, _, err = cli(capsys, "predict", "pairs", str(data), "--out", str(out), "--storage", str(root))
    assert code == 0, err
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sentence1"] for r in scored] == pairs["sentence1"].tolist()
    raw = hand_logits(model, AutoTokenizer.from_pretrained(folder), pairs["sentence1"].tolist(),
                      pairs["sentence2"].tolist())[:, 0]
    assert np.allclose([r["prediction"] for r in scored], raw * 1.5 + 2.5, atol=1e-5), "un-scaled by hand"
    assert not np.allclose(raw * 1.5 + 2.5, raw), "the scaling matters here"


def test_token_classification_tags_and_entities_of_a_pushed_folder(tiny_bert, tmp_path, capsys):
    """A folder pushed without a config: the objective comes from its architecture, the column from its defaults
    (`tokens`); rows are word lists (JSON) or plain text."""
    import pyarrow.parquet as pq
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    folder, root = tmp_path / "tagger", tmp_path / "store"
    torch.manual_seed(2)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=5, id2label=dict(enumerate(tags)),
                                                            label2id={t: i for i, t in enumerate(tags)})
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    tokenizer.save_pretrained(folder)
    assert cli(capsys, "models", "--storage", str(root), "push", str(folder), "tagger")[0] == 0
    sentences = [["Alice", "Smith", "flew", "to", "Paris", "."], ["Hello"],
                 ["Bob", "visited", "the", "Golden", "Gate", "Bridge", "in", "San", "Francisco", "yesterday", "."]]
    data = tmp_path / "sentences.jsonl"
    data.write_text("".join(json.dumps({"tokens": words}) + "\n" for words in sentences))

    out = tmp_path / "tagged.parquet"
    code, _, err = cli(capsys, "predict", "tagger", str(data), "--out", str(out), "--storage", str(root),
                       "--batch-size", "2")
    assert code == 0, err
    scored = pq.read_table(out).to_pylist()
    assert [row["tokens"] for row in scored] == sentences
    for row, words in zip(scored, sentences):
        encoded = tokenizer([words], is_split_into_words=True, return_tensors="pt")
        with torch.inference_mode():
            predicted = model.eval()(**encoded).logits[0].argmax(-1).tolist()
        first = {}
        for position, word in enumerate(encoded.word_ids(0)):
            if word is not None and word not in first:
                first[word] = tags[predicted[position]]
        assert row["tags"] == [first[i] for i in range(len(words))], "the tag of each word's first sub-token"
        for entity in row["entities"]:
            span = row["tags"][entity["start"]:entity["end"]]
            assert span[0] in (f"B-{entity['type']}", f"I-{entity['type']}")
            assert all(tag == f"I-{entity['type']}" for tag in span[1:])
            assert entity["text"] == " ".join(words[entity["start"]:entity["end"]])
    assert sum(len(row["entities"]) for row in scored) > 0

    text = tmp_path / "sentences.csv"  # CSV cells: JSON text of a word list, or plain text (split on spaces)
    pd.DataFrame({"tokens": [json.dumps(sentences[0]), "Carol lives in Rome"]}).to_csv(text, index=False)
    code, _, err = cli(capsys, "predict", "tagger", str(text), "--out", str(tmp_path / "tagged.csv"),
                       "--storage", str(root))
    assert code == 0, err
    tagged = pd.read_csv(tmp_path / "tagged.csv")
    assert json.loads(tagged["tags"][0]) == scored[0]["tags"] and len(json.loads(tagged["tags"][1])) == 4
    assert json.loads(tagged["entities"][0]) == scored[0]["entities"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """Built before the test's own cache is set: the SmolLM2 tokenizer comes from the shared base-model cache."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))


def test_causal_lm_answers_two_prompts_batched(tiny_llama, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneline.objectives.chat import render_prompt

    folder, root = tiny_llama, tmp_path / "store"
    register(root, "chat", folder, "causal_lm", {"data": {"prompt_column": "question"}, "model": {"max_length": 48},
                                                 "evaluation": {"max_new_tokens": 5}})
    prompts = ["What is 2 plus 2?", "Name the capital of France, and say something about its long history."]
    data = tmp_path / "questions.csv"
    pd.DataFrame({"question": prompts}).to_csv(data, index=False)

    out = tmp_path / "answers.csv"
    code, _, err = cli(capsys, "predict", "chat", str(data), "--out", str(out), "--storage", str(root))
    assert code == 0, err
    answers = pd.read_csv(out, keep_default_na=False)["generated"].tolist()

    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    for prompt, answer in zip(prompts, answers):
        text = render_prompt(tokenizer, [{"role": "user", "content": prompt}])
        encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=5, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        alone = tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert answer == alone, "left-padded in a batch: the same greedy answer as alone"


@pytest.mark.slow  # the classifier fixture trains
def test_bad_input_is_one_error_and_nothing_is_written(classifier, capsys, tmp_path):
    root, rows = classifier["root"], classifier["rows"]
    renamed = tmp_path / "renamed.csv"
    rows.rename(columns={"text": "review"}).to_csv(renamed, index=False)
    undecodable = tmp_path / "latin1.csv"
    undecodable.write_bytes("text,label\nCaf\u00e9 was great,positive\n".encode("latin-1"))
    blank = tmp_path / "blank.csv"
    blank.write_text("text,label\ngood,positive\n,negative\n")
    out_dir = tmp_path / "out"
    cases = [
        (NAME, str(renamed), "x.csv", "has no column 'text' (the model's text input); its columns are "
                                      "['review', 'label', 'id']"),
        ("no-such-model", classifier["data"], "x.csv", "model 'no-such-model' has no registered versions"),
        (f"{NAME}:7", classifier["data"], "x.csv", f"model {NAME}:7 does not exist"),
        (NAME, str(undecodable), "x.csv", "is not valid UTF-8"),
        (NAME, str(tmp_path / "missing.csv"), "x.csv", "does not exist"),
        (NAME, str(blank), "x.csv", "column 'text' is empty in 1 of 2 rows (data rows 2)"),
        (NAME, classifier["data"], "x.xlsx", "has no output format extension"),
    ]
    for ref, data, name, message in cases:
        code, out, err = cli(capsys, "predict", ref, data, "--out", str(out_dir / name), "--storage", str(root))
        assert code != 0 and out == "", (ref, data, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
        assert not out_dir.exists(), f"{data}: nothing written"

    code, _, err = cli(capsys, "predict", NAME, str(renamed), "--out", str(out_dir / "x.csv"), "--text-column",
                       "review", "--storage", str(root))
    assert code == 0 and len(pd.read_csv(out_dir / "x.csv")) == 60, err


@pytest.mark.slow  # the classifier fixture trains
def test_a_write_that_fails_half_way_leaves_no_file(classifier, capsys, tmp_path, monkeypatch):
    from tuneline.stages import predict as stage

    out = tmp_path / "rows.csv"
    out.write_text("an older output\n")

    def fail_half_way(frame, path, fmt, metadata):
        path.write_text("text,label\nhalf a fi")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stage, "write_table", fail_half_way)
    code, stdout, err = cli(capsys, "predict", NAME, classifier["data"], "--out", str(out), "--storage",
                            str(classifier["root"]))
    assert code == 1 and stdout == "" and "No space left on device" in err, err
    assert out.read_text() == "an older output\n", "the older output is untouched"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["rows.csv"], \
        "no temporary file and no sidecar"
