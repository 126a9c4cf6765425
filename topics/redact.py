"""Secrets never leave the process: every configured secret is replaced in any text we emit.

Roles register what they hold (API keys, passwords, DSN credentials) once at start; errors,
dead-letter reasons, results and log records pass through `redact` before they leave. A secret
is matched as a substring, so an upstream that echoes `Authorization: Bearer <key>` back inside
its error body is caught too.
"""

from __future__ import annotations

import logging
import threading

MARK = "[REDACTED]"
_MIN_SECRET_CHARS = 4  # shorter "secrets" would redact ordinary words

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secret(*secrets: str | None) -> None:
    """Remember secrets to redact (longest first, so a key containing another is hidden whole)."""
    global _secrets
    fresh = {s.strip() for s in secrets if s and len(s.strip()) >= _MIN_SECRET_CHARS}
    with _lock:
        _secrets = tuple(sorted(set(_secrets) | fresh, key=len, reverse=True))


def forget_secrets() -> None:
    """For tests: start from no registered secret."""
    global _secrets
    with _lock:
        _secrets = ()


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MARK)
    return text


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact(text)


class RedactingFilter(logging.Filter):
    """Redacts the formatted message of every record (args included) before a handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        clean = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            # the traceback text is formatted later from exc_info: render it now, redacted
            formatter = logging.Formatter()
            clean += "\n" + redact(formatter.formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = clean, None
        return True


def install_log_redaction() -> None:
    """Attach the filter to every handler of the root logger (call after logging is set up)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
