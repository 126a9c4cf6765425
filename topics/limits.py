"""What every result and dead letter passes through before it is produced: secrets redacted
(topics/redact.py), and a size that the broker accepts.

The broker's default `message.max.bytes` is about 1 MiB and librdkafka refuses anything over
1,000,000 bytes locally (MSG_SIZE_TOO_LARGE), so every value we produce stays under
MAX_MESSAGE_BYTES, which leaves room for the key and the record's own overhead. Rather than fail,
an oversized output sheds what can be rebuilt (a result's copy of its query), then truncates its
largest text with a visible mark.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from topics.codec import encode
from topics.redact import redact, redact_optional
from topics.schemas import DeadLetter, Result

MAX_MESSAGE_BYTES = 900_000


def truncate_marked(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes, ending with a mark that says what was cut."""
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) <= max_bytes:
        return text
    mark = f" ...[truncated: {len(data)} bytes, first {{}} kept]"
    keep = max(0, max_bytes - len(mark) - 12)
    head = data[:keep].decode("utf-8", errors="ignore")  # never split a character
    return head + mark.format(len(head.encode("utf-8", errors="surrogatepass")))


def printable(text: str, max_bytes: int) -> str:
    """Text every encoder takes (lone surrogates, as in some exception texts, become escapes),
    cut to `max_bytes` with a mark."""
    return truncate_marked(text.encode("utf-8", "backslashreplace").decode("utf-8"), max_bytes)


def _shrunk(encode_with: Callable[[str], bytes], text: str, limit: int) -> bytes:
    """Encode with ever shorter `text` until the value fits. JSON escaping can grow text up to
    six-fold, so the cut scales with what the last try came to."""
    budget = len(text.encode("utf-8", errors="surrogatepass"))
    value = encode_with(text)
    while len(value) > limit and budget > 0:
        budget = int(budget * limit / len(value) * 0.98)
        value = encode_with(truncate_marked(text, budget))
    return value


def encode_result(result: Result, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    result = msgspec.structs.replace(result, error=redact_optional(result.error),
                                     answer=redact(result.answer), model=redact(result.model))
    value = encode(result)
    if len(value) <= limit:
        return value
    # the query copy only feeds the routers' semantic caches: drop it first
    result = msgspec.structs.replace(result, query=None)
    value = encode(result)
    if len(value) <= limit:
        return value
    # the larger text first; if the other alone is still too large, it is cut as well
    first, second = sorted(("answer", "error"), key=lambda f: -len(getattr(result, f) or ""))
    for field in (first, second):
        text = getattr(result, field) or ""
        value = _shrunk(lambda t, f=field, r=result: encode(msgspec.structs.replace(r, **{f: t})),
                        text, limit)
        if len(value) <= limit:
            return value
        result = msgspec.structs.replace(result, **{field: truncate_marked(text, 4000)})
    return encode(result)


def encode_dead_letter(letter: DeadLetter, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    letter = msgspec.structs.replace(letter, reason=redact(letter.reason), raw=redact(letter.raw))
    value = encode(letter)
    if len(value) <= limit:
        return value
    letter = msgspec.structs.replace(letter, reason=truncate_marked(letter.reason, 4000))
    return _shrunk(lambda t: encode(msgspec.structs.replace(letter, raw=t)), letter.raw, limit)
