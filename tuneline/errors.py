"""Errors a user can act on. Each message names what is wrong and where.

Deterministic errors (bad config, bad data, a failing gate) subclass
``TunelineError``; the CLI prints them as one paragraph, without a traceback.

No message shows a URL's credentials: ``redact_urls`` replaces the userinfo of every URL in a
text (``http://user:secret@host`` -> ``http://***@host``); every ``TunelineError`` is redacted
when it is built, ``redact_exception`` does the same for other exceptions (botocore's, urllib3's)
in place, and the flows' log records pass through it too (``flows.stages.install_redaction``).
"""

from __future__ import annotations

import re

REDACTED = "***"
# A URL as it appears in a message: scheme://, then everything up to whitespace, a quote, an angle
# bracket or the next scheme:// ("http://a:b@h1,http://c:d@h2" is two URLs).
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_URL = re.compile(rf"({_SCHEME})((?:(?!{_SCHEME})[^\s'\"<>`])+)")
# What follows the '@' that ends a userinfo: a host (name, IPv4 or [IPv6]) and optional port, then a
# path, query, fragment, a closing character or the end of the URL.
_HOST_AFTER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::\d*)?(?=[/?#),;\]]|$)")


def redact_urls(text: str) -> str:
    """``text`` with the userinfo (user, password, token) of every URL in it replaced by ``***``.

    Scheme, host, port, path and query stay. The userinfo ends at the LAST '@' before the URL's first
    '/', '?' or '#' (as ``urllib.parse`` reads it), so a password with an unencoded '@' is hidden
    whole. A password with an unencoded '/', '?' or '#' (AWS secret keys have '/') is hidden too:
    after ``user:`` (a non-numeric "port") the userinfo runs to the last '@' that a host follows.
    When in doubt the function hides more, never less: ``http://u:p/x@y`` -> ``http://***@y``.
    """
    return _URL.sub(_without_userinfo, text) if "://" in text else text


def _without_userinfo(match: re.Match) -> str:
    scheme, rest = match.group(1), match.group(2)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        end = authority.rindex("@")
    else:
        user, colon, after = authority.partition(":")
        if not colon or not user or user.startswith("[") or after.isdigit() or "@" not in rest:
            return match.group(0)  # no userinfo: host, host:port or [ipv6]:port
        ends = [i for i, char in enumerate(rest) if char == "@" and _HOST_AFTER.match(rest, i + 1)]
        if not ends:
            return match.group(0)
        end = ends[-1]
    return f"{scheme}{REDACTED}{rest[end:]}"


def _redacted(value):
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, (list, tuple)) and any(isinstance(item, str) for item in value):
        return type(value)(redact_urls(item) if isinstance(item, str) else item for item in value)
    return value


def redact_exception(err: BaseException) -> BaseException:
    """``err`` with URL userinfo removed from its message, in place, along its cause / context chain.

    Rewrites ``args``, string attributes (OSError's ``filename``, ``__notes__``) and the string values of
    dict attributes (botocore keeps its message's fields in ``kwargs``: pickling rebuilds from them).
    Returns ``err``, so ``raise redact_exception(err)`` reads naturally.
    """
    pending, seen = [err], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.args = tuple(_redacted(arg) for arg in current.args)
        attributes = dict(getattr(current, "__dict__", {}))
        if isinstance(current, OSError):
            attributes.update(strerror=current.strerror, filename=current.filename, filename2=current.filename2)
        for name, value in attributes.items():
            if isinstance(value, BaseException):
                pending.append(value)
                continue
            if isinstance(value, dict):
                pending += [v for v in value.values() if isinstance(v, BaseException)]
                redacted = {k: _redacted(v) for k, v in value.items()}
            else:
                redacted = _redacted(value)
            if redacted != value:
                try:
                    setattr(current, name, redacted)
                except (AttributeError, TypeError):  # read-only: such an attribute is in no message
                    pass
        pending += [current.__cause__, current.__context__]
    return err


class TunelineError(Exception):
    """Base class: an error caused by the user's input, not a bug or an outage.

    Its message is redacted when it is built: no URL credentials, whatever a subclass formats into it.
    """

    def __init__(self, *args):
        super().__init__(*(_redacted(arg) for arg in args))


class ConfigError(TunelineError):
    """The config file or a --set override is invalid."""


class DataError(TunelineError):
    """A data source cannot be read: missing, empty, malformed, not UTF-8."""


class ValidationFailed(TunelineError):
    """The data was read but failed one or more expectations."""


class GateFailed(TunelineError):
    """The candidate model did not reach the evaluation gate; carries the run summary."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)  # redacted there
        self.summary = summary


class RegistryError(TunelineError):
    """A model reference is unknown, or a registry object is damaged."""
