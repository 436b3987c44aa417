"""Retry policy shared by every stage: retry outages, never retry bad input.

Deterministic failures (``TunelineError``: bad config or data, failed validation
or gate) fail at once; anything else (connection errors, storage 5xx, timeouts, a
killed or preempted training process, CUDA out of memory) is retried with
exponential backoff and jitter, as many times as ``retries.attempts`` allows.
"""

from __future__ import annotations

import functools

from prefect import task
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from tuneline.config import RetryConfig
from tuneline.errors import TunelineError, redact_exception


def is_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: True when the failure is worth another attempt."""
    try:
        state.result()
    except TunelineError:
        return False
    except Exception:
        return True
    return False


def stage(name: str):
    """``@task`` for a pipeline stage: the retry condition, and the attempt count set on its (typed) result.

    The number of retries comes from the run's config (``retry_options``, applied by the flow).
    """

    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # e.g. botocore's EndpointConnectionError names AWS_ENDPOINT_URL whole
                redact_exception(err)  # no URL credentials in the failed state's message or traceback
                raise
            return result.model_copy(update={"attempts": task_run.run_count})

        # log_prints off: the flows' print-to-log would also catch what libraries print to a captured
        # stdout (dill disassembles every function datasets.map fingerprints: ~100 lines of bytecode).
        return task(name=name, retry_condition_fn=is_transient, retry_jitter_factor=0.5, log_prints=False)(run)

    return decorate


def retry_options(retries: RetryConfig) -> dict:
    """``Task.with_options`` arguments for the configured attempts and backoff."""
    return {
        "retries": retries.attempts - 1,
        "retry_delay_seconds": exponential_backoff(backoff_factor=retries.backoff_seconds),
    }
