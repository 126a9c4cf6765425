"""hypothesis strategies for query messages: valid ones and every malformed kind."""

from __future__ import annotations

import json
import re

from hypothesis import strategies as st

# no subnormals: a process that ran the SLM engine (some tests do) has onnxruntime's
# denormals-are-zero set, and hypothesis refuses to draw subnormal floats then
json_scalars = (st.none() | st.booleans() | st.integers() | st.text()
                | st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
tenants = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
texts = st.text(min_size=1, max_size=200).filter(lambda t: t.strip())


@st.composite
def valid_query(draw: st.DrawFn, run: str = "fz") -> bytes:
    query = {"id": f"{run}-{draw(st.uuids()).hex}", "tenant": draw(tenants), "text": draw(texts),
             "max_tokens": draw(st.integers(1, 8))}
    if draw(st.booleans()):  # a sane time: since 2000, not in the future
        query["submitted_at"] = draw(st.floats(946_684_800, 1_700_000_000, allow_subnormal=False))
    if draw(st.booleans()):
        query["metadata"] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    return json.dumps(query, ensure_ascii=draw(st.booleans())).encode()


not_a_string = st.integers() | st.booleans() | st.lists(st.integers(), max_size=2) | st.dictionaries(
    st.text(max_size=3), st.integers(), max_size=2)
not_a_number = st.text() | st.lists(st.integers(), max_size=2) | st.dictionaries(
    st.text(max_size=3), st.integers(), max_size=2)
WRONG_TYPES = {"text": not_a_string, "tenant": not_a_string, "max_tokens": not_a_number,
               "temperature": not_a_number, "messages": not_a_string | st.lists(st.integers(), min_size=1)}


def _with(field: str) -> st.SearchStrategy[bytes]:
    return WRONG_TYPES[field].map(lambda v: json.dumps({"text": "hi", field: v}).encode())


def _closing(opening: bytes) -> bytes:
    return b"]" if opening == b"[" else b"}"


def _duplicated(key: str, value: int) -> bytes:
    """A query with one key given twice (both values valid on their own)."""
    if key == "nested":
        return b'{"text": "hi", "metadata": {"m": {"k": %d, "k": 0}}}' % value
    pair = b'"%s": %s' % (key.encode(), b"%d" % value if key == "max_tokens" else b'"v%d"' % value)
    return b'{"text": "hi", ' + pair + b", " + pair + b"}"


MALFORMED_KINDS = {
    "not JSON": st.binary(min_size=1, max_size=60).filter(lambda b: not b.strip().startswith(b"{")),
    "not an object": json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: json.dumps(v).encode()),
    "missing text": st.dictionaries(st.sampled_from(["tenant", "max_tokens", "x"]), st.integers(),
                                    max_size=3).map(lambda d: json.dumps(d).encode()),
    "wrong types": st.sampled_from(sorted(WRONG_TYPES)).flatmap(_with),
    "empty text": st.text(alphabet=" \t\n\r", max_size=5).map(lambda t: json.dumps({"text": t}).encode()),
    "bad tenant": st.text(min_size=1, max_size=10).filter(
        lambda t: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", t)).map(
        lambda t: json.dumps({"tenant": t, "text": "hi"}).encode()),
    "bad utf-8": st.binary(min_size=1, max_size=10).map(lambda b: b'{"text": "' + b"\xff" + b + b'"}'),
    "too deep": st.tuples(st.integers(33, 3000), st.sampled_from([b"[", b'{"a":'])).map(
        lambda d: b'{"text": "hi", "metadata": ' + d[1] * d[0] + b"1" + _closing(d[1]) * d[0] + b"}"),
    "duplicate key": st.tuples(st.sampled_from(["tenant", "id", "max_tokens", "nested"]),
                               st.integers(1, 5)).map(lambda d: _duplicated(*d)),
    "bad submitted_at": (st.floats(-1e300, 946_684_799, allow_subnormal=False)
                          | st.floats(1e11, 1e300, allow_subnormal=False)).map(
        lambda at: json.dumps({"text": "hi", "submitted_at": at}).encode()),
    "oversized": st.integers(262_145, 300_000).map(
        lambda n: b'{"text": "hi", "metadata": {"blob": "' + b"b" * n + b'"}}'),
}
malformed = st.one_of(*MALFORMED_KINDS.values())
