"""The CoNLL reader (``data.format: conll``): sentences of token<TAB>tag lines, errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tuneline.data.conll import read_conll
from tuneline.errors import DataError

WNUT_DEV = SHARED_DATA / "wnut17" / "emerging.dev.conll"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# --- read_conll ------------------------------------------------------------------------------

@pytest.mark.skipif(not WNUT_DEV.is_file(), reason=f"real data not available: {WNUT_DEV} is absent "
                                                   "(the shared data folder sits beside the project checkout)")
def test_wnut17_dev_has_the_published_sentence_and_token_counts():
    frame = read_conll(WNUT_DEV)
    assert list(frame.columns) == ["tokens", "tags"]
    assert len(frame) == 1009
    assert frame["tokens"].map(len).sum() == 15733
    assert (frame["tokens"].map(len) == frame["tags"].map(len)).all()
    assert frame["tokens"][0][:3] == ["Stabilized", "approach", "or"]
    assert frame["tokens"][0][6] == "\u00b4"  # a non-ASCII token decoded, not split
    assert frame["tags"].map(lambda tags: tags[0][:2] != "I-").all()  # no sentence opens inside an entity


def test_reads_tabs_spaces_extra_columns_docstart_and_a_last_sentence_without_blank_line(tmp_path):
    text = ("\ufeff-DOCSTART- -X- O O\n\n"
            "Alice\tB-PER\nflew\tO\r\n"          # tab separated, one CRLF line ending
            "-DOCSTART-\n"                       # a boundary even without a blank line
            "to O\nParis  NNP  I-NP  B-LOC\n"    # space separated; the tag is the last column
            "\n\n  \n"                           # several blank (and whitespace-only) lines: one boundary
            "Acme\tB-ORG\nCorp\tI-ORG")          # no newline at the end of the file
    frame = read_conll(write(tmp_path / "tiny.conll", text))
    assert frame["tokens"].tolist() == [["Alice", "flew"], ["to", "Paris"], ["Acme", "Corp"]]
    assert frame["tags"].tolist() == [["B-PER", "O"], ["O", "B-LOC"], ["B-ORG", "I-ORG"]]


def test_a_line_with_one_column_names_the_file_and_line_and_shows_the_line(tmp_path):
    path = write(tmp_path / "bad.conll", "Alice\tB-PER\nflew\tO\n\nto\tO\nParisB-LOC\n")
    with pytest.raises(DataError) as caught:
        read_conll(path)
    message = str(caught.value)
    assert f"{path}, line 5" in message
    assert "'ParisB-LOC'" in message


def test_a_long_malformed_line_is_shown_truncated_to_80_characters(tmp_path):
    long_token = "x" * 200
    path = write(tmp_path / "long.conll", f"ok\tO\n{long_token}\n")
    with pytest.raises(DataError, match=r"line 2") as caught:
        read_conll(path)
    assert "x" * 80 + "..." in str(caught.value)
    assert "x" * 81 not in str(caught.value)


def test_bytes_that_are_not_utf8_name_the_line(tmp_path):
    path = write(tmp_path / "latin1.conll", "Alice\tB-PER\n\nZürich\tB-LOC\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"latin1\.conll, line 3: not valid UTF-8"):
        read_conll(path)


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- O O\n\n"])
def test_a_file_without_sentences_is_an_error(tmp_path, text):
    path = write(tmp_path / "empty.conll", text)
    with pytest.raises(DataError, match=r"empty\.conll: no sentences"):
        read_conll(path)


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_conll(tmp_path / "nowhere.conll")


