"""Run a child process in its own process group, stream its output, enforce a timeout.

Reads the child's merged stdout/stderr line by line; hands lines to a callback at
a bounded rate (a slow log sink never slows the child: lines are read as fast as
they come and surplus ones are counted, not queued); writes every line to a log
file. On timeout the group gets SIGTERM (the trainer checkpoints), then SIGKILL.
Nothing outlives the call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable


class RateLimitedLog:
    """Pass at most ``per_second`` lines per second to ``sink``; report how many were skipped."""

    def __init__(self, sink: Callable[[str], None], per_second: float = 5.0):
        self.sink, self.interval, self.next_at, self.skipped = sink, 1.0 / per_second, 0.0, 0

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.skipped += 1
            return
        if self.skipped:
            line = f"{line}  ({self.skipped} lines not shown; see the full log)"
            self.skipped = 0
        self.next_at = now + self.interval
        self.sink(line)


def run_process(command: list[str], log_line: Callable[[str], None], log_file: Path,
                timeout_s: float | None = None, grace_s: float = 60.0, env: dict | None = None,
                on_start: Callable[[int], None] | None = None) -> tuple[int, bool]:
    """Run ``command``; returns (exit code, timed_out). Negative codes mean killed by that signal."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               start_new_session=True, env=env)
    if on_start:
        on_start(process.pid)
    timed_out = threading.Event()

    def stop_on_timeout():
        timed_out.set()
        signal_group(process, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)

    timer = threading.Timer(timeout_s, stop_on_timeout) if timeout_s else None
    try:
        if timer:
            timer.start()
        with log_file.open("a", encoding="utf-8") as log:
            for line in process.stdout:
                log.write(line)
                log_line(line.rstrip("\n"))
        return process.wait(), timed_out.is_set()
    finally:
        if timer:
            timer.cancel()
        signal_group(process, signal.SIGKILL)  # whatever the child started goes with it
        process.wait()


def signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
