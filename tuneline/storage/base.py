"""The storage interface every stage reads and writes through, addressed by key.

A key is a relative, '/'-separated path under the root (``datasets/ab12/data.parquet``).
``LocalStorage`` (``local.py``) keeps files under a directory; ``S3Storage`` (``s3.py``)
implements the same interface. Writes are atomic per object: a reader never sees half a file.
Reads and writes nothing itself.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any, Collection



def check_key(key: str) -> str:
    """Reject keys that could escape the root (absolute, '..', backslashes, empty parts)."""
    path = PurePosixPath(key)
    if not key or key.startswith("/") or "\\" in key or any(p in ("", "..", ".") for p in key.split("/")):
        raise ValueError(f"unsafe storage key: {key!r}")
    return str(path)


class Storage(ABC):
    """What stages need from a storage root."""

    root_uri: str

    def uri(self, key: str) -> str:
        return f"{self.root_uri.rstrip('/')}/{check_key(key)}"

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write an object atomically, replacing any previous one."""

    @abstractmethod
    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create an object only if absent; False when it already exists."""

    @abstractmethod
    def read_with_token(self, key: str) -> tuple[bytes, str] | None:
        """The object and a change token (S3: its ETag), or None when absent."""

    @abstractmethod
    def replace_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        """Compare-and-swap: write only if the object still has ``token`` (None: only if absent)."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """All keys under ``prefix/``, sorted, relative to the root."""

    @abstractmethod
    def list_children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix/`` (objects and sub-prefixes), sorted."""

    @abstractmethod
    def put_file(self, local: Path, key: str) -> None: ...

    @abstractmethod
    def get_file(self, key: str, local: Path) -> None: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def local_dir(self, prefix: str) -> Path:
        """A local folder with the files under ``prefix`` (the folder itself, or a downloaded copy)."""

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, value: Any) -> None:
        self.write_bytes(key, json.dumps(value, indent=2, sort_keys=True, default=str).encode())

    def put_dir(self, local: Path, prefix: str, skip: Collection[str] = ()) -> list[str]:
        """Upload every file under ``local`` (but the relative names in ``skip``) to ``prefix/``; returns the names."""
        names = sorted(n for n in (p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
                       if n not in skip)
        for name in names:
            self.put_file(local / name, f"{prefix}/{name}")
        return names
