"""Validation of raw query messages: pure, no I/O.

A raw Kafka value either becomes a normalised Query (id and submitted_at filled in) or raises
InvalidMessage with a reason a person can act on; the router dead-letters it with that reason.
Size and nesting are checked on the raw bytes before any parser runs, so no input can make a
decoder recurse or allocate without bound.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from topics.codec import decode
from topics.errors import InvalidMessage
from topics.schemas import Query

TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
JOB_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
ROLES = frozenset({"system", "user", "assistant", "tool"})
YEAR_2000 = 946_684_800.0  # 2000-01-01T00:00:00Z: anything earlier is a unit or clock mistake
DAY_S = 86_400.0
# a JSON string literal, or one bracket: enough to measure nesting without parsing
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_NON_NUMBERS = re.compile(rb"\b(?:NaN|Infinity)\b")


@dataclass(frozen=True)
class Limits:
    max_chars: int = 32_000
    max_messages: int = 64
    max_tokens: int = 4096
    max_temperature: float = 2.0
    max_id_chars: int = 128
    max_query_bytes: int = 256 * 1024  # the whole raw value, metadata included
    max_depth: int = 32  # nesting of objects and arrays; a query needs 3
    max_future_s: float = DAY_S  # how far past `now` a submitted_at may lie (clock skew)


DEFAULT_LIMITS = Limits()


def validate(
    raw: bytes | None, *, origin: str, timestamp: float, limits: Limits = DEFAULT_LIMITS,
    now: float | None = None,
) -> Query:
    """Decode and check one message.

    `origin` ("topic:partition:offset") names a query that arrived without an id, so a replay of
    the same message gets the same id and is counted once. `timestamp` (the Kafka message time)
    stands in for a missing submitted_at for the same reason. `now` (default: `timestamp`) bounds
    how far in the future a submitted_at may be.
    """
    if not raw:
        raise InvalidMessage("empty message")
    if len(raw) > limits.max_query_bytes:
        raise InvalidMessage(
            f"query too large: {len(raw)} bytes, limit {limits.max_query_bytes}")
    if raw[:1] != b"{" and raw.lstrip()[:1] != b"{":
        # catch arrays, numbers and plain strings before msgspec's less direct wording
        try:
            msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            raise InvalidMessage("not JSON") from None
        raise InvalidMessage("not a JSON object")
    _check_depth(raw, limits.max_depth)
    try:
        query = decode(raw, Query)
    except RecursionError:  # unreachable after _check_depth; kept so no input escapes as a crash
        raise InvalidMessage(f"nested too deeply: over {limits.max_depth} levels") from None
    except InvalidMessage as exc:
        if exc.reason.startswith("not JSON") and _NON_NUMBERS.search(raw):
            raise InvalidMessage(f"{exc.reason} (NaN and Infinity are not JSON numbers)") from None
        raise
    _check_unique_keys(raw)
    text_chars = _check_content(query, limits)
    if text_chars > limits.max_chars:
        raise InvalidMessage(f"text too long: {text_chars} characters, limit {limits.max_chars}")
    if not TENANT_PATTERN.fullmatch(query.tenant):
        raise InvalidMessage(f"bad tenant {query.tenant[:80]!r}: want 1-64 of [A-Za-z0-9_.-]")
    if query.id is not None and not (0 < len(query.id) <= limits.max_id_chars):
        raise InvalidMessage(f"bad id: want 1-{limits.max_id_chars} characters")
    if query.job is not None and not JOB_PATTERN.fullmatch(query.job):
        raise InvalidMessage(f"bad job {query.job[:80]!r}: want 1-128 of [A-Za-z0-9_.-]")
    if not 1 <= query.max_tokens <= limits.max_tokens:
        raise InvalidMessage(f"max_tokens {query.max_tokens} out of range 1-{limits.max_tokens}")
    # `not a <= x <= b` is also true for NaN, so NaN never slips through a range check
    if not 0.0 <= query.temperature <= limits.max_temperature:
        raise InvalidMessage(
            f"temperature {query.temperature} out of range 0-{limits.max_temperature}"
        )
    if query.deadline_s is not None and not (query.deadline_s > 0 and math.isfinite(query.deadline_s)):
        raise InvalidMessage(f"deadline_s {query.deadline_s} must be positive and finite")
    if query.submitted_at is not None:
        _check_submitted_at(query.submitted_at, timestamp if now is None else now, limits)
    return msgspec.structs.replace(
        query,
        id=query.id or origin,
        submitted_at=query.submitted_at if query.submitted_at is not None else timestamp,
    )


def _check_submitted_at(submitted_at: float, now: float, limits: Limits) -> None:
    """Epoch seconds in a sane range: a garbage year would poison every latency figure."""
    if not math.isfinite(submitted_at):
        raise InvalidMessage(f"submitted_at {submitted_at} is not a finite number")
    if submitted_at < YEAR_2000:
        raise InvalidMessage(
            f"submitted_at {submitted_at} is before 2000-01-01 (want epoch seconds)")
    if submitted_at > now + limits.max_future_s:
        raise InvalidMessage(
            f"submitted_at {submitted_at} is more than {limits.max_future_s:.0f} s in the future")


def _check_depth(raw: bytes, max_depth: int) -> None:
    """Refuse nesting deeper than `max_depth` before a recursive decoder sees it."""
    if raw.count(b"{") + raw.count(b"[") <= max_depth:
        return  # fast path: too few brackets to nest that deep, even inside strings
    depth = 0
    for token in _TOKENS.finditer(raw):
        char = token.group()[:1]
        if char in (b"{", b"["):
            depth += 1
            if depth > max_depth:
                raise InvalidMessage(f"nested too deeply: over {max_depth} levels")
        elif char in (b"}", b"]"):
            depth -= 1


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


# the C scanner itself: JSONDecoder.decode's Python wrapper costs as much again per message
_scan_unique = json.JSONDecoder(object_pairs_hook=_unique_pairs).scan_once


def _check_unique_keys(raw: bytes) -> None:
    """msgspec keeps the last of two equal keys; a second "tenant" must not change the tenant.
    The stdlib scanner hands over each object's pairs in order, so a repeat is seen at any depth
    (and keys are compared after unescaping: "ten\\u0061nt" is "tenant")."""
    text = raw.decode("utf-8")  # msgspec has accepted it: valid UTF-8, one JSON object
    try:
        _scan_unique(text, 0 if text[:1] == "{" else len(text) - len(text.lstrip()))
    except _DuplicateKey as dup:
        raise InvalidMessage(f"duplicate key {dup.key[:80]!r}") from None
    except (ValueError, StopIteration, RecursionError) as exc:  # report rather than crash
        raise InvalidMessage(f"not JSON: {exc!r}") from None


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
