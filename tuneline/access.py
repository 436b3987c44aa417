"""What a worker lets a run read and write: the allow-list in ``$TUNELINE_ALLOWED_ROOTS``.

Reads the environment variable ``TUNELINE_ALLOWED_ROOTS`` and, for local paths, only the file
system's symbolic links and folders (``realpath``, ``is_dir``: no file is opened); writes nothing.
The flows call ``check_allowed_roots`` first, before any stage reads data or a model, so a
deployment form cannot point ``data.source`` at ``/etc/passwd`` and get it back in a report.

The variable is a list of entries separated by commas or whitespace; unset, or without any
entry: no restriction (a laptop run is unchanged). With it set, every setting that names data, storage or a
base model must lie under one entry:

- ``/data/ml`` (absolute, ``~`` expanded): local paths under this folder. Both sides are compared
  after resolving symbolic links and ``..`` (realpath), so a link out of the folder is refused.
- ``s3://bucket`` or ``s3://bucket/prefix/``: that bucket, or keys under that prefix, on path-segment
  boundaries (``s3://data`` does not allow ``s3://data-secret``, ``s3://b/team`` not ``s3://b/team-x``).
- ``hub:`` any Hugging Face Hub id; ``hub:org/`` (or ``hub:org``) that organisation's repositories;
  ``hub:org/name`` one repository. Compared case-sensitively.

Which settings: ``data.source``, ``storage`` (the effective root: the config's, else
``$TUNELINE_STORAGE``, else ``./.tuneline``) and ``model.base``. A base that is a ``registry:``
reference reads the run's own storage, so it is allowed when the storage is; the embedded models
(``all-MiniLM-L6-v2``, ``SmolLM2-135M-Instruct``) ship inside installed packages and are always allowed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneline.errors import ConfigError
from tuneline.models.base import EMBEDDED, EMBEDDED_GGUF, HUB_ID, REGISTRY_PREFIX

if TYPE_CHECKING:
    from tuneline.config import FinetuneConfig

ALLOWED_ROOTS = "TUNELINE_ALLOWED_ROOTS"
HUB_PREFIX = "hub:"
S3_PREFIX = "s3://"


@dataclass(frozen=True)
class AllowedRoots:
    """The parsed variable: real folder paths, S3 (bucket, *prefix) and Hub (org[, name]) segments."""

    text: str  # as set, for error messages
    folders: tuple[str, ...] = ()
    s3: tuple[tuple[str, ...], ...] = ()
    hub: tuple[tuple[str, ...], ...] = ()

    def allows_path(self, path: str) -> bool:
        real = real_path(path)
        return any(real == folder or real.startswith(folder.rstrip("/") + "/") for folder in self.folders)

    def allows_s3(self, uri: str) -> bool:
        parts = s3_segments(uri)
        return parts is not None and any(parts[: len(entry)] == entry for entry in self.s3)

    def allows_hub(self, repo: str) -> bool:
        parts = tuple(repo.split("/"))
        return any(parts[: len(entry)] == entry for entry in self.hub)

    def allows_location(self, value: str) -> bool:
        """A data source or storage root: an s3:// URI or a local path."""
        return self.allows_s3(value) if value.startswith(S3_PREFIX) else self.allows_path(value)


def real_path(path: str) -> str:
    """``path`` with ``~``, symbolic links and ``..`` resolved (parts that do not exist yet are kept)."""
    return os.path.realpath(os.path.expanduser(path))


def s3_segments(uri: str) -> tuple[str, ...] | None:
    """``s3://bucket/a/b/`` -> ("bucket", "a", "b"); None for '.' or '..' parts (never under an entry)."""
    parts = tuple(uri[len(S3_PREFIX):].removesuffix("/").split("/"))
    return None if any(part in (".", "..") for part in parts) else parts


def allowed_roots(environ=os.environ) -> AllowedRoots | None:
    """The worker's allow-list, or None when ``TUNELINE_ALLOWED_ROOTS`` is unset or holds no entry (no restriction)."""
    text = environ.get(ALLOWED_ROOTS, "").strip()
    entries = [entry for entry in re.split(r"[,\s]+", text) if entry]
    if not entries:
        return None
    folders, s3, hub = [], [], []
    for entry in entries:
        if entry.startswith(HUB_PREFIX):
            name = entry[len(HUB_PREFIX):].strip("/")
            hub.append(tuple(name.split("/")) if name else ())
        elif entry.startswith(S3_PREFIX) and (parts := s3_segments(entry)) and parts[0]:
            s3.append(parts)
        elif os.path.isabs(os.path.expanduser(entry)):
            folders.append(real_path(entry))
        else:
            raise ConfigError(f"{ALLOWED_ROOTS}: entry {entry!r} is not an absolute folder, an s3://bucket[/prefix/] "
                              f"or a hub:[org/[name]] entry ({ALLOWED_ROOTS}={text})")
    return AllowedRoots(text, tuple(folders), tuple(s3), tuple(hub))


def base_kind(base: str, revision: str | None) -> str:
    """How ``tuneline.models.base.resolve`` reads ``model.base``: registry, s3, embedded, path or hub."""
    if base.startswith(REGISTRY_PREFIX):
        return "registry"
    if base.startswith(S3_PREFIX):
        return "s3"
    if (base in EMBEDDED_GGUF and not revision) or (base in EMBEDDED and not HUB_ID.match(base)):
        return "embedded"
    if Path(base).expanduser().is_dir() or not HUB_ID.match(base):
        return "path"  # a folder, or nothing resolve accepts (checked as a path all the same)
    return "hub"


def check_allowed_roots(config: FinetuneConfig) -> None:
    """Raise a ConfigError naming the setting, its value and the variable when one lies outside the list."""
    roots = allowed_roots()
    if roots is None:
        return
    storage = config.storage_root()
    _require(roots.allows_location(config.data.source), "data.source", config.data.source, roots)
    _require(roots.allows_location(storage), _storage_setting(config), storage, roots)
    base, kind = config.model.base, base_kind(config.model.base, config.model.revision)
    hint = " (a Hugging Face Hub id: hub: entries allow it)" if kind == "hub" else ""
    _require(_base_allowed(roots, base, kind, storage), "model.base", base, roots, hint)


def check_allowed_locations(**settings: str) -> None:
    """The same check for settings given outside a config (``data=..., storage=...``: local paths or s3://)."""
    roots = allowed_roots()
    if roots is None:
        return
    for setting, value in settings.items():
        _require(roots.allows_location(value), setting, value, roots)


def _base_allowed(roots: AllowedRoots, base: str, kind: str, storage: str) -> bool:
    if kind == "registry":  # the run's own storage root holds the registry
        return roots.allows_location(storage)
    if kind == "embedded":  # inside an installed package: nothing of the worker's to leak
        return True
    if kind == "hub":
        return roots.allows_hub(base)
    return roots.allows_s3(base) if kind == "s3" else roots.allows_path(base)


def _storage_setting(config: FinetuneConfig) -> str:
    if config.storage:
        return "storage"
    return "storage (from $TUNELINE_STORAGE)" if os.environ.get("TUNELINE_STORAGE") else "storage (the default)"


def _require(allowed: bool, setting: str, value: str, roots: AllowedRoots, hint: str = "") -> None:
    if allowed:
        return
    real = value if "://" in value or hint else real_path(value)
    resolved = f" (it resolves to {real!r})" if real != value else ""
    raise ConfigError(f"{setting} {value!r}{resolved}{hint} is outside the roots this worker accepts "
                      f"({ALLOWED_ROOTS}={roots.text})")
