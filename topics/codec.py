"""(De)serialisation of the topic schemas. One encoder, one decoder per type, reused."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from topics.errors import InvalidMessage
from topics.schemas import DeadLetter, Evaluation, JobState, Query, Result, RouteRequest

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder] = {
    cls: msgspec.json.Decoder(cls)
    for cls in (Query, RouteRequest, Result, DeadLetter, Evaluation, JobState)
}


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode(raw: bytes | str, cls: type[T]) -> T:
    """Decode and validate; any contract violation becomes InvalidMessage with a readable reason."""
    try:
        return _decoders[cls].decode(raw)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise InvalidMessage(f"wrong types: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"not JSON: {exc}") from None


def raw_text(raw: bytes | None) -> str:
    """Raw bytes as text for dead letters, lossless for invalid UTF-8 (backslash escapes)."""
    if raw is None:
        return ""
    return raw.decode("utf-8", errors="backslashreplace")
