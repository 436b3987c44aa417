"""Storage roots: where every stage reads and writes, addressed by key.

``open_storage(root)`` opens a local path (``tuneline.storage.local``) or ``s3://bucket/prefix``
(``tuneline.storage.s3``); both implement ``tuneline.storage.base.Storage``.
"""

from __future__ import annotations

import os

from tuneline.errors import ConfigError
from tuneline.storage.base import Storage, check_key
from tuneline.storage.local import LocalStorage

__all__ = ["DEFAULT_STORAGE", "LocalStorage", "Storage", "check_key", "open_storage", "storage_root_or_default"]

DEFAULT_STORAGE = "./.tuneline"


def storage_root_or_default(root: str | None = None) -> str:
    """``root`` if given, else ``$TUNELINE_STORAGE``, else ``./.tuneline``."""
    return root or os.environ.get("TUNELINE_STORAGE") or DEFAULT_STORAGE


def open_storage(root: str) -> Storage:
    """Open a storage root: a local path or ``s3://bucket/prefix``."""
    if root.startswith("s3://"):
        from tuneline.storage.s3 import S3Storage

        return S3Storage.from_uri(root)
    if "://" in root:
        raise ConfigError(f"storage: unsupported storage root {root!r}; use a local path or s3://bucket/prefix")
    return LocalStorage(root)
