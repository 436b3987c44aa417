"""Storage roots: where every stage reads and writes, addressed by key.

A key is a relative, '/'-separated path under the root (``datasets/ab12/data.parquet``).
``LocalStorage`` keeps files under a directory; the S3 backend implements the same
interface. Writes are atomic per object: a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any

from tuneline.errors import ConfigError


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

    def put_dir(self, local: Path, prefix: str) -> list[str]:
        """Upload every file under ``local`` to ``prefix/``; returns the relative names."""
        names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        for name in names:
            self.put_file(local / name, f"{prefix}/{name}")
        return names


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root_uri = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        # Write a hidden temp file, then hard-link it into place: link() fails if the name exists,
        # and a reader never sees the object before its bytes are there.
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, target)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def read_with_token(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def replace_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        if token is None:
            return self.create_exclusive(key, data)
        target = self.path(key)
        with open(target.with_name(f".{target.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # serialises writers of this key on this host
            current = self.read_with_token(key)
            if current is None or current[1] != token:
                return False
            self.write_bytes(key, data)
            return True

    def list_keys(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def list_children(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        return sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) if base.is_dir() else []

    def put_file(self, local: Path, key: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)

    def get_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(key), local)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def local_dir(self, prefix: str) -> Path:
        return self.path(prefix)


def open_storage(root: str) -> Storage:
    """Open a storage root: a local path or ``s3://bucket/prefix``."""
    if root.startswith("s3://"):
        from tuneline.s3_storage import S3Storage

        return S3Storage.from_uri(root)
    if "://" in root:
        raise ConfigError(f"storage: unsupported storage root {root!r}; use a local path or s3://bucket/prefix")
    return LocalStorage(root)
