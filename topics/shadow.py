"""Shadow evaluation's contract: which answers are shadowed, the shadow request, the evaluation.

A share (`rate`) of the answers served by the SLM or the semantic cache is also sent to the LLM
track as a shadow call. The choice hashes the query's id and fingerprint, so a replay of the same
query makes the same choice (and a replayed shadow collapses on the evaluations table's key). A
shadow never reaches the user: the LLM worker turns it into an Evaluation, never a Result.
"""

from __future__ import annotations

import msgspec
import xxhash

from topics.codec import encode
from topics.limits import MAX_MESSAGE_BYTES, truncate_marked
from topics.redact import redact
from topics.schemas import Evaluation, RouteRequest, ShadowOf

_SPAN = float(2**64)
# each body an evaluation carries is cut to this: three of them stay under the broker's limit
# even if JSON escaping grew every byte six-fold (3 * 32 KiB * 6 < MAX_MESSAGE_BYTES)
MAX_BODY_BYTES = 32 * 1024


def shadow_chosen(query_id: str, fingerprint: str, rate: float) -> bool:
    """Whether this query is shadowed at `rate` (0: never, 1: always); the same query, the same
    answer, in every process and every replay."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    digest = xxhash.xxh3_64_intdigest(f"shadow\0{query_id}\0{fingerprint}".encode("utf-8", "surrogatepass"))
    return digest / _SPAN < rate


def shadow_request(request: RouteRequest, served: ShadowOf, *, routed_at: float) -> bytes | None:
    """The shadow of a served request, encoded: the same query for the LLM track, carrying what
    was served (its answer cut to MAX_BODY_BYTES). None if it would not fit the broker: a shadow
    is only worth sending when it costs live traffic nothing."""
    served = msgspec.structs.replace(served, answer=truncate_marked(served.answer, MAX_BODY_BYTES))
    shadow = msgspec.structs.replace(request, track="llm", escalation=None, shadow_of=served,
                                     reason=f"shadow of {served.route}", routed_at=routed_at)
    value = encode(shadow)
    return value if len(value) <= MAX_MESSAGE_BYTES else None


def encode_evaluation(evaluation: Evaluation) -> bytes:
    """Redacted like every output, with each body cut so the message always fits the broker."""
    bodies = {name: truncate_marked(redact(getattr(evaluation, name)), MAX_BODY_BYTES)
              for name in ("question", "served_answer", "shadow_answer")}
    return encode(msgspec.structs.replace(
        evaluation, **bodies, served_model=redact(evaluation.served_model),
        shadow_model=redact(evaluation.shadow_model)))
