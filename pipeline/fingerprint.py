"""Query fingerprints: xxh3-128 over normalised text, tenant and generation parameters.

Two queries share a fingerprint exactly when serving one's answer to the other is safe:
same tenant, same words up to case/spacing/Unicode form, same max_tokens and temperature.
"""

from __future__ import annotations

import unicodedata

import xxhash

from topics.schemas import Query

_SEP = "\x1f"  # unit separator: cannot be confused with text after normalisation


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def fingerprint(query: Query) -> str:
    parts = [query.tenant, str(query.max_tokens), f"{query.temperature:.3f}"]
    for message in query.chat():
        parts.append(message.role)
        parts.append(normalise(message.content))
    return xxhash.xxh3_128_hexdigest(_SEP.join(parts).encode())
