"""Evaluate registered versions on new labelled data (`tuneline evaluate`, the `evaluate-version` flow).

What a user checks: the metrics are the pipeline's, recomputed here from the registered model on the new
rows; each result is stored beside its version and the manifest's bytes never change; `models show` lists
the evaluation with the data's fingerprint; the same data again is reused; two versions print side by
side; a regression version scores in the target's original units; bad input is one error and nothing is
stored beside any version.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from tests.conftest import EXAMPLES, make_config
from tuneline.config import parse_config
from tuneline.data.ingest import fingerprint_files
from tuneline.keys import version_dir

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
NAME = "reviews"
TRAIN_ROWS = 320  # of the 400 sample reviews; the other 80 are the new data


def write_csv(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_bert, prefect_harness):
    """Two versions of a tiny classifier (two seeds; the second with its labels inferred, not configured),
    trained on the first 320 reviews for a few steps; the last 80 are the new labelled data."""
    from flows.finetune import finetune

    folder = tmp_path_factory.mktemp("evaluate-version")
    reviews = pd.read_csv(EXAMPLES / "data" / "reviews.csv", dtype=str, keep_default_na=False)
    train = write_csv(reviews.iloc[:TRAIN_ROWS], folder / "train.csv")
    new_rows = reviews.iloc[TRAIN_ROWS:].reset_index(drop=True)
    root = folder / "store"
    for seed, labels in ((1, ["negative", "positive"]), (2, None)):
        raw = make_config(train, root, name=NAME, data={"labels": labels},
                          model={"base": str(tiny_bert), "max_length": 32}, training={"epochs": 0.2, "seed": seed},
                          evaluation={"minimum": 0.0}, retries={"attempts": 1})
        finetune(config=parse_config(raw))
    return {"root": root, "new": write_csv(new_rows, folder / "new.csv"), "rows": new_rows, "folder": folder}


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def logits_of(ref: str, root, texts: list[str], pairs: list[str] | None = None):
    """The registered model's logits on the rows, computed here (tuneline.load_model, one padded batch)."""
    import torch

    import tuneline

    model, tokenizer = tuneline.load_model(ref, str(root))
    with torch.inference_mode():
        encoded = tokenizer(texts, pairs, truncation=True, max_length=32, padding=True, return_tensors="pt")
        return model.eval()(**encoded).logits.float().numpy(), model.config


def registry_files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in (root / "registry").rglob("*") if p.is_file()}


def test_two_versions_on_new_data_side_by_side(registered, capsys, tmp_path, monkeypatch):
    from sklearn.metrics import accuracy_score, f1_score

    from flows.evaluate import evaluate_version

    monkeypatch.setenv("TUNELINE_CACHE", str(tmp_path / "cache"))
    root, new, rows = registered["root"], registered["new"], registered["rows"]
    manifests = {v: (root / version_dir(NAME, v) / "manifest.json").read_bytes() for v in (1, 2)}
    fingerprint = fingerprint_files([registered["folder"] / "new.csv"])

    state = evaluate_version(refs=[f"{NAME}:1", f"{NAME}@production", f"{NAME}:2"], data=new, storage=str(root),
                             return_state=True)
    comparison = state.result()
    assert [(e["version"], e["reused"]) for e in comparison["evaluations"]] == [(1, False), (2, False)], \
        "one evaluation per distinct version (the alias names one of them)"
    assert comparison["dataset_fingerprint"] == fingerprint and comparison["rows"] == len(rows) == 80
    assert comparison["metric_order"][0] == "f1_macro"

    for evaluation in comparison["evaluations"]:
        version, metrics = evaluation["version"], evaluation["metrics"]
        logits, config = logits_of(f"{NAME}:{version}", root, rows["text"].tolist())
        truth = [config.label2id[label] for label in rows["label"]]
        predicted = logits.argmax(-1)
        assert metrics["f1_macro"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0),
                                                    abs=1e-12)
        assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-12)
        assert metrics["support"] == 80 and metrics["confusion_matrix"]["labels"] == ["negative", "positive"]
        stored = root / version_dir(NAME, version) / "evaluations" / f"{fingerprint[:16]}.json"
        assert evaluation["uri"] == str(stored)
        record = json.loads(stored.read_text())
        assert record["metrics"] == metrics and record["dataset_fingerprint"] == fingerprint
        assert record["rows"] == 80 and record["source"] == new and record["evaluated_at"] and record["code_version"]
        assert (root / version_dir(NAME, version) / "manifest.json").read_bytes() == manifests[version], \
            "the manifest is never rewritten"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    table = [a for a in artifacts if a.key == f"{NAME}-evaluation-on-new-data"]
    assert len(table) == 1 and "reviews:1" in str(table[0].data) and "reviews:2" in str(table[0].data)

    code, out, err = cli(capsys, "evaluate", f"{NAME}:1", f"{NAME}:2", new, "--storage", str(root), "--json")
    assert code == 0, err
    again = json.loads(out.strip().splitlines()[-1])
    assert [e["reused"] for e in again["evaluations"]] == [True, True], "the same version on the same data: reused"
    assert [e["metrics"] for e in again["evaluations"]] == [e["metrics"] for e in comparison["evaluations"]]

    code, out, err = cli(capsys, "evaluate", f"{NAME}:1", f"{NAME}:2", new, "--storage", str(root))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"data     {new}: 80 rows, fingerprint {fingerprint[:16]}"
    assert lines[1].split() == ["metric", f"{NAME}:1", f"{NAME}:2"]
    gate = lines[2].split()
    assert gate[:4] == ["f1_macro", "(gate,", "higher", "is"], "the gate metric first"
    f1 = [e["metrics"]["f1_macro"] for e in comparison["evaluations"]]
    assert gate[-2:] == [f"{f1[0]:.4f}", f"{f1[1]:.4f}"]
    assert sum("reused (evaluated earlier)" in line for line in lines) == 2

    code, out, err = cli(capsys, "models", "--storage", str(root), "show", f"{NAME}:2")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["version"] == 2 and shown["model_fingerprint"]  # still the manifest, plus the evaluations
    [listed] = shown["evaluations"]
    assert listed["dataset_fingerprint"] == fingerprint and listed["source"] == new and listed["rows"] == 80
    assert listed["metrics"]["f1_macro"] == f1[1] and listed["metric"] == "f1_macro" and listed["evaluated_at"]
    assert "evaluations" not in json.loads(manifests[2]), "listed beside the manifest, not stored in it"


