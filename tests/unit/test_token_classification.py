"""Token classification parts: BIO checks, tag order, sub-token alignment, entity metrics, the example data."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import EXAMPLES
from tuneline.data.conll import read_conll
from tuneline.objectives.token_classification import (IGNORE_INDEX, align_labels, bio_problems, entity_metrics, majority_baseline,
                                tag_set)

GENERATOR = EXAMPLES / "make_entities_data.py"


# --- bio_problems / tag_set -------------------------------------------------------------------

def test_valid_bio_has_no_problems():
    rows = [["B-PER", "I-PER", "O", "B-LOC"], ["O"], ["B-ORG", "B-ORG", "I-ORG"], []]
    assert bio_problems(rows, {"O", "B-PER", "I-PER", "B-LOC", "B-ORG", "I-ORG"}) == []


def test_i_tag_after_o_or_at_the_start_is_an_iob1_problem_naming_row_and_token():
    problems = bio_problems([["B-PER", "O"], ["O", "I-LOC"], ["I-ORG", "O"]], None)
    assert len(problems) == 2
    assert problems[0].startswith("row 1, token 1:") and "follows 'O'" in problems[0]
    assert problems[1].startswith("row 2, token 0:") and "starts the sentence" in problems[1]
    assert "B-ORG" in problems[1]  # says what would be right


def test_i_tag_after_another_type_is_a_problem():
    problems = bio_problems([["O"], ["B-PER", "I-LOC"], ["B-LOC", "I-LOC", "I-PER"]], None)
    assert [p.split(":")[0] for p in problems] == ["row 1, token 1", "row 2, token 2"]
    assert "follows 'B-PER'" in problems[0]
    assert "follows 'I-LOC'" in problems[1]


def test_unknown_and_malformed_tags_are_problems():
    labels = {"O", "B-PER", "I-PER"}
    problems = bio_problems([["B-PER", "B-MISC"], ["O", "PER"]], labels)
    assert len(problems) == 2
    assert problems[0].startswith("row 0, token 1:") and "'B-MISC' is not one of the labels" in problems[0]
    assert problems[1].startswith("row 1, token 1:") and "'PER'" in problems[1]
    malformed = bio_problems([["O", "PER", "I-PER"]], None)  # the I-PER after it is not blamed twice
    assert len(malformed) == 1 and "'PER' is not BIO" in malformed[0]


def test_problems_stop_at_20_and_the_last_message_counts_the_rest():
    problems = bio_problems([["I-PER"]] * 25, None)
    assert len(problems) == 21
    assert problems[19].startswith("row 19, token 0:")
    assert problems[-1] == "... and 5 more (25 problems in total)"
    assert len(bio_problems([["I-PER"]] * 20, None)) == 20  # exactly 20: no summary line


def test_tag_set_puts_o_first_then_types_with_b_before_i():
    rows = [["I-PER", "B-PER", "O"], ["B-ORG", "I-LOC", "B-LOC"], ["O"]]
    assert tag_set(rows) == ["O", "B-LOC", "I-LOC", "B-ORG", "B-PER", "I-PER"]


# --- align_labels -----------------------------------------------------------------------------

def test_align_labels_marks_the_first_sub_token_of_each_word():
    # [CLS] Wash ##ington visited Par ##i ##s [SEP] [PAD]
    word_ids = [None, 0, 0, 1, 2, 2, 2, None, None]
    assert align_labels(word_ids, [3, 0, 1]) == [-100, 3, -100, 0, 1, -100, -100, -100, -100]
    assert IGNORE_INDEX == -100


def test_align_labels_rejects_word_ids_beyond_the_tags():
    with pytest.raises(ValueError, match="word 2, but only 2 tag ids"):
        align_labels([None, 0, 1, 2, None], [0, 1])


# --- entity_metrics / majority_baseline -------------------------------------------------------

def test_entity_metrics_on_a_hand_computed_example():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["O", "O", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["B-LOC", "I-LOC", "O"]]
    # True entities: PER(0-1), LOC(3)                       -> 2
    # Predicted:     PER(0-1) right, ORG(3) wrong type,
    #                LOC(0-1) in sentence 2 spurious        -> 3, of which 1 right
    metrics = entity_metrics(true, pred)
    assert metrics["precision"] == pytest.approx(1 / 3)
    assert metrics["recall"] == pytest.approx(1 / 2)
    assert metrics["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # 0.4
    assert metrics["token_accuracy"] == pytest.approx(5 / 8)  # wrong: ORG for LOC, and the two spurious LOC tokens
    assert metrics["support"] == 2 and metrics["sentences"] == 2
    assert metrics["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},  # its one prediction is the spurious one
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},  # predicted only
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }
    assert all(type(metrics[key]) is float for key in ("precision", "recall", "f1", "token_accuracy"))
    assert type(metrics["support"]) is int
    json.dumps(metrics)  # plain Python values only


def test_entity_metrics_without_any_entities_is_zero_not_one():
    metrics = entity_metrics([["O", "O"]], [["O", "O"]])
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (0.0, 0.0, 0.0)
    assert metrics["token_accuracy"] == 1.0 and metrics["support"] == 0 and metrics["per_type"] == {}


def test_entity_metrics_rejects_rows_of_different_length():
    with pytest.raises(ValueError, match="row 1: 2 true tags but 1 predicted"):
        entity_metrics([["O"], ["O", "O"]], [["O"], ["O"]])


def test_majority_baseline_predicts_the_commonest_tag_everywhere_and_finds_no_entity():
    true = [["B-PER", "I-PER", "O"], ["O", "O", "B-LOC"]]
    assert majority_baseline(true) == [["O", "O", "O"], ["O", "O", "O"]]
    assert entity_metrics(true, majority_baseline(true))["f1"] == 0.0


# --- examples/make_entities_data.py -----------------------------------------------------------

@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_entities_data", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_writes_valid_bio_with_all_three_types(generator, tmp_path):
    rows = generator.write(tmp_path)
    lines = (tmp_path / "entities.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert len(rows) == 400
    assert all(list(row) == ["tokens", "tags"] and len(row["tokens"]) == len(row["tags"]) for row in rows)
    tags = [row["tags"] for row in rows]
    assert bio_problems(tags, {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}) == []
    assert tag_set(tags) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert any(set(row) == {"O"} for row in tags)  # some sentences have no entity
    assert len({" ".join(row["tokens"]) for row in rows}) == 400  # no duplicates
    assert any(row[0] != "O" for row in tags) and any(row[-2] != "O" for row in tags)  # first and last word
    metrics = entity_metrics(tags, majority_baseline(tags))
    assert metrics["support"] > 400 and metrics["f1"] == 0.0


def test_generator_is_deterministic_and_its_conll_copy_reads_back(generator, tmp_path):
    generator.write(tmp_path / "a")
    rows = generator.write(tmp_path / "b")
    for name in ("entities.jsonl", "entities.conll"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    frame = read_conll(tmp_path / "a" / "entities.conll")
    assert frame["tokens"].tolist() == [row["tokens"] for row in rows[:60]]
    assert frame["tags"].tolist() == [row["tags"] for row in rows[:60]]
