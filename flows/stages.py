"""Run one pipeline stage inside a flow and record how it went for the run summary."""

from __future__ import annotations

import time


class StageLog:
    """Calls tasks, keeps per-stage status (ran / cached) and seconds, re-raises failures."""

    def __init__(self):
        self.stages: dict[str, dict] = {}

    def run(self, task, *args) -> dict:
        started = time.perf_counter()
        state = task(*args, return_state=True)
        seconds = round(time.perf_counter() - started, 2)
        result = state.result()  # raises the task's own exception when it failed
        cached = state.name == "Cached" or bool(isinstance(result, dict) and result.get("reused"))
        self.stages[task.name] = {"status": "cached" if cached else "ran", "seconds": seconds}
        return result
