"""The S3 storage backend: the ``Storage`` interface over boto3.

Reads and writes objects under ``s3://<bucket>/<prefix>/<key>``; ``local_dir`` mirrors a
prefix into ``$TUNELINE_CACHE/s3/<bucket>/<prefix>/`` (default ``~/.cache/tuneline``).
Endpoint and credentials come only from the standard AWS variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``)
or boto3's default chain; nothing here stores, logs or prints a secret.

Semantics match ``LocalStorage``: a PUT is atomic, ``create_exclusive`` and
``replace_if_match`` are conditional writes (``If-None-Match: *`` / ``If-Match: <ETag>``),
downloads land under a temporary name and are renamed, so no reader sees half a file.
A missing bucket or denied access is a ``ConfigError`` naming the bucket.

Timeouts and the deadline: an endpoint that is down, black-holed or silent fails a storage
call within a bounded time instead of hanging. Each request waits at most ``CONNECT_TIMEOUT_S``
(5 s) for a connection and ``READ_TIMEOUT_S`` (15 s) for each reply (and each chunk of a body),
and is tried ``ATTEMPTS`` (3) times in botocore's "standard" retry mode, which sleeps at most
1 s, then 2 s between attempts. A managed download runs its GET up to ``STREAM_ATTEMPTS`` (2)
times (s3transfer's ``num_download_attempts``, for a stream broken mid-body), so the deadline
of one storage call, ``DEADLINE_S`` = ``worst_case_s()``, is::

    STREAM_ATTEMPTS * (ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + 1 + 2) = 2 * 63 = 126 s

(63 s for a call that is not a download). Botocore enforces it; nothing here loops.
``TUNELINE_S3_CONNECT_TIMEOUT_S``, ``TUNELINE_S3_READ_TIMEOUT_S`` and ``TUNELINE_S3_ATTEMPTS``
(else AWS's own ``AWS_MAX_ATTEMPTS``) override the defaults; a bad value is a ``ConfigError``
naming the variable. Not covered by the timeouts: DNS resolution, and a server that keeps
trickling bytes. An endpoint that cannot be reached or does not answer raises one
``S3Unreachable`` naming it (never its userinfo) and the time spent: a botocore
``EndpointConnectionError``, not a ``TunelineError``, so the stage retry policy retries it.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Collection, Iterator
from urllib.parse import urlsplit, urlunsplit

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError,
                                 ReadTimeoutError)
from s3transfer.exceptions import RetriesExceededError

from tuneline.errors import ConfigError, DataError
from tuneline.storage.base import Storage, check_key

MB = 1024 * 1024
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3 rules: 3-63 chars

CONNECT_TIMEOUT_S = 5     # a TCP (+TLS) handshake takes milliseconds; 5 s allows a slow VPN hop
READ_TIMEOUT_S = 15       # per reply and per chunk of a body (not per object): S3 answers in well under 1 s
ATTEMPTS = 3              # botocore "standard" retries (its default): throttling, 5xx, timeouts, dropped connections
BACKOFF_CAP_S = 20        # botocore standard mode sleeps rand(0, 1) * min(2 ** i, 20) s before retry i + 1
STREAM_ATTEMPTS = 2       # s3transfer re-runs a download's GET after a broken stream (boto3's default 5 would
                          # multiply the deadline: it also re-runs a GET whose botocore attempts all timed out)
ENV_CONNECT_TIMEOUT = "TUNELINE_S3_CONNECT_TIMEOUT_S"
ENV_READ_TIMEOUT = "TUNELINE_S3_READ_TIMEOUT_S"
ENV_ATTEMPTS = ("TUNELINE_S3_ATTEMPTS", "AWS_MAX_ATTEMPTS")  # the first one set wins
TRANSFER = TransferConfig(
    multipart_threshold=64 * MB,  # below this one PUT / one GET (configs, tokenizers, small adapters)
    multipart_chunksize=16 * MB,  # a 450 MB safetensors file -> 29 parts, retried one part at a time
    max_concurrency=8,            # parts (and files, in put_dir / local_dir) in flight at once
    num_download_attempts=STREAM_ATTEMPTS,
)  # io_chunksize stays at its 256 KB: 1 MB made downloads ~2x slower (SeaweedFS on localhost)
NO_ANSWER = (ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError, ConnectionClosedError)
DENIED_CODES = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                "InvalidToken", "ExpiredToken", "TokenRefreshRequired"}
MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}
LOST_RACE_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def parse_s3_uri(uri: str, label: str = "storage") -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix"); ConfigError naming ``label`` otherwise."""
    if not uri.startswith("s3://"):
        raise ConfigError(f"{label}: {uri!r} is not an s3:// URI (expected s3://bucket/prefix)")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not BUCKET_PATTERN.match(bucket):
        raise ConfigError(
            f"{label}: {uri!r} has no valid bucket name (3-63 characters: lowercase letters, digits, '.', '-'); "
            "expected s3://bucket/prefix"
        )
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise ConfigError(f"{label}: {uri!r} has an invalid prefix (empty, '.' or '..' parts)") from None
    return bucket, prefix


