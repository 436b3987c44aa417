"""Retry policy shared by every stage: retry outages, never retry bad input.

Deterministic failures (``TunelineError``: bad config or data, failed validation
or gate) fail at once; anything else (connection errors, storage 5xx, a killed
process) is retried with exponential backoff and jitter.
"""

from __future__ import annotations

from prefect.tasks import exponential_backoff

from tuneline.errors import TunelineError


def is_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: True when the failure is worth another attempt."""
    try:
        state.result()
    except TunelineError:
        return False
    except Exception:
        return True
    return False


RETRY = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": is_transient,
}
