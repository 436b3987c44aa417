"""A lease on a candidate: one writer of ``candidates/<key>/`` at a time, across runs, processes and machines.

Reads and writes ``candidates/<key>/lease.json`` (``{"owner", "beat", "ttl_s", "released"}``) only through
the storage's conditional writes (create-if-absent, and compare-and-swap on the object's change token:
a local file's hash, an S3 ETag), so it holds the same on a local folder and on S3.

- ``acquire``: create the lease if absent; take over a released one, or one that has not changed for
  ``ttl_s`` seconds as the waiter sees it (its holder stopped renewing: it crashed or was killed), by
  swapping on the token it read; otherwise wait. Staleness is judged on the waiter's own clock, so the
  clocks of different machines need not agree.
- while held, a heartbeat rewrites it every ``ttl_s / 4`` seconds. If that swap fails, another process
  took it over (this one was presumed dead): ``lost`` is set and the caller stops writing at once.
- ``release`` marks it released, so a waiter takes it without waiting out the ttl.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from tuneline.storage import Storage

TTL_S = 120.0  # a holder silent this long is presumed dead (renewed every 30 s)


class Lease:
    """A held lease; ``lost`` is set if another process takes it over."""

    def __init__(self, storage: Storage, key: str, owner: str, ttl_s: float):
        self.storage, self.key, self.owner, self.ttl_s = storage, key, owner, ttl_s
        self.beat, self.token = 0, None
        self.lost, self.stopped = threading.Event(), threading.Event()

    def body(self, released: bool = False) -> bytes:
        return json.dumps({"owner": self.owner, "beat": self.beat, "ttl_s": self.ttl_s, "released": released,
                           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()

    def swap(self, token: str | None, released: bool = False) -> bool:
        """Write the next beat if the lease still has ``token``; remember the new token."""
        self.beat += 1
        if not self.storage.replace_if_match(self.key, self.body(released), token):
            return False
        current = self.storage.read_with_token(self.key)
        mine = current is not None and parse(current[0]).get("owner") == self.owner
        self.token = current[1] if mine else None
        return mine

    def heartbeat(self) -> None:
        while not self.stopped.wait(self.ttl_s / 4):
            try:
                renewed = self.swap(self.token)
            except Exception:  # noqa: BLE001 - a storage outage: try again; past the ttl a waiter may take over
                continue
            if not renewed:
                self.lost.set()
                return

    def release(self) -> None:
        self.stopped.set()
        if self.token is not None and not self.lost.is_set():
            try:
                self.swap(self.token, released=True)
            except Exception:  # noqa: BLE001 - unreleased, it goes stale after the ttl
                pass


def parse(data: bytes) -> dict:
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


@contextmanager
def held(storage: Storage, key: str, log_line: Callable[[str], None], ttl_s: float = TTL_S,
         poll_s: float | None = None) -> Iterator[Lease]:
    """Wait for and hold the lease at ``key`` for the duration of the block."""
    lease = Lease(storage, key, f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}", ttl_s)
    acquire(lease, log_line, poll_s or min(5.0, ttl_s / 4))
    beating = threading.Thread(target=lease.heartbeat, name="lease-heartbeat", daemon=True)
    beating.start()
    try:
        yield lease
    finally:
        lease.release()
        beating.join(5)


def acquire(lease: Lease, log_line: Callable[[str], None], poll_s: float) -> None:
    seen: tuple[str, float] | None = None  # the token as first seen, and when (this process's clock)
    waiting = False
    while True:
        current = lease.storage.read_with_token(lease.key)
        if current is None:
            if lease.swap(None):
                return
            continue
        data, token = current
        record, now = parse(data), time.monotonic()
        if seen is None or seen[0] != token:
            seen = (token, now)
        ttl = float(record.get("ttl_s") or lease.ttl_s)
        if record.get("released") or not record.get("owner") or now - seen[1] > ttl:
            if lease.swap(token):
                if not record.get("released") and record.get("owner"):  # its holder stopped renewing it
                    log_line(f"took over {lease.storage.uri(lease.key)} from {record.get('owner', 'nobody')}")
                return
            continue
        if not waiting:
            waiting = True
            log_line(f"another run is training this candidate ({record['owner']} holds "
                     f"{lease.storage.uri(lease.key)}): waiting for it to finish or stop")
        time.sleep(poll_s)
