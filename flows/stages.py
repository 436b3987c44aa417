"""Run one pipeline stage inside a flow and record how it went for the run summary."""

from __future__ import annotations

import time

from tasks.policy import retry_options
from tuneline.config import RetryConfig


class StageLog:
    """Calls tasks with the run's retry policy; keeps status, seconds and attempts; re-raises failures."""

    def __init__(self, retries: RetryConfig):
        self.options = retry_options(retries)
        self.stages: dict[str, dict] = {}

    def run(self, task, *args):
        started = time.perf_counter()
        state = task.with_options(**self.options)(*args, return_state=True)
        record = {"seconds": round(time.perf_counter() - started, 2)}
        self.stages[task.name] = record
        result = state.result()  # raises the task's own exception when it failed
        record["attempts"] = result.attempts
        resumed_from = getattr(result, "resumed_from_step", 0)
        if state.name == "Cached" or result.reused:
            record["status"] = "cached"
        elif resumed_from:
            record.update(status="resumed", resumed_from_step=resumed_from)
        else:
            record["status"] = "ran"
        return result

