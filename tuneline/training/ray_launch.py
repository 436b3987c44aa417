"""How the flow's process launches training on a Ray cluster (``training.engine: ray``), before anything runs.

Reads ``training.ray`` and ``$RAY_ADDRESS``; writes nothing. The training itself is
``tuneline.training.ray_engine`` (the Ray driver, run as the training child process, and its workers); this
module is what the launcher needs of it without importing the training loop: the checks that fail a run at once
(no ``ray`` package, no cluster address), the child's command, and what the workers will train with (their
number, their precision) for the candidate's key.
"""

from __future__ import annotations

import os
import socket
import sys

from tuneline.config import Precision, TrainingConfig
from tuneline.errors import ConfigError, redact_urls

RAY_EXTRA = "pip install 'tuneline[ray]'"
ADDRESS_ENV = "RAY_ADDRESS"


def require_ray(setting: str = "training.engine: ray") -> None:
    """The ``ray`` package is importable, else one ConfigError naming the extra that installs it."""
    try:
        import ray  # noqa: F401 - only whether it imports (0.6 s); the driver imports Ray Train itself
    except ImportError as err:
        raise ConfigError(f"{setting} needs the ray package, which is not installed here ({err}); "
                          f"{RAY_EXTRA}, or set {setting.split(':')[0]}: local") from None


def cluster_address(training: TrainingConfig, setting: str = "training.engine: ray",
                    environ: dict[str, str] | None = None) -> str:
    """``training.ray.address``, else ``$RAY_ADDRESS``; neither is a ConfigError (never a local Ray started by us)."""
    environ = os.environ if environ is None else environ
    address = training.ray.address or environ.get(ADDRESS_ENV, "").strip()
    if not address:
        raise ConfigError(f"{setting} needs a cluster: set training.ray.address (e.g. "
                          f"ray://raycluster-head-svc:10001) or ${ADDRESS_ENV} on the worker that runs the flow")
    return address


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A cluster address that refuses or drops connections fails in seconds, as transient (ray.init would retry
    for over 10 minutes); addresses without a port ("auto") are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"cannot reach the Ray cluster at {redact_urls(address)}: {err}") from None


def check(training: TrainingConfig) -> None:
    """What fails a Ray training before its child starts (not retried): the package and the address."""
    require_ray()
    cluster_address(training)


def ray_command(spec_path: str) -> list[str]:
    """``python -m tuneline.training.ray_engine SPEC``: the Ray driver, run as the training child process."""
    return [sys.executable, "-m", "tuneline.training.ray_engine", str(spec_path)]


def planned_precision(training: TrainingConfig) -> str:
    """The precision the workers train in, as far as the flow's machine can tell (it may have no GPU): the setting,
    with auto as fp32 on CPU workers and as "auto-gpu" on GPU workers (each resolves it: bf16 where supported)."""
    if training.precision != Precision.auto:
        return training.precision.value
    return "auto-gpu" if training.ray.use_gpu else "fp32"