def cache_root() -> Path:
    return Path(os.environ.get("TUNELINE_CACHE") or "~/.cache/tuneline").expanduser()


def worst_case_s(connect_timeout_s: float = CONNECT_TIMEOUT_S, read_timeout_s: float = READ_TIMEOUT_S,
                 attempts: int = ATTEMPTS, stream_attempts: int = STREAM_ATTEMPTS) -> float:
    """The longest one storage call can take against an endpoint that never answers.

    Every attempt may spend its whole connect timeout and then its whole read timeout; botocore
    sleeps at most ``min(2 ** i, BACKOFF_CAP_S)`` s before retry ``i + 1``; a download repeats all
    of that ``stream_attempts`` times (pass 1 for any other call).
    """
    backoff = sum(min(2 ** i, BACKOFF_CAP_S) for i in range(attempts - 1))
    return stream_attempts * (attempts * (connect_timeout_s + read_timeout_s) + backoff)


DEADLINE_S = worst_case_s()  # 126 s with the defaults


def env_timeout_s(name: str, default: float) -> float:
    """Seconds from the variable ``name`` (``default`` when unset); ConfigError naming it unless a number > 0."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={raw!r} is not a timeout: expected a number of seconds > 0 (default {default:g})")
    return value


def env_attempts(default: int = ATTEMPTS) -> int:
    """Attempts per S3 request from TUNELINE_S3_ATTEMPTS, else AWS_MAX_ATTEMPTS, else ``default``."""
    for name in ENV_ATTEMPTS:
        raw = os.environ.get(name, "").strip()
        if raw:
            if not (raw.isdigit() and int(raw) >= 1):
                raise ConfigError(f"{name}={raw!r} is not a number of attempts: expected a whole number >= 1 "
                                  f"(default {default})")
            return int(raw)
    return default


def public_endpoint(url: str | None) -> str:
    """The endpoint URL fit for a message: scheme, host, port and path; never userinfo, query or fragment."""
    if not url:
        return "(no endpoint)"
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class S3Unreachable(EndpointConnectionError):
    """The S3 endpoint could not be reached, or did not answer within the timeouts.

    An outage, not bad input: a botocore ``EndpointConnectionError`` (so callers catching
    botocore's connection errors still do) and never a ``TunelineError``, so stages retry it.
    """

    fmt = "{message}"


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix``; keys are the same relative paths ``LocalStorage`` uses."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        label: str = "storage",
        max_attempts: int | None = None,
        connect_timeout_s: float | None = None,
        read_timeout_s: float | None = None,
        transfer: TransferConfig = TRANSFER,
    ):
        """``max_attempts`` / ``connect_timeout_s`` / ``read_timeout_s``: None takes the TUNELINE_S3_* variable,
        else the module default. ``transfer``: its ``num_download_attempts`` multiplies a download's deadline."""
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.label = label  # the config key named in error messages
        self.root_uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.transfer = transfer
        self.attempts = max_attempts or env_attempts()
        self.connect_timeout_s = connect_timeout_s or env_timeout_s(ENV_CONNECT_TIMEOUT, CONNECT_TIMEOUT_S)
        self.read_timeout_s = read_timeout_s or env_timeout_s(ENV_READ_TIMEOUT, READ_TIMEOUT_S)
        config = Config(
            # total_max_attempts counts the first try; Config's "max_attempts" would add one more (6 for 5)
            retries={"mode": "standard", "total_max_attempts": self.attempts},
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            max_pool_connections=max(10, transfer.max_request_concurrency + 2),
        )
        # Endpoint (AWS_ENDPOINT_URL) and credentials are read by boto3 itself; only
        # AWS_REGION needs passing (botocore reads AWS_DEFAULT_REGION on its own).
        self.client = boto3.session.Session().client("s3", region_name=os.environ.get("AWS_REGION") or None,
                                                     config=config)

    def arrow_filesystem(self):
        """This root's S3 as a ``pyarrow.fs.S3FileSystem`` for readers elsewhere (Ray workers): the endpoint and
        region of this process, the credentials of the reader's own environment (none are put in it)."""
        from pyarrow import fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return fs.S3FileSystem(**({"endpoint_override": endpoint} if endpoint else {}),
                               **({"region": region} if region else {}))

    @classmethod
    def from_uri(cls, uri: str, **options) -> "S3Storage":
        bucket, prefix = parse_s3_uri(uri, options.get("label", "storage"))
        return cls(bucket, prefix, **options)

    def __repr__(self) -> str:
        return f"S3Storage({self.root_uri!r})"

    # -- keys and errors -----------------------------------------------------
    def object_key(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _object_prefix(self, prefix: str) -> str:
        """The S3 prefix for everything under ``prefix/`` ('' or the root itself when prefix is '')."""
        prefix = prefix.strip("/")
        if not prefix:
            return f"{self.prefix}/" if self.prefix else ""
        return self.object_key(prefix) + "/"

    def _relative(self, object_key: str) -> str:
        return object_key[len(self.prefix) + 1:] if self.prefix else object_key

    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Turn 'no such bucket' and 'access denied' into errors a user can act on.

        Missing keys become FileNotFoundError (as with LocalStorage). An endpoint that cannot be
        reached or does not answer becomes one S3Unreachable naming it; anything else propagates
        unchanged. Both are outages, retried upstream.
        """
        started = time.monotonic()
        try:
            yield
        except S3Unreachable:
            raise
        except RetriesExceededError as err:  # s3transfer wraps a download's last network error
            if isinstance(err.last_exception, NO_ANSWER):
                raise self._unreachable(err.last_exception, started) from err.last_exception
            raise err.last_exception from None
        except NO_ANSWER as err:
            raise self._unreachable(err, started) from err
        except ClientError as err:
            code = self._code(err)
            if code == "NoSuchBucket":
                raise ConfigError(
                    f"{self.label}: S3 bucket {self.bucket!r} does not exist{self._where()}; "
                    "create it or fix the s3:// URI"
                ) from None
            if code in DENIED_CODES:
                raise ConfigError(
                    f"{self.label}: access to S3 bucket {self.bucket!r} was denied ({code}){self._where()}; "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the default credential chain) "
                    "and the bucket policy"
                ) from None
            if key is not None and code in MISSING_KEY_CODES:
                raise FileNotFoundError(f"{self.uri(key)} does not exist") from None
            raise

    def _where(self) -> str:
        endpoint = self.client.meta.endpoint_url
        return f" at {public_endpoint(endpoint)}" if endpoint and "amazonaws.com" not in endpoint else ""

    def _unreachable(self, err: Exception, started: float) -> S3Unreachable:
        """One message for a dead, black-holed or silent endpoint: which one, what failed, how long it took."""
        endpoint = public_endpoint(self.client.meta.endpoint_url)
        if isinstance(err, ReadTimeoutError):
            what = f"did not answer within {self.read_timeout_s:g} s (TUNELINE_S3_READ_TIMEOUT_S)"
        elif isinstance(err, ConnectTimeoutError):
            what = f"could not be reached: no connection within {self.connect_timeout_s:g} s"
        elif isinstance(err, ConnectionClosedError):
            what = "closed the connection without answering"
        else:
            reason = re.search(r"\[Errno [^\]]*\][^)]*", str(err.kwargs.get("error", "")))
            what = f"could not be reached ({reason.group(0).strip() if reason else 'connection failed'})"
        message = (f"{self.label}: the S3 endpoint {endpoint} {what}; tried {self.attempts} times "
                   f"(TUNELINE_S3_ATTEMPTS), gave up after {time.monotonic() - started:.1f} s. "
                   "Check AWS_ENDPOINT_URL and that the server is up and reachable from here")
        return S3Unreachable(message=message, endpoint_url=endpoint)

    @staticmethod
    def _code(err: ClientError) -> str:
        return str(err.response.get("Error", {}).get("Code", ""))

    # -- single objects ------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def read_bytes(self, key: str) -> bytes:
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._errors():  # one PUT: atomic, readers see the old object or the new one
            self.client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, IfNoneMatch="*")

    def read_with_token(self, key: str) -> tuple[bytes, str] | None:
        try:
            with self._errors(key):
                response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
                return response["Body"].read(), response["ETag"]
        except FileNotFoundError:
            return None

    def replace_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        return self._conditional_put(key, data, **condition)

    def _conditional_put(self, key: str, data: bytes, **condition: str) -> bool:
        """A PUT guarded by a precondition; False when another writer got there first.

        412 PreconditionFailed: the condition no longer holds. 409 ConditionalRequestConflict:
        a concurrent conditional write to the key is in flight; that writer wins, we lost the race.
        """
        try:
            with self._errors():
                self.client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data, **condition)
            return True
        except ClientError as err:
            if self._code(err) in LOST_RACE_CODES or err.response.get("ResponseMetadata", {}).get(
                    "HTTPStatusCode") in (409, 412):
                return False
            raise

    # -- listing -------------------------------------------------------------
    def _objects(self, prefix: str, **params) -> Iterator[dict]:
        """Pages of ListObjectsV2 under ``prefix/``."""
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors():
            yield from paginator.paginate(Bucket=self.bucket, Prefix=self._object_prefix(prefix), **params)

    def _listed(self, prefix: str) -> list[dict]:
        """Every object under ``prefix/`` (folder markers skipped), with its relative key."""
        found = []
        for page in self._objects(prefix):
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):
                    found.append({**item, "RelativeKey": self._relative(item["Key"])})
        return found

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(item["RelativeKey"] for item in self._listed(prefix))

    def list_children(self, prefix: str) -> list[str]:
        base = self._object_prefix(prefix)
        names = set()
        for page in self._objects(prefix, Delimiter="/"):
            names.update(p["Prefix"][len(base):].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(item["Key"][len(base):] for item in page.get("Contents", []))
        names.discard("")
        return sorted(names)

    def delete_prefix(self, prefix: str) -> None:
        check_key(prefix)  # as LocalStorage: never '' (the whole root) or an escaping path
        keys = [item["Key"] for page in self._objects(prefix) for item in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            with self._errors():
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise OSError(f"{self.root_uri}: could not delete {len(response['Errors'])} objects under "
                              f"{prefix!r} (first: {first.get('Key')}: {first.get('Code')} {first.get('Message')})")

    # -- files ---------------------------------------------------------------
    @contextmanager
    def _transfers(self) -> Iterator:
        """A boto3 managed-transfer manager: multipart, parallel parts, retried reads."""
        with create_transfer_manager(self.client, self.transfer) as manager:
            yield manager

    def put_file(self, local: Path, key: str) -> None:
        local = Path(local)
        if not local.is_file():
            raise FileNotFoundError(f"{local} does not exist or is not a file")
        with self._errors(), self._transfers() as manager:
            manager.upload(str(local), self.bucket, self.object_key(key)).result()

    def put_dir(self, local: Path, prefix: str, skip: Collection[str] = ()) -> list[str]:
        """Upload every file under ``local`` (but those in ``skip``) to ``prefix/``, several files in flight at once."""
        local = Path(local)
        names = sorted(n for n in (p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
                       if n not in skip)
        with self._errors(), self._transfers() as manager:
            futures = [manager.upload(str(local / name), self.bucket, self.object_key(f"{prefix}/{name}"))
                       for name in names]
            for future in futures:
                future.result()
        return names

    def get_file(self, key: str, local: Path) -> None:
        """Download to a temporary name beside ``local``, then rename: never a half file at ``local``."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with self._errors(key), self._transfers() as manager:
                manager.download(self.bucket, self.object_key(key), str(partial)).result()
            os.replace(partial, local)
        finally:
            partial.unlink(missing_ok=True)

    def local_dir(self, prefix: str) -> Path:
        """Mirror ``prefix/`` into the local cache and return that folder.

        A cached file is reused when its size and ETag (kept beside the cache, under
        ``s3/.etags/``) match the object's, so a rewritten prefix is never served stale; files
        no longer under the prefix are removed. Downloads run concurrently and land under a
        temporary name outside the folder (which holds the prefix's files only), then are renamed.
        """
        folder = self.cache_path(self._object_prefix(prefix).rstrip("/"))
        self._mirror(folder, self._object_prefix(prefix), self._listed(prefix))
        return folder

    def cache_path(self, object_key: str) -> Path:
        """Where the local cache keeps an object (or a prefix): ``<cache>/s3/<bucket>/<object key>``."""
        return cache_root() / "s3" / self.bucket / object_key

    def _mirror(self, folder: Path, base: str, objects: list[dict]) -> None:
        """Make ``folder`` hold exactly ``objects`` (their keys relative to ``base``)."""
        wanted: dict[Path, dict] = {}
        for item in objects:
            try:
                wanted[folder / check_key(item["Key"][len(base):])] = item
            except ValueError:
                continue  # a key like 'a//b' cannot be a file in a folder
        folder.mkdir(parents=True, exist_ok=True)
        self._download_changed(wanted)
        _remove_unlisted(folder, set(wanted))

    def _download_changed(self, wanted: dict[Path, dict]) -> None:
        """Download each listed object (Key, Size, ETag) to its path unless the cached copy matches."""
        partials = cache_root() / "s3" / ".partial"
        etags = cache_root() / "s3" / ".etags" / self.bucket
        partials.mkdir(parents=True, exist_ok=True)
        downloads = [(path, partials / f"{uuid.uuid4().hex}.part", item) for path, item in wanted.items()
                     if not _is_cached(path, item, etags / item["Key"])]
        try:
            with self._errors(), self._transfers() as manager:
                futures = [manager.download(self.bucket, item["Key"], str(partial)) for _, partial, item in downloads]
                for future in futures:
                    future.result()
            for path, partial, item in downloads:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partial, path)
                _mkparents(etags / item["Key"]).write_text(item["ETag"])
        finally:
            for _, partial, _ in downloads:
                partial.unlink(missing_ok=True)

    def _head(self, key: str) -> dict | None:
        """The object's Key (in the bucket), Size and ETag, or None when absent."""
        try:
            with self._errors():
                head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as err:
            if self._code(err) in MISSING_KEY_CODES:
                return None
            raise
        return {"Key": self.object_key(key), "Size": head["ContentLength"], "ETag": head["ETag"]}


def fetch_source(uri: str, suffixes: tuple[str, ...] = (), label: str = "data.source") -> Path:
    """An ``s3://`` data source in the local cache, file names and sub-folders kept.

    ``s3://bucket/path/file.csv`` -> the cached file; ``s3://bucket/prefix/`` -> the cached folder
    with every object under the prefix whose name ends with one of ``suffixes`` (all when empty).
    Raises DataError (naming the setting ``label``) when nothing is there.
    """
    bucket, key = parse_s3_uri(uri, label)
    storage = S3Storage(bucket, label=label)
    single = storage._head(key) if key and not uri.endswith("/") else None
    if single:
        storage._download_changed({storage.cache_path(key): single})
        return storage.cache_path(key)
    objects = [o for o in storage._listed(key) if not suffixes or o["Key"].lower().endswith(suffixes)]
    if not objects:
        wanted = f"{', '.join(suffixes)} files" if suffixes else "objects"
        raise DataError(f"{label}: {uri} does not exist or holds no {wanted}")
    folder = storage.cache_path(key)
    storage._mirror(folder, f"{key}/" if key else "", objects)
    return folder


def _is_cached(path: Path, item: dict, etag_file: Path) -> bool:
    try:
        return path.stat().st_size == item["Size"] and etag_file.read_text() == item["ETag"]
    except (FileNotFoundError, NotADirectoryError):
        return False


def _remove_unlisted(folder: Path, wanted: set[Path]) -> None:
    """Delete cached files that are no longer objects under the prefix (the folder mirrors it)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink(missing_ok=True)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _mkparents(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
