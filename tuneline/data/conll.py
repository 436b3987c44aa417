"""Read a CoNLL-style token / tag file into a DataFrame, one row per sentence.

Reads: a text file (UTF-8, a leading byte-order mark allowed) with one token per line,
``token<TAB>tag``; columns may also be separated by spaces, and extra columns in between
(CoNLL-2003 style ``token POS chunk tag``) are ignored: the token is the first column and
the tag the last. A blank line ends a sentence; ``-DOCSTART-`` lines are skipped and also
end a sentence. The last sentence needs no blank line after it.

Writes nothing: returns a ``pandas.DataFrame`` with columns ``tokens`` and ``tags``
(each cell a ``list[str]`` of equal length). Unreadable input raises ``DataError``
naming the file and, where there is one, the line.

Columns are split on runs of ASCII spaces and tabs only, so a token may contain other
Unicode whitespace (a no-break space in a tweet stays inside its token), and lines are
split on ``\\n`` only (``\\r`` before it is dropped), never on the Unicode line separators
that ``str.splitlines`` would also honour.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import pandas as pd

from tuneline.errors import DataError

_COLUMN_SEPARATOR = re.compile(r"[ \t]+")
_BLANK = " \t\r\f\v"
_DOCSTART = "-DOCSTART-"
_SHOWN_CHARS = 80


def read_conll(path: Path) -> pd.DataFrame:
    """Sentences of ``path`` as a DataFrame with list columns ``tokens`` and ``tags``."""
    path = Path(path)
    lines = _decoded_lines(path, _read_bytes(path))
    sentences = _sentences(path, lines)
    if not sentences:
        raise DataError(f"{path}: no sentences found (the file is empty or holds only blank and "
                        f"{_DOCSTART} lines); expected one 'token<TAB>tag' per line")
    return pd.DataFrame({"tokens": [tokens for tokens, _ in sentences],
                         "tags": [tags for _, tags in sentences]})


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: CoNLL file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; expected a CoNLL file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the CoNLL file ({error.strerror})") from None


def _decoded_lines(path: Path, data: bytes) -> list[str]:
    """The file's lines without line endings; a decoding error names the line."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataError(f"{path}, line {line}: not valid UTF-8 (byte 0x{data[error.start]:02x} at byte "
                        f"{column} of the line); re-save the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _sentences(path: Path, lines: list[str]) -> list[tuple[list[str], list[str]]]:
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(lines, start=1):
        if line.strip(_BLANK) == "" or line.startswith(_DOCSTART):
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        token, tag = _token_and_tag(path, number, line)
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def _token_and_tag(path: Path, number: int, line: str) -> tuple[str, str]:
    columns = _COLUMN_SEPARATOR.split(line.strip(_BLANK))
    if len(columns) < 2:
        shown = line if len(line) <= _SHOWN_CHARS else line[:_SHOWN_CHARS] + "..."
        raise DataError(f"{path}, line {number}: expected 'token<TAB>tag' (at least 2 columns separated by "
                        f"a tab or spaces), found only one: {shown!r}")
    return columns[0], columns[-1]
