"""Run one pipeline stage inside a flow and record how it went for the run summary; keep URL
credentials out of the run's logs (``install_redaction``, called first by every flow)."""

from __future__ import annotations

import logging
import time

from tasks.policy import retry_options
from tuneline.config import RetryConfig
from tuneline.errors import redact_exception, redact_urls


class RedactUrls(logging.Filter):
    """Replaces URL userinfo (``http://user:secret@host``) in a record's message and exception with ``***``.

    It rewrites the record itself, so every handler after the first filtering one sees the redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it itself
            return True
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            redact_exception(record.exc_info[1])
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


def install_redaction() -> None:
    """Add ``RedactUrls`` to every handler of the ``prefect`` logger tree (the API log handler) and of the
    root logger (the console): the run's logs, in the UI and on the terminal, show no URL credentials.
    Idempotent; handlers that logging setup creates later get it at the next flow start."""
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    loggers += [logger for name, logger in list(logging.Logger.manager.loggerDict.items())
                if name.startswith("prefect.") and isinstance(logger, logging.Logger)]
    for handler in {handler for logger in loggers for handler in logger.handlers}:
        if not any(isinstance(existing, RedactUrls) for existing in handler.filters):
            handler.addFilter(RedactUrls())


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

