"""A real Prefect server and process worker on loopback, for the e2e tests and ``make serve``.

Starts ``prefect server start`` (SQLite and PREFECT_HOME in ``home``) and ``prefect worker
start --pool gpu``, each in its own process group; deploys ``deployments/prefect.yaml`` from the
repo root. The library (``tuneline/``) never imports this.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from scripts.s3_service import free_ports

REPO = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))
PREFECT_FILE = "deployments/prefect.yaml"


class PrefectStack:
    """One Prefect server (UI and API at ``url``) and, once ``start_worker`` ran, one process worker."""

    def __init__(self, home: str | Path, port: int | None = None, extra_env: dict[str, str] | None = None):
        self.home = Path(home).resolve()
        self.port = port or free_ports(1)[0]
        self.extra_env = dict(extra_env or {})
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def env(self) -> dict[str, str]:
        """Environment for every prefect command of this stack (and the flow runs its worker starts)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "2",     # pick up scheduled runs quickly
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "10",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "PWD": str(REPO),  # deployments/prefect.yaml's pull step: {{ $PWD }} = the repo root
        })
        env.update(self.extra_env)
        return env

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.home / log_name, "ab")
        try:
            return subprocess.Popen(args, cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            log.close()

    def start(self, timeout_s: float = 180) -> "PrefectStack":
        self.home.mkdir(parents=True, exist_ok=True)
        self.server = self._spawn([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                                  "server.log")
        deadline = time.monotonic() + timeout_s
        while True:
            if self.server.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.server.returncode}; see {self.home / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"prefect server not healthy in {timeout_s}s; see {self.home / 'server.log'}")
            time.sleep(0.3)

    def command(self, command: list[str], check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """Any command against this server (its environment), from the repo root."""
        done = subprocess.run(command, cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout_s)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A prefect CLI command against this server."""
        return self.command([PREFECT, *args], check=check)

    def setup(self, *args: str) -> subprocess.CompletedProcess:
        """infra/setup_prefect.py: the gpu pool, concurrency limits, the failure alert."""
        return self.command([sys.executable, str(REPO / "infra" / "setup_prefect.py"), *args])

    def deploy(self) -> subprocess.CompletedProcess:
        return self.run("--no-prompt", "deploy", "--all", "--prefect-file", PREFECT_FILE)

    def start_worker(self, pool: str = "gpu") -> subprocess.Popen:
        self.worker = self._spawn([PREFECT, "worker", "start", "--pool", pool, "--type", "process",
                                   "--name", f"{pool}-worker-{self.port}"], "worker.log")
        return self.worker

    def stop(self) -> None:
        for name in ("worker", "server"):
            process = getattr(self, name)
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            setattr(self, name, None)

    def __enter__(self) -> "PrefectStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
