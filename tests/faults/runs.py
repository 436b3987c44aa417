"""Helpers of the fault tests that run the real ``tuneline`` command and watch its processes and storage."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, children_of


def tuneline_run(store: Path, home: Path, *settings: str, json_summary: bool = False) -> subprocess.Popen:
    """``tuneline run examples/demo.yaml`` with its own temporary Prefect server; output merged into stdout."""
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)  # the command starts (and must stop) its own temporary server
    overrides = [arg for setting in (f"storage={store}", *settings) for arg in ("--set", setting)]
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(EXAMPLES / "demo.yaml"), *overrides,
                             *(["--json"] if json_summary else [])],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def complete_steps(store: Path) -> list[int]:
    """Steps of the complete checkpoints of every candidate under a local storage root."""
    return sorted(int(p.parent.name.split("-")[1]) for p in store.glob("candidates/*/checkpoints/*/COMPLETE"))


def train_until_sigkilled(watch, *args, storage, prepared, cfg) -> None:
    """``train_candidate`` while ``watch(*args, stop)`` runs beside it in a thread and SIGKILLs the child at the
    moment it waits for; the attempt must fail as killed. ``stop`` is set when the attempt is over."""
    from tuneline.training.launcher import train_candidate
    from tuneline.training.outcomes import TrainingInterrupted

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(*args, stop), daemon=True)
    watcher.start()
    try:
        with pytest.raises(TrainingInterrupted, match="signal SIGKILL"):
            train_candidate(storage, prepared, cfg, log_line=lambda line: None)
    finally:
        stop.set()
        watcher.join(5)
