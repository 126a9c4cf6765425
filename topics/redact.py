"""Secrets never leave the process: every configured secret is replaced in any text we emit.

Roles register what they hold (API keys, passwords, DSN credentials) once at start; errors,
dead-letter reasons and results pass through `redact` before they leave, and every log record and
uncaught traceback is redacted once `install_redaction` ran. A secret
is matched as a substring, so an upstream that echoes `Authorization: Bearer <key>` back inside
its error body is caught too.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType

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


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if not _secrets:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a format string that does not fit its args: log it anyway, never raise
        message = f"{record.msg!r} % {record.args!r}"
    record.msg, record.args = redact(message), None
    if record.exc_info and record.exc_info[1] is not None:
        # formatters reuse exc_text when it is set: render the traceback now, redacted
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def install_redaction() -> None:
    """Redact every log record at creation (whoever configures the handlers later: Faust does)
    and every uncaught traceback. Idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacting", False):
        return

    def redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
        return _redact_record(factory(*args, **kwargs))

    redacting_factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)

    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit:
            sys.stderr.write(redact("".join(traceback.format_exception(
                args.exc_type, args.exc_value, args.exc_traceback))))

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
