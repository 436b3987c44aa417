"""``task: token_classification``: a BIO tag per token (named entities), entity-level F1.

Reads a column of token lists and a column of tag lists (``data.text_column`` / ``data.label_column``,
default ``tokens`` / ``tags``), from JSONL / Parquet rows or CoNLL files (``data.format: conll``:
token<TAB>tag per line, a blank line between sentences). Tags are strict BIO (IOB2): ``O``, ``B-TYPE``
on an entity's first token, ``I-TYPE`` after it; ``data.labels`` (optional) lists the allowed tags in
id order, else every tag seen (``O`` first). Words are split into sub-tokens by the base model's fast
tokenizer; each word's tag sits on its first sub-token and -100 (ignored by the loss) on the rest.
Rows longer than ``model.max_length`` sub-tokens are cut, and only their kept words are scored.

Metrics (seqeval, default mode): entity precision / recall / F1 (micro over entities; an entity counts
when its type, start and end all match), per type, and token accuracy. Gate default: ``entity_f1``.

Predictions read the same word lists (a list, or JSON text of one; plain text is split on whitespace):
``tags`` (one per word; null for words past ``model.max_length`` sub-tokens) and ``entities``
(``[{type, start, end, text}]``: word offsets, ``end`` exclusive, ``text`` the words joined by spaces).
Writes nothing itself; the stages store what it returns.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tuneline.data.expectations import MAX_EXAMPLES
from tuneline.data.splits import INPUT, STRATUM
from tuneline.errors import ConfigError, DataError
from tuneline.objectives.base import HIGHER, PredictionInputs, refuse_text_pair
from tuneline.objectives.heads import HeadObjective

if TYPE_CHECKING:
    import pandas as pd

    from tuneline.config import FinetuneConfig

IGNORE_INDEX = -100  # the label id the loss (and the metrics) skip
TOKENS, TAGS, TEXT = "_tokens", "_tags", "_text"  # derived columns: lists of str (None when malformed), joined text


class TokenClassification(HeadObjective):
    name = "token_classification"
    description = "a BIO tag per token (named entities); entity-level F1"
    pipeline_tag = "token-classification"
    metrics = {"entity_f1": HIGHER, "entity_precision": HIGHER, "entity_recall": HIGHER, "token_accuracy": HIGHER}
    default_metric = "entity_f1"
    defaults = {"data": {"text_column": "tokens", "label_column": "tags"}}
    has_label_set = True
    input_noun = "sentences"
    auto_model = "AutoModelForTokenClassification"
    architecture_suffix = "ForTokenClassification"
    peft_task_type = "TOKEN_CLS"

    # -- validate and split ----------------------------------------------------------------------
    def input_columns(self, cfg: FinetuneConfig) -> list[str]:
        return [cfg.data.text_column, cfg.data.label_column]

    def derive(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> pd.DataFrame:
        """Token and tag lists per row; sentences with an entity and without are split in proportion."""
        frame = frame.copy()
        frame[TOKENS] = [as_strings(v) for v in frame[cfg.data.text_column]]
        frame[TAGS] = [as_strings(v) for v in frame[cfg.data.label_column]]
        frame[TEXT] = [None if t is None else " ".join(t) for t in frame[TOKENS]]
        frame[INPUT] = frame[TEXT].fillna("")
        frame[STRATUM] = ["entities" if tags and any(t != OUTSIDE for t in tags) else "none" for tags in frame[TAGS]]
        return frame

    def expectations(self, frame: pd.DataFrame, cfg: FinetuneConfig) -> list:
        import great_expectations.expectations as gxe

        limits = cfg.validation
        return [gxe.ExpectColumnValuesToNotBeNull(column=cfg.data.text_column),
                gxe.ExpectColumnValuesToNotBeNull(column=cfg.data.label_column),
                gxe.ExpectColumnValueLengthsToBeBetween(column=TEXT, min_value=limits.min_text_length,
                                                        max_value=limits.max_text_length)]

    def report_column(self, column: str | None, cfg: FinetuneConfig) -> str | None:
        return cfg.data.text_column if column == TEXT else column

    def checks(self, frame: pd.DataFrame, cfg: FinetuneConfig, before: list[dict] | None = None) -> list[dict]:
        """Token and tag lists of equal length; strict BIO tags, each in data.labels when given. Rows are named by
        their position (the frame's index); a BIO problem's row counts the rows with readable tags."""
        from tuneline.data.expectations import merge_entries

        data = cfg.data
        present = frame[data.text_column].notna() & frame[data.label_column].notna()
        shape_bad = [(row, tokens, tags) for row, ok, tokens, tags in zip(frame.index, present, frame[TOKENS],
                                                                          frame[TAGS])
                     if ok and (tokens is None or tags is None or len(tokens) != len(tags) or not tokens)]
        rows = [tags for tags in frame[TAGS] if tags is not None]
        labels = set(data.labels) if data.labels else None
        first = before[1]["element_count"] if before else 0  # readable tag rows in the batches before
        problems = bio_problems(rows, labels, first_row=first)
        bad_rows = sum(1 for tags in rows if next(_row_problems(0, tags, labels), None) is not None)
        entries = [
            {"expectation": "expect_tokens_and_tags_to_be_lists_of_equal_length", "column": data.label_column,
             "success": not shape_bad, "unexpected_count": len(shape_bad), "element_count": int(present.sum()),
             **({"examples": [f"row {row}: {len(tokens or [])} tokens, {len(tags or [])} tags"
                              for row, tokens, tags in shape_bad[:MAX_EXAMPLES]]} if shape_bad else {})},
            {"expectation": "expect_tags_to_be_bio", "column": data.label_column, "success": not problems,
             "unexpected_count": bad_rows, "element_count": len(rows),
             **({"examples": problems[:MAX_EXAMPLES]} if problems else {})},
        ]
        return entries if not before else [merge_entries(b, e) for b, e in zip(before, entries)]

    # -- prepare ---------------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, frame: pd.DataFrame, cfg: FinetuneConfig) -> dict:
        """Tags in id order: as configured, else every tag in the data (O first, then by type, B before I)."""
        return {"labels": list(cfg.data.labels) if cfg.data.labels else tag_set(list(frame[TAGS]))}

    def fit_columns(self, cfg: FinetuneConfig) -> list[str]:
        return [] if cfg.data.labels else [TAGS]

    def tokenizer(self, base):
        tokenizer = super().tokenizer(base)
        if not tokenizer.is_fast:
            raise ConfigError(f"model.base: task: token_classification needs a fast tokenizer (word ids); "
                              f"{base} has {type(tokenizer).__name__}")
        return tokenizer

    def encode(self, rows: pd.DataFrame, cfg: FinetuneConfig, tokenizer, fitted: dict):
        from datasets import Dataset

        ids = {tag: i for i, tag in enumerate(fitted["labels"])}
        encoded = tokenizer(list(rows[TOKENS]), is_split_into_words=True, truncation=True,
                            max_length=cfg.model.max_length)
        columns = {name: list(values) for name, values in encoded.items()}
        columns["labels"] = [align_labels(encoded.word_ids(i), [ids[t] for t in tags])
                             for i, tags in enumerate(rows[TAGS])]
        return Dataset.from_dict(columns)

    def collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE_INDEX)

    def head_options(self, fitted: dict) -> dict:
        labels = fitted["labels"]
        return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}}

    def example_prediction(self, cfg: FinetuneConfig) -> list[str]:
        """A tag per word, read from the word's first sub-token (as training labels it)."""
        return ['words = ["Replace", "these", "words", "with", "yours", "in", "Berlin"]',
                "encoded = tokenizer(words, is_split_into_words=True, truncation=True, "
                f'max_length={cfg.model.max_length}, return_tensors="pt")',
                "with torch.inference_mode():",
                "    ids = model(**encoded).logits.argmax(-1)[0].tolist()",
                "tags = {}",
                "for position, word in enumerate(encoded.word_ids()):",
                "    if word is not None and word not in tags:",
                "        tags[word] = model.config.id2label[ids[position]]",
                "print([(w, tags.get(i)) for i, w in enumerate(words)])"]

    # -- predict ---------------------------------------------------------------------------------
    def prediction_columns(self, data: dict, text_column: str | None = None,
                           text_pair_column: str | None = None) -> dict[str, str]:
        refuse_text_pair(self.name, text_pair_column)
        return {"tokens": text_column or data["text_column"]}

    def prediction_encoding(self, tokenizer, rows: pd.DataFrame, inputs: PredictionInputs):
        return tokenizer(prediction_words(rows, inputs.columns["tokens"]), is_split_into_words=True,
                         truncation=True, max_length=inputs.max_length, padding=True, return_tensors="pt")

    def predictions_from(self, logits, encoded, rows: pd.DataFrame, inputs: PredictionInputs,
                         model_config) -> pd.DataFrame:
        """A tag per word from its first sub-token (as training labels it), and the entities those tags spell."""
        import pandas as pd

        predicted = logits.argmax(-1)
        all_tags, all_entities = [], []
        for i, words in enumerate(prediction_words(rows, inputs.columns["tokens"])):
            tags: list[str | None] = [None] * len(words)  # words cut off by max_length stay untagged
            for position, word in enumerate(encoded.word_ids(i)):
                if word is not None and tags[word] is None:
                    tags[word] = str(model_config.id2label[int(predicted[i, position])])
            all_tags.append(tags)
            all_entities.append(entity_spans(words, tags))
        return pd.DataFrame({"tags": all_tags, "entities": all_entities}, index=rows.index)

    # -- score -----------------------------------------------------------------------------------
    def metrics_from(self, logits, labels, fitted: dict, model_config=None) -> dict:
        """Entity metrics over the scored words (the first sub-token of each word, where labels != -100)."""
        names = fitted["labels"]
        predicted = logits.argmax(-1)
        true_tags, pred_tags = [], []
        for row_labels, row_predicted in zip(labels, predicted):
            kept = row_labels != IGNORE_INDEX
            true_tags.append([names[i] for i in row_labels[kept]])
            pred_tags.append([names[i] for i in row_predicted[kept]])
        scores = entity_metrics(true_tags, pred_tags)
        return {"entity_f1": scores["f1"], "entity_precision": scores["precision"],
                "entity_recall": scores["recall"], "token_accuracy": scores["token_accuracy"],
                "per_type": scores["per_type"], "support": scores["support"], "sentences": scores["sentences"]}


def as_strings(value) -> list[str] | None:
    """A cell holding a list of strings (a list, a numpy array after Parquet, or JSON text), else None."""
    import json

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if value is None or isinstance(value, (dict, float, int)):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    return items if all(isinstance(item, str) for item in items) else None


def prediction_words(rows: pd.DataFrame, column: str) -> list[list[str]]:
    """The words of each row: a list, JSON text of one, or plain text (split on whitespace)."""
    words = []
    for index, value in rows[column].items():
        found = as_strings(value)
        if found is None and isinstance(value, str):
            found = value.split()
        if not found:
            raise DataError(f"column {column!r}, row {index}: not a list of words (a list of strings, JSON text of "
                            f"one, or plain text): {str(value)[:80]!r}")
        words.append(found)
    return words


def entity_spans(words: list[str], tags: list[str | None]) -> list[dict]:
    """``[{type, start, end, text}]`` from BIO tags (word offsets, end exclusive; read like the metrics: an
    ``I-X`` after ``O`` or another type opens an entity). Untagged words end an entity."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [{"type": kind, "start": start, "end": end + 1, "text": " ".join(words[start:end + 1])}
            for kind, start, end in get_entities([tag or OUTSIDE for tag in tags])]


OUTSIDE = "O"
MAX_PROBLEMS = 20

_BIO_TAG = re.compile(r"^([BI])-(.+)$")
_BAD = object()  # "previous tag was unreadable": skip the continuation check after it


def bio_problems(tag_rows: list[list[str]], labels: set[str] | None = None, first_row: int = 0) -> list[str]:
    """One message per problem in ``tag_rows``; empty when every row is valid BIO.

    A problem is a tag outside ``labels`` (when given), a tag that is neither ``O`` nor
    ``B-TYPE`` / ``I-TYPE``, or an ``I-TYPE`` that starts a sentence or follows ``O`` or a tag
    of another type. Messages name the row (0-based index in ``tag_rows``, plus ``first_row``) and
    the token position (0-based). After ``MAX_PROBLEMS`` messages the rest are only counted, and one
    last message says how many more there were.
    """
    messages: list[str] = []
    total = 0
    for row, tags in enumerate(tag_rows, start=first_row):
        for message in _row_problems(row, tags, labels):
            total += 1
            if total <= MAX_PROBLEMS:
                messages.append(message)
    if total > MAX_PROBLEMS:
        messages.append(f"... and {total - MAX_PROBLEMS} more ({total} problems in total)")
    return messages


def _row_problems(row: int, tags: list[str], labels: set[str] | None) -> Iterator[str]:
    previous: object = None  # None: start of sentence; "O"; (prefix, type); or _BAD
    for position, tag in enumerate(tags):
        where = f"row {row}, token {position}"
        if labels is not None and tag not in labels:
            yield f"{where}: tag {tag!r} is not one of the labels {sorted(labels, key=str)}"
            previous = _parse(tag)
            continue
        parsed = _parse(tag)
        if parsed is _BAD:
            yield f"{where}: tag {tag!r} is not BIO; expected 'O', 'B-TYPE' or 'I-TYPE'"
        elif isinstance(parsed, tuple) and parsed[0] == "I":
            problem = _continuation_problem(parsed[1], previous)
            if problem:
                yield f"{where}: tag {tag!r} {problem}; in BIO (IOB2) an entity starts with 'B-{parsed[1]}'"
        previous = parsed


def _parse(tag: object) -> object:
    """``"O"``, ``(prefix, type)`` or ``_BAD``."""
    if tag == OUTSIDE:
        return OUTSIDE
    match = _BIO_TAG.match(tag) if isinstance(tag, str) else None
    return (match.group(1), match.group(2)) if match else _BAD


def _continuation_problem(entity_type: str, previous: object) -> str | None:
    if previous is _BAD:
        return None  # already reported; one bad tag should not yield two messages
    if previous is None:
        return "starts the sentence"
    if previous == OUTSIDE:
        return "follows 'O'"
    prefix, previous_type = previous  # type: ignore[misc]
    if previous_type != entity_type:
        return f"follows '{prefix}-{previous_type}' (another type)"
    return None


def tag_set(tag_rows: list[list[str]]) -> list[str]:
    """Every tag seen, ``O`` first, then by entity type with ``B-`` before ``I-``.

    Only tags that occur are listed (an ``I-X`` without any ``B-X`` gives no ``B-X``).
    Tags that are not BIO come last, sorted, so the order is still total and stable.
    """
    seen = {tag for tags in tag_rows for tag in tags}
    return sorted(seen, key=_tag_order)


def _tag_order(tag: str) -> tuple:
    if tag == OUTSIDE:
        return (0,)
    parsed = _parse(tag)
    if isinstance(parsed, tuple):
        return (1, parsed[1], parsed[0])  # "B" < "I"
    return (2, str(tag))


def align_labels(word_ids: list[int | None], word_tag_ids: list[int]) -> list[int]:
    """Label id per sub-token: the word's tag id on its first sub-token, ``IGNORE_INDEX`` elsewhere.

    ``word_ids`` is what a fast tokenizer's ``BatchEncoding.word_ids()`` returns: the index
    of the word each sub-token came from, or ``None`` for special tokens ([CLS], [SEP],
    padding), which get ``IGNORE_INDEX`` too. A sub-token starts a word when its word id
    differs from the previous sub-token's.
    """
    labels: list[int] = []
    previous: int | None = None
    for position, word in enumerate(word_ids):
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word == previous:
            labels.append(IGNORE_INDEX)
        else:
            if not 0 <= word < len(word_tag_ids):
                raise ValueError(f"sub-token {position} belongs to word {word}, but only {len(word_tag_ids)} "
                                 "tag ids were given; word_ids and word_tag_ids come from different sentences")
            labels.append(word_tag_ids[word])
        previous = word
    return labels


def entity_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
    """Entity-level precision / recall / F1 (seqeval, default mode) and token accuracy.

    An entity counts as found only when its type, start and end all match. Returns
    ``precision``, ``recall``, ``f1`` (micro over all entities), ``token_accuracy`` (share of
    tokens whose tag matches), ``per_type`` (``{TYPE: {precision, recall, f1, support}}``,
    for every type seen in either list), ``support`` (number of true entities) and
    ``sentences``. All values are plain Python ``float`` / ``int``.

    Undefined ratios count as 0 (``zero_division=0``): a type never predicted has precision
    0, and with no true and no predicted entities at all seqeval reports precision, recall
    and F1 of 0, not 1, even though nothing was missed. Read such a score together with
    ``support``.

    Default (lenient) mode means an ``I-X`` after ``O`` opens an entity, as in IOB1; run
    ``bio_problems`` on the true tags first if they must be strict BIO.
    """
    from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

    _check_same_shape(true_tags, pred_tags)
    precision, recall, f1, support = precision_recall_fscore_support(
        true_tags, pred_tags, average="micro", zero_division=0)
    types = sorted({name for name, _, _ in get_entities(true_tags)} | {name for name, _, _ in get_entities(pred_tags)})
    by_type = precision_recall_fscore_support(true_tags, pred_tags, average=None, zero_division=0)
    per_type = {name: {"precision": float(by_type[0][i]), "recall": float(by_type[1][i]),
                       "f1": float(by_type[2][i]), "support": int(by_type[3][i])} for i, name in enumerate(types)}
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "token_accuracy": _token_accuracy(true_tags, pred_tags), "per_type": per_type,
            "support": int(support), "sentences": len(true_tags)}


def _check_same_shape(true_tags: list[list[str]], pred_tags: list[list[str]]) -> None:
    if not true_tags:
        raise ValueError("no sentences to score: true_tags is empty")
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} true tag rows but {len(pred_tags)} predicted rows")
    for row, (true, pred) in enumerate(zip(true_tags, pred_tags)):
        if len(true) != len(pred):
            raise ValueError(f"row {row}: {len(true)} true tags but {len(pred)} predicted tags")


def _token_accuracy(true_tags: list[list[str]], pred_tags: list[list[str]]) -> float:
    tokens = sum(len(tags) for tags in true_tags)
    right = sum(t == p for true, pred in zip(true_tags, pred_tags) for t, p in zip(true, pred))
    return right / tokens if tokens else 0.0


def majority_baseline(true_tags: list[list[str]]) -> list[list[str]]:
    """Predict the most common tag (ties: the first in ``tag_set`` order) for every token."""
    counts = Counter(tag for tags in true_tags for tag in tags)
    if not counts:
        return [[] for _ in true_tags]
    majority = min(counts, key=lambda tag: (-counts[tag], _tag_order(tag)))
    return [[majority] * len(tags) for tags in true_tags]
