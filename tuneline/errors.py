"""Errors a user can act on. Each message names what is wrong and where.

Deterministic errors (bad config, bad data, a failing gate) subclass
``TunelineError``; the CLI prints them as one paragraph, without a traceback.
"""


class TunelineError(Exception):
    """Base class: an error caused by the user's input, not a bug or an outage."""


class ConfigError(TunelineError):
    """The config file or a --set override is invalid."""


class DataError(TunelineError):
    """A data source cannot be read: missing, empty, malformed, not UTF-8."""


class ValidationFailed(TunelineError):
    """The data was read but failed one or more expectations."""


class GateFailed(TunelineError):
    """The candidate model did not reach the evaluation gate; carries the run summary."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary


class RegistryError(TunelineError):
    """A model reference is unknown, or a registry object is damaged."""
