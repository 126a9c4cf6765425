"""Validation of raw query messages: pure, no I/O.

A raw Kafka value either becomes a normalised Query (id and submitted_at filled in) or raises
InvalidMessage with a reason a person can act on; the router dead-letters it with that reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from topics.codec import decode
from topics.errors import InvalidMessage
from topics.schemas import Query

TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True)
class Limits:
    max_chars: int = 32_000
    max_messages: int = 64
    max_tokens: int = 4096
    max_temperature: float = 2.0
    max_id_chars: int = 128


DEFAULT_LIMITS = Limits()


def validate(
    raw: bytes | None, *, origin: str, timestamp: float, limits: Limits = DEFAULT_LIMITS
) -> Query:
    """Decode and check one message.

    `origin` ("topic:partition:offset") names a query that arrived without an id, so a replay of
    the same message gets the same id and is counted once. `timestamp` (the Kafka message time)
    stands in for a missing submitted_at for the same reason.
    """
    if not raw:
        raise InvalidMessage("empty message")
    if raw[:1] != b"{" and raw.lstrip()[:1] != b"{":
        # catch arrays, numbers and plain strings before msgspec's less direct wording
        try:
            msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise InvalidMessage("not JSON") from None
        raise InvalidMessage("not a JSON object")
    query = decode(raw, Query)
    text_chars = _check_content(query, limits)
    if text_chars > limits.max_chars:
        raise InvalidMessage(f"text too long: {text_chars} characters, limit {limits.max_chars}")
    if not TENANT_PATTERN.fullmatch(query.tenant):
        raise InvalidMessage(f"bad tenant {query.tenant[:80]!r}: want 1-64 of [A-Za-z0-9_.-]")
    if query.id is not None and not (0 < len(query.id) <= limits.max_id_chars):
        raise InvalidMessage(f"bad id: want 1-{limits.max_id_chars} characters")
    if not 1 <= query.max_tokens <= limits.max_tokens:
        raise InvalidMessage(f"max_tokens {query.max_tokens} out of range 1-{limits.max_tokens}")
    if not 0.0 <= query.temperature <= limits.max_temperature:
        raise InvalidMessage(
            f"temperature {query.temperature} out of range 0-{limits.max_temperature}"
        )
    if query.deadline_s is not None and not query.deadline_s > 0:
        raise InvalidMessage(f"deadline_s {query.deadline_s} must be positive")
    return msgspec.structs.replace(
        query,
        id=query.id or origin,
        submitted_at=query.submitted_at if query.submitted_at else timestamp,
    )


def _check_content(query: Query, limits: Limits) -> int:
    """Check text/messages; return the total characters."""
    if query.text is not None and query.messages is not None:
        raise InvalidMessage("give text or messages, not both")
    if query.messages is not None:
        if not query.messages:
            raise InvalidMessage("empty messages")
        if len(query.messages) > limits.max_messages:
            raise InvalidMessage(f"too many messages: {len(query.messages)}")
        for message in query.messages:
            if message.role not in ROLES:
                raise InvalidMessage(f"bad message role {message.role[:40]!r}")
        if not any(m.content.strip() for m in query.messages):
            raise InvalidMessage("empty text")
        return sum(len(m.content) for m in query.messages)
    if query.text is None:
        raise InvalidMessage("missing text: give text or messages")
    if not query.text.strip():
        raise InvalidMessage("empty text")
    return len(query.text)
