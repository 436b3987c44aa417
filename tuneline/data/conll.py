"""Read a CoNLL-style token / tag file into a DataFrame, one row per sentence.

Reads: a text file (UTF-8, a leading byte-order mark allowed) with one token per line,
``token<TAB>tag``; columns may also be separated by spaces, and extra columns in between
(CoNLL-2003 style ``token POS chunk tag``) are ignored: the token is the first column and
the tag the last. A blank line ends a sentence; ``-DOCSTART-`` lines are skipped and also
end a sentence. The last sentence needs no blank line after it.

Writes nothing: returns a ``pandas.DataFrame`` with columns ``tokens`` and ``tags``
(each cell a ``list[str]`` of equal length), or such frames batch by batch (``iter_conll``: the file is read
line by line). Unreadable input raises ``DataError``
naming the file and, where there is one, the line.

Columns are split on runs of ASCII spaces and tabs only, so a token may contain other
Unicode whitespace (a no-break space in a tweet stays inside its token), and lines are
split on ``\\n`` only (``\\r`` before it is dropped), never on the Unicode line separators
that ``str.splitlines`` would also honour.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from tuneline.errors import DataError

_COLUMN_SEPARATOR = re.compile(r"[ \t]+")
_BLANK = " \t\r\f\v"
_DOCSTART = "-DOCSTART-"
_SHOWN_CHARS = 80


def read_conll(path: Path) -> pd.DataFrame:
    """Sentences of ``path`` as a DataFrame with list columns ``tokens`` and ``tags``."""
    return next(iter_conll(path, None))


def iter_conll(path: Path, batch_rows: int | None) -> Iterator[pd.DataFrame]:
    """Sentences of ``path`` in DataFrames of at most ``batch_rows`` sentences (None: one frame), read line by
    line (memory follows the batch, not the file)."""
    path = Path(path)
    sentences, found = [], False
    for sentence in _sentences(path, _decoded_lines(path)):
        sentences.append(sentence)
        if batch_rows is not None and len(sentences) >= batch_rows:
            yield _frame(sentences)
            sentences, found = [], True
    if not sentences and not found:
        raise DataError(f"{path}: no sentences found (the file is empty or holds only blank and "
                        f"{_DOCSTART} lines); expected one 'token<TAB>tag' per line")
    if sentences:
        yield _frame(sentences)


def _frame(sentences: list[tuple[list[str], list[str]]]) -> pd.DataFrame:
    return pd.DataFrame({"tokens": [tokens for tokens, _ in sentences], "tags": [tags for _, tags in sentences]})


def _open(path: Path):
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: CoNLL file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; expected a CoNLL file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the CoNLL file ({error.strerror})") from None


def _decoded_lines(path: Path) -> Iterator[str]:
    """The file's lines without line endings, one at a time; a decoding error names the line."""
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            raw = raw[:-1] if raw.endswith(b"\n") else raw
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}, line {number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte "
                                f"{error.start + 1} of the line); re-save the file as UTF-8") from None
            yield line[:-1] if line.endswith("\r") else line


def _sentences(path: Path, lines: Iterator[str]) -> Iterator[tuple[list[str], list[str]]]:
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(lines, start=1):
        if line.strip(_BLANK) == "" or line.startswith(_DOCSTART):
            if tokens:
                yield tokens, tags
                tokens, tags = [], []
            continue
        token, tag = _token_and_tag(path, number, line)
        tokens.append(token)
        tags.append(tag)
    if tokens:
        yield tokens, tags


def _token_and_tag(path: Path, number: int, line: str) -> tuple[str, str]:
    columns = _COLUMN_SEPARATOR.split(line.strip(_BLANK))
    if len(columns) < 2:
        shown = line if len(line) <= _SHOWN_CHARS else line[:_SHOWN_CHARS] + "..."
        raise DataError(f"{path}, line {number}: expected 'token<TAB>tag' (at least 2 columns separated by "
                        f"a tab or spaces), found only one: {shown!r}")
    return columns[0], columns[-1]
