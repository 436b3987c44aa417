"""Run a child process in its own process group, stream its output, stop it when it must stop.

Reads the child's merged stdout/stderr line by line; hands lines to a callback at a bounded rate
(a slow log sink never slows the child: lines are read as fast as they come and surplus ones are
counted, not queued); writes every line to a log file.

How a child is stopped, and why:

- over its time budget, or silent for longer than the stall limit: SIGTERM to the group (the
  trainer saves a checkpoint), SIGKILL after the grace period;
- when the caller is stopped itself (SIGTERM to the flow process becomes Prefect's
  ``TerminationSignal``, Ctrl-C a ``KeyboardInterrupt``): the same SIGTERM and grace, reading the
  child's last lines meanwhile, then the exception goes on;
- when the caller sets ``stop`` (e.g. it lost its lease on the candidate): SIGKILL at once, so the
  child writes nothing more;
- when ``stop_every_child`` was called (the process is being stopped while children run in other
  threads, e.g. a sweep's concurrent trials): SIGTERM and grace, as for a timeout; no new child starts.

Nothing outlives the call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from tuneline.training.outcomes import TrainingStopped


STOPPING = threading.Event()  # this process is being stopped: running children checkpoint and end, none starts


def stop_every_child() -> None:
    """Stop the children every thread of this process runs (each checkpoints first); refuse new ones."""
    STOPPING.set()


class RateLimitedLog:
    """Pass at most ``per_second`` lines per second to ``sink``; report how many were skipped."""

    def __init__(self, sink: Callable[[str], None], per_second: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.sink, self.interval, self.next_at, self.skipped, self.clock = sink, 1.0 / per_second, 0.0, 0, clock

    def __call__(self, line: str) -> None:
        now = self.clock()
        if now < self.next_at:
            self.skipped += 1
            return
        if self.skipped:
            line = f"{line}  ({self.skipped} lines not shown; see the full log)"
            self.skipped = 0
        self.next_at = now + self.interval
        self.sink(line)


@dataclass
class Ended:
    """How a child ended: its exit code (negative: killed by that signal) and who stopped it, if anyone."""

    code: int
    stopped_for: str | None = None  # "timeout", "stall", "stop" (the caller's event), "stopping" (the process's)


def run_process(command: list[str], log_line: Callable[[str], None], log_file: Path, *,
                timeout_s: float | None = None, stall_s: float | None = None, grace_s: float = 30.0,
                env: dict | None = None, on_start: Callable[[int], None] | None = None,
                stop: threading.Event | None = None) -> Ended:
    """Run ``command`` to its end; see the module docstring for when and how it is stopped early."""
    if STOPPING.is_set():
        raise TrainingStopped("this process is being stopped: no training starts (a new run resumes)")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               start_new_session=True, env=env)
    if on_start:
        on_start(process.pid)
    started = last_output = time.monotonic()
    stopped_for: list[str] = []
    finished = threading.Event()

    def supervise() -> None:
        while not finished.wait(0.5):
            now = time.monotonic()
            if stop is not None and stop.is_set():
                stopped_for.append("stop")
                signal_group(process, signal.SIGKILL)
                return
            if timeout_s and now - started > timeout_s:
                stopped_for.append("timeout")
            elif stall_s and now - last_output > stall_s:
                stopped_for.append("stall")
            elif STOPPING.is_set():
                stopped_for.append("stopping")
            else:
                continue
            terminate(process, grace_s)
            return

    supervisor = threading.Thread(target=supervise, name="child-supervisor", daemon=True)
    with log_file.open("a", encoding="utf-8") as log:
        try:
            supervisor.start()
            for line in process.stdout:
                last_output = time.monotonic()
                log.write(line)
                log_line(line.rstrip("\n"))
            return Ended(process.wait(), stopped_for[0] if stopped_for else None)
        except BaseException:  # the caller is being stopped: the child checkpoints before the exception goes on
            signal_group(process, signal.SIGTERM)
            read_to_the_end(process, log, grace_s)
            raise
        finally:
            finished.set()
            signal_group(process, signal.SIGKILL)  # whatever the child started goes with it
            process.wait()


def terminate(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to the group; SIGKILL if it has not ended after ``grace_s``."""
    signal_group(process, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)


def read_to_the_end(process: subprocess.Popen, log: TextIO, grace_s: float) -> None:
    """Keep the child's pipe drained (into the log file) while it finishes, for at most ``grace_s``."""
    def drain() -> None:
        try:
            for line in process.stdout:
                log.write(line)
        except (OSError, ValueError):
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    signal_group(process, signal.SIGKILL)
    reader.join(5)


def signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
