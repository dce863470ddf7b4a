"""Keep secrets (tokens, webhook URL paths) out of logs, errors and output while publishing.

Sinks register the secret values they hold; `redact()` masks them (and well-known token shapes) in any
text, and `redaction_active()` installs the masking on every log record and on stdout/stderr for the
duration of a publish, so third-party libraries' own logging cannot leak them either.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
_MIN_SECRET_LEN = 6  # shorter values would mask ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()

# Token shapes masked even when nobody registered them (belt and braces).
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}\b"), MASK),  # Hugging Face user tokens
    (re.compile(r"(?i)\b(authorization:?\s*(?:bearer|basic|token)?\s*)[^\s'\",}]+"), r"\1" + MASK),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"), "Bearer " + MASK),
    (re.compile(r"(https?://[^/\s:@]+:)[^@\s/]+@"), r"\1" + MASK + "@"),  # user:password@host
    (re.compile(r"(hooks\.slack\.com/)[^\s'\"<>]+"), r"\1" + MASK),
    (re.compile(r"(discord(?:app)?\.com/api/webhooks/)[^\s'\"<>]+"), r"\1" + MASK),
]


def register_secret(value: str | None) -> None:
    """Remember `value` so that every later `redact()` masks it."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def registered_secret_count() -> int:
    with _lock:
        return len(_secrets)


def redact(text: Any) -> str:
    """`text` as a string with every registered secret and known token shape replaced by `***`."""
    out = str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in out:
            out = out.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


def url_secret_parts(url: str) -> list[str]:
    """The parts of a URL that act as a credential: path, query, fragment and user info.

    Webhook URLs (Slack, Teams, Discord, ...) carry their secret in the path, so the whole path after
    the host is treated as secret; the host stays visible so a user can tell destinations apart.
    """
    parts = urlsplit(url)
    found: list[str] = [url]
    path_query = parts.path + (f"?{parts.query}" if parts.query else "")
    if parts.fragment:
        path_query += f"#{parts.fragment}"
    if path_query.strip("/"):
        found.append(path_query)
        found.extend(seg for seg in parts.path.split("/") if len(seg) >= 16)  # token-like segments
        if parts.query:
            found.append(parts.query)
    if parts.password:
        found.append(parts.password)
    return found


def display_url(url: str) -> str:
    """A URL safe to print: scheme and host kept, user info and path masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    has_secret_part = bool(parts.path.strip("/") or parts.query or parts.fragment)
    return urlunsplit((parts.scheme, netloc, f"/{MASK}" if has_secret_part else "", "", ""))


class _RedactingStream(io.TextIOBase):
    """A text stream wrapper that masks secrets in everything written through it."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, s: str) -> int:
        self._inner.write(redact(s))
        return len(s)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._inner, "isatty", lambda: False)())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._inner, "encoding", "utf-8"))

    def fileno(self) -> int:
        return self._inner.fileno()


@contextlib.contextmanager
def redaction_active(redirect_std: bool = True) -> Iterator[None]:
    """Mask secrets in every log record created (any logger, any handler) and, optionally, on stdout/stderr."""
    old_factory = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old_factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it for logging to report
            return record
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
    stack = contextlib.ExitStack()
    if redirect_std:
        stack.enter_context(contextlib.redirect_stdout(_RedactingStream(sys.stdout)))
        stack.enter_context(contextlib.redirect_stderr(_RedactingStream(sys.stderr)))
    try:
        with stack:
            yield
    finally:
        logging.setLogRecordFactory(old_factory)
