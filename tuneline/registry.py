"""The model registry: immutable numbered versions in the storage root.

Reads and writes under ``registry/<name>/``:
  versions/<NNNNNN>/claim.json     the number, claimed with a create-if-absent write
  versions/<NNNNNN>/model/...      the model files (a pipeline version: also README.md, its model card)
  versions/<NNNNNN>/manifest.json  written LAST: no manifest, no version
  versions/<NNNNNN>/evaluations/<fp16>.json  the version scored on other labelled data, once per dataset
  aliases/<alias>.json             pointer to a version
Both storage backends give the same semantics.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from tuneline import keys
from tuneline.errors import RegistryError
from tuneline.fingerprints import files_fingerprint, folder_files, sha256_file
from tuneline.keys import version_dir
from tuneline.storage import Storage, check_key

ALIAS_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # always fullmatch: "$" accepts a trailing newline
MAX_CAS_ATTEMPTS = 50
REF_PATTERN = re.compile(r"(?P<name>[a-z0-9][a-z0-9._-]{0,63})(?::(?P<version>\d{1,9})|@(?P<alias>[A-Za-z0-9._-]{1,64}))?")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def alias_key(name: str, alias: str) -> str:
    if not ALIAS_PATTERN.fullmatch(alias):
        raise RegistryError(f"alias {alias!r}: use letters, digits, '.', '_' or '-'")
    return keys.alias_pointer(name, alias)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CARD = "README.md"  # the model card, in the Hugging Face format (tuneline.stages.card)


def check_model_folder(folder: Path) -> None:
    """A registrable model folder: config.json (or a PEFT adapter_config.json) plus safetensors weights,
    and no pickled files."""
    if not folder.is_dir():
        raise RegistryError(f"{folder}: not a folder")
    links = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink())
    if links:  # a link could carry any file the process can read (a secret) into the registry
        raise RegistryError(f"{folder}: holds symbolic links {links[:5]}; copy the files themselves "
                            "(cp -rL) and push that folder")
    pickles = sorted(p.name for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise RegistryError(f"{folder}: holds pickled files {pickles}; only safetensors weights are accepted "
                            "(save with save_pretrained(..., safe_serialization=True))")
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise RegistryError(f"{folder}: no config.json or adapter_config.json; expected a save_pretrained folder")
    if not list(folder.rglob("*.safetensors")):
        raise RegistryError(f"{folder}: no .safetensors weights")


class Registry:
    def __init__(self, storage: Storage):
        self.storage = storage

    # -- reading -----------------------------------------------------------
    def names(self) -> list[str]:
        return [n for n in self.storage.list_children("registry") if self.versions(n)]

    def versions(self, name: str) -> list[int]:
        """Complete versions only: those whose manifest exists."""
        found = []
        for child in self.storage.list_children(keys.model_versions(name)):
            if child.isdigit() and self.storage.exists(f"{version_dir(name, int(child))}/manifest.json"):
                found.append(int(child))
        return sorted(found)

    def manifest(self, name: str, version: int) -> dict:
        key = f"{version_dir(name, version)}/manifest.json"
        if not self.storage.exists(key):
            raise RegistryError(f"model {name}:{version} does not exist (versions: {self.versions(name) or 'none'})")
        return self.storage.read_json(key)

    def alias(self, name: str, alias: str) -> dict | None:
        """The alias pointer ``{version, updated_at, by, history: [...]}``, or None."""
        current = self.storage.read_with_token(alias_key(name, alias))
        return json.loads(current[0]) if current else None

    def aliased_manifest(self, name: str, alias: str) -> dict | None:
        """The manifest of the version ``alias`` points at (its ``version`` included), or None."""
        pointer = self.alias(name, alias)
        if pointer is None:
            return None
        version = int(pointer["version"])
        return {**self.manifest(name, version), "version": version}

    def aliases(self, name: str) -> dict[str, int]:
        found = {}
        for child in self.storage.list_children(keys.model_aliases(name)):
            if child.endswith(".json"):
                pointer = self.alias(name, child[: -len(".json")])
                if pointer:
                    found[child[: -len(".json")]] = int(pointer["version"])
        return found

    def resolve(self, ref: str) -> tuple[str, int]:
        """``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` -> (name, version); NAME alone is the latest."""
        match = REF_PATTERN.fullmatch(ref)
        if not match:
            raise RegistryError(f"model reference {ref!r}: expected NAME, NAME:VERSION or NAME@ALIAS")
        name = match["name"]
        if match["alias"]:
            pointer = self.alias(name, match["alias"])
            if pointer is None:
                raise RegistryError(f"model {name} has no alias {match['alias']!r}")
            return name, int(pointer["version"])
        if match["version"]:
            version = int(match["version"])
            self.manifest(name, version)
            return name, version
        versions = self.versions(name)
        if not versions:
            raise RegistryError(f"model {name!r} has no registered versions")
        return name, versions[-1]

    def evaluations(self, name: str, version: int) -> list[dict]:
        """A version's scores on other labelled data (``tuneline evaluate``), oldest first."""
        prefix = keys.version_evaluations(name, version)
        found = [self.storage.read_json(f"{prefix}/{child}") for child in self.storage.list_children(prefix)
                 if child.endswith(".json")]
        return sorted(found, key=lambda record: record.get("evaluated_at", ""))

    def evaluation(self, name: str, version: int, dataset_fingerprint: str) -> dict | None:
        """The stored score of a version on one dataset, or None."""
        key = keys.version_evaluation(name, version, dataset_fingerprint)
        return self.storage.read_json(key) if self.storage.exists(key) else None

    def find_version(self, name: str, model_fingerprint: str) -> int | None:
        for version in reversed(self.versions(name)):
            if self.manifest(name, version).get("model_fingerprint") == model_fingerprint:
                return version
        return None

    # -- writing -----------------------------------------------------------
    def _claim(self, name: str, identity: str, model_fingerprint: str) -> int:
        """Claim the next free number; reuse a claim of the same ``identity`` left by a crashed attempt."""
        prefix = keys.model_versions(name)
        taken = [int(c) for c in self.storage.list_children(prefix) if c.isdigit()]
        for version in taken:
            claim_key = f"{version_dir(name, version)}/claim.json"
            if (not self.storage.exists(f"{version_dir(name, version)}/manifest.json")
                    and self.storage.exists(claim_key)
                    and self.storage.read_json(claim_key).get("identity") == identity):
                return version
        version = max(taken, default=0) + 1
        claim = {"identity": identity, "model_fingerprint": model_fingerprint, "claimed_at": now_iso(),
                 "pid": os.getpid()}
        while not self.storage.create_exclusive(f"{version_dir(name, version)}/claim.json",
                                                json.dumps(claim).encode()):
            version += 1
        return version

    def register(self, name: str, model_dir: Path, manifest_fields: dict, idempotent: bool = True,
                 card: Callable[[int], str] | None = None) -> dict:
        """Upload a model folder as a new immutable version; the manifest goes last.

        ``idempotent`` (the pipeline): identical files return the existing version, and a retry
        after a crash completes the number its first attempt claimed. Otherwise (``models push``)
        every call is a new version, even of the same files.

        ``card(version)``: the text of the version's model card, written as ``README.md`` in place of
        any README the folder has (PEFT writes a template). It is listed in ``files`` with its sha256
        like every file, but it is not part of ``model_fingerprint``: that is the model's identity (weights,
        config, tokenizer), and a card describes one registration (its gate decision, the champion it
        beat), so the same model registered again returns its existing version with the card written then.
        The card is written once per version (create-if-absent): a retry lists the one already there.
        """
        check_model_folder(model_dir)
        files = folder_files(model_dir)
        if card is not None:
            files.pop(CARD, None)
        fingerprint = files_fingerprint(files)
        existing = self.find_version(name, fingerprint) if idempotent else None
        if existing is not None:
            return {**self.manifest(name, existing), "existing": True}
        version = self._claim(name, fingerprint if idempotent else uuid.uuid4().hex, fingerprint)
        prefix = version_dir(name, version)
        self.storage.put_dir(model_dir, f"{prefix}/model", skip={CARD} if card else ())  # concurrent on S3
        if card is not None:
            files[CARD] = self._write_card(f"{prefix}/model/{CARD}", card(version))
        manifest = {
            **manifest_fields,
            "name": name,
            "version": version,
            "uri": self.storage.uri(f"{prefix}/model"),
            "model_fingerprint": fingerprint,
            "files": files,
            "registered_at": now_iso(),
        }
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        if not self.storage.create_exclusive(f"{prefix}/manifest.json", body):  # versions are immutable
            written = self.manifest(name, version)  # a concurrent retry of the same claim finished first
            if written["model_fingerprint"] != fingerprint:
                raise RegistryError(f"{name}:{version} was completed with other files meanwhile; register again")
            return {**written, "existing": True}
        return {**manifest, "existing": False}

    def add_evaluation(self, name: str, version: int, record: dict) -> tuple[dict, bool]:
        """Store a version's score on one dataset (``record["dataset_fingerprint"]``) beside it, once: a
        create-if-absent write, so the first result stays and the manifest is never rewritten.
        Returns (the stored record, whether this call wrote it)."""
        self.manifest(name, version)  # the version must exist
        key = keys.version_evaluation(name, version, record["dataset_fingerprint"])
        if self.storage.create_exclusive(key, json.dumps(record, indent=2, sort_keys=True, default=str).encode()):
            return record, True
        return self.storage.read_json(key), False

    def _write_card(self, key: str, text: str) -> dict:
        """Write the card once; an earlier attempt's card stays (a concurrent retry must not replace the bytes
        the first manifest lists). Returns its ``files`` entry."""
        data = text.encode()
        if not self.storage.create_exclusive(key, data):
            data = self.storage.read_bytes(key)
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    def promote(self, name: str, version: int, alias: str, by: str | None = None,
                expected_version: int | None | str = "any", note: dict | None = None) -> dict:
        """Point ``alias`` at ``version`` with compare-and-swap; every move is kept in the pointer's history.

        With ``expected_version`` (an int, or None for "no alias yet") the move happens only if the
        alias still points there, so a gate decision made against a champion is never applied
        after someone else moved the alias; returns ``{"moved": False, ...}`` in that case.
        ``note``: more facts for the move's history entry (a person's approval: who, when, why).
        """
        self.manifest(name, version)  # the version must exist
        key = alias_key(name, alias)
        for _ in range(MAX_CAS_ATTEMPTS):
            current = self.storage.read_with_token(key)
            pointer = json.loads(current[0]) if current else {"history": []}
            previous = pointer.get("version")
            if previous == version:
                return {"moved": False, "alias": alias, "version": version, "reason": f"already at {alias}"}
            if expected_version != "any" and previous != expected_version:
                return {"moved": False, "alias": alias, "version": previous,
                        "reason": f"alias {alias!r} moved to {previous} since it was read ({expected_version})"}
            move = {**(note or {}), "from": previous, "to": version, "at": now_iso(), "by": by}
            updated = {"version": version, "updated_at": move["at"], "by": by,
                       "history": [*pointer.get("history", []), move]}
            if self.storage.replace_if_match(key, json.dumps(updated, indent=2).encode(),
                                             current[1] if current else None):
                return {"moved": True, "alias": alias, "version": version, "previous": previous}
        raise RegistryError(f"alias {name}@{alias}: gave up after {MAX_CAS_ATTEMPTS} concurrent updates")

    def pull(self, ref: str, dest: Path) -> Path:
        """Download a version to ``dest`` and verify every file's sha256; nothing is left on failure."""
        name, version = self.resolve(ref)
        manifest = self.manifest(name, version)
        dest = Path(dest).expanduser().resolve()
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise RegistryError(f"pull destination {dest} exists and is not empty")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            for relative, expected in manifest["files"].items():
                try:
                    check_key(relative)
                except ValueError:
                    raise RegistryError(f"{name}:{version}: manifest lists an unsafe path {relative!r}") from None
                local = staging / relative
                self.storage.get_file(f"{version_dir(name, version)}/model/{relative}", local)
                actual = sha256_file(local)
                if actual != expected["sha256"]:
                    raise RegistryError(
                        f"{name}:{version}: {relative} fails its checksum (expected {expected['sha256'][:12]}..., "
                        f"got {actual[:12]}...); the stored object was altered or damaged"
                    )
            if dest.exists():
                dest.rmdir()
            staging.rename(dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return dest