def test_bad_input_is_one_error_and_nothing_is_stored(registered, capsys, tmp_path):
    root, rows = registered["root"], registered["rows"]
    pushed = cli(capsys, "models", "--storage", str(root), "push", str(root / version_dir(NAME, 1) / "model"), "pushed")
    assert pushed[0] == 0, pushed
    before = registry_files(root)
    unknown_label = rows.iloc[:10].copy()
    unknown_label.loc[3, "label"] = "neutral"
    undecodable = tmp_path / "latin1.csv"
    undecodable.write_bytes("text,label\nCaf\u00e9 was great,positive\n".encode("latin-1"))
    cases = [
        ((f"{NAME}:1", f"{NAME}:9"), registered["new"], f"error: model {NAME}:9 does not exist (versions: [1, 2])"),
        (("pushed",), registered["new"], "error: model pushed:1 has no config and fitted values"),
        ((f"{NAME}:2",), write_csv(rows.rename(columns={"label": "sentiment"}), tmp_path / "renamed.csv"),
         "expect_column_to_exist on column 'label'"),
        # version 2 was trained with its labels inferred: its fitted labels still hold the new data to them
        ((f"{NAME}:2",), write_csv(unknown_label, tmp_path / "neutral.csv"),
         "expect_column_values_to_be_in_set on column 'label': 1 of 10 rows; e.g. 'neutral'"),
        ((f"{NAME}:1",), str(undecodable), "line 2 is not valid UTF-8"),
        ((f"{NAME}:1",), str(tmp_path / "missing.csv"), "does not exist"),
    ]
    for refs, data, message in cases:
        code, out, err = cli(capsys, "evaluate", *refs, data, "--storage", str(root))
        assert code == 1 and out == "", (refs, data, out, err)
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err
        assert registry_files(root) == before, f"{data}: nothing is stored beside any version"


def test_regression_version_scores_in_original_units(tmp_path, tiny_bert, capsys, monkeypatch):
    from flows.finetune import finetune

    monkeypatch.setenv("TUNELINE_CACHE", str(tmp_path / "cache"))
    pairs = pd.read_csv(EXAMPLES / "data" / "pairs.csv", dtype=str, keep_default_na=False)
    root = tmp_path / "store"
    raw = make_config(write_csv(pairs.iloc[:240], tmp_path / "train.csv"), root, name="pairs", task="regression",
                      data={"labels": None, "text_column": "sentence1", "text_pair_column": "sentence2",
                            "label_column": "score", "scale_targets": "standard"},
                      model={"base": str(tiny_bert), "max_length": 32}, training={"epochs": 0.2},
                      evaluation={"metric": "pearson", "minimum": -1.0}, retries={"attempts": 1})
    finetune(config=parse_config(raw))
    new_rows = pairs.iloc[240:].reset_index(drop=True)
    code, out, err = cli(capsys, "evaluate", "pairs", write_csv(new_rows, tmp_path / "new.csv"),
                         "--storage", str(root), "--json")
    assert code == 0, err
    [evaluation] = json.loads(out.strip().splitlines()[-1])["evaluations"]
    assert evaluation["metric"] == "pearson" and not evaluation["lower_is_better"] and evaluation["rows"] == 60

    logits, config = logits_of("pairs:1", root, new_rows["sentence1"].tolist(), new_rows["sentence2"].tolist())
    scaling = config.tuneline_target_scaling
    assert scaling["kind"] == "standard" and scaling["std"] != 1.0
    predicted = logits[:, 0] * scaling["std"] + scaling["mean"]
    truth = new_rows["score"].astype(float).to_numpy()
    assert evaluation["metrics"]["mse"] == pytest.approx(float(np.mean((predicted - truth) ** 2)), rel=1e-5)
    assert evaluation["metrics"]["mae"] == pytest.approx(float(np.mean(np.abs(predicted - truth))), rel=1e-5)
