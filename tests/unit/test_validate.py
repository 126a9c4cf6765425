import json

import pytest

from pipeline.validate import Limits, validate
from topics.errors import InvalidMessage


def ok(payload: dict, **kw) -> object:
    return validate(json.dumps(payload).encode(), origin="q:0:7", timestamp=1000.0, **kw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (None, "empty message"),
        (b"not json", "not JSON"),
        (b"{broken", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"42", "not a JSON object"),
        (b'{"tenant": "a"}', "missing text"),
        (b'{"text": "   \\n "}', "empty text"),
        (b'{"text": 42}', "wrong types"),
        (b'{"text": "hi", "max_tokens": "many"}', "wrong types"),
        (b'{"text": "hi", "tenant": "has space"}', "bad tenant"),
        (b'{"text": "hi", "tenant": ""}', "bad tenant"),
        (b'{"text": "hi", "max_tokens": 0}', "max_tokens 0 out of range"),
        (b'{"text": "hi", "temperature": 3.5}', "temperature 3.5 out of range"),
        (b'{"text": "hi", "messages": [{"role": "user", "content": "x"}]}', "not both"),
        (b'{"messages": []}', "empty messages"),
        (b'{"messages": [{"role": "wizard", "content": "x"}]}', "bad message role"),
        (b'{"text": "hi", "id": ""}', "bad id"),
    ],
)
def test_rejects_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate(raw, origin="q:0:1", timestamp=0.0)
    assert reason in caught.value.reason


def test_over_long_text_is_rejected_with_its_length() -> None:
    with pytest.raises(InvalidMessage, match="text too long: 11 characters, limit 10"):
        ok({"text": "x" * 11}, limits=Limits(max_chars=10))


def test_fills_missing_id_and_submitted_at_deterministically() -> None:
    query = ok({"text": "hello"})
    assert query.id == "q:0:7"
    assert query.submitted_at == 1000.0
    kept = ok({"text": "hello", "id": "mine", "submitted_at": 5.0})
    assert (kept.id, kept.submitted_at) == ("mine", 5.0)


def test_accepts_non_ascii_and_chat_messages() -> None:
    assert ok({"text": "日本の首都はどこですか？", "tenant": "acme"}).text == "日本の首都はどこですか？"
    query = ok({"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "¿Qué hora es?"}]})
    assert [m.role for m in query.chat()] == ["system", "user"]


def test_invalid_utf8_is_not_json() -> None:
    with pytest.raises(InvalidMessage):
        validate(b'{"text": "\xff\xfe"}', origin="o", timestamp=0.0)
