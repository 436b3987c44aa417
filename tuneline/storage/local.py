"""A storage root on the local filesystem (or a shared mount): files under a directory.

Reads and writes files below the root; every write is atomic (a temporary file, then a rename).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from tuneline.storage.base import Storage, check_key


def shareable(path: str) -> None:
    """The mode a plain ``open`` would give (0666 less the umask): mkstemp's 0600 would hide a shared
    registry folder from every other user."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def staged(target: Path, data: bytes) -> str:
    """``data`` in a hidden, fsynced, shareable temp file beside ``target``, ready to rename or link into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    shareable(tmp)
    return tmp


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
        os.replace(staged(target, data), target)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        # Write a hidden temp file, then hard-link it into place: link() fails if the name exists,
        # and a reader never sees the object before its bytes are there.
        target = self.path(key)
        tmp = staged(target, data)
        try:
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
        shareable(tmp)
        os.replace(tmp, target)

    def get_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(key), local)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def local_dir(self, prefix: str) -> Path:
        return self.path(prefix)
