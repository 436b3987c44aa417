"""Content fingerprints: the keys that name each stage's output in the storage root.

Reads nothing but its arguments; the same inputs always give the same key, so a
stage re-run with unchanged inputs lands on (and can reuse) the same location.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def content_key(*parts: Any) -> str:
    """A short, stable hex key for JSON-able parts (pydantic models included)."""
    blob = json.dumps([_canonical(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_files(folder: Path) -> dict[str, dict]:
    """sha256 and size of every file in a folder, by relative path."""
    return {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def files_fingerprint(files: dict[str, dict]) -> str:
    """One SHA-256 for a folder's listing from ``folder_files``: the identity of a model's files."""
    listing = json.dumps({name: entry["sha256"] for name, entry in files.items()}, sort_keys=True)
    return hashlib.sha256(listing.encode()).hexdigest()


@lru_cache(maxsize=16)
def folder_fingerprint(folder: str) -> str:
    """SHA-256 over the names and bytes of every file in a model folder (its identity)."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def code_version() -> str:
    """The installed tuneline version, plus the git commit when run from a checkout."""
    version = metadata.version("tuneline")
    head = Path(__file__).resolve().parent.parent / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        return f"{version}+g{ref[:12]}"
    except OSError:
        return version
