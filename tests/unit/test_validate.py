import json

import pytest

from pipeline.validate import DEFAULT_LIMITS, Limits, validate
from topics.errors import InvalidMessage

NOW = 1_780_000_000.0  # 2026-05-28


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
    kept = ok({"text": "hello", "id": "mine", "submitted_at": NOW - 5.0}, now=NOW)
    assert (kept.id, kept.submitted_at) == ("mine", NOW - 5.0)


def test_accepts_non_ascii_and_chat_messages() -> None:
    assert ok({"text": "日本の首都はどこですか？", "tenant": "acme"}).text == "日本の首都はどこですか？"
    query = ok({"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "¿Qué hora es?"}]})
    assert [m.role for m in query.chat()] == ["system", "user"]


def test_invalid_utf8_is_not_json() -> None:
    with pytest.raises(InvalidMessage):
        validate(b'{"text": "\xff\xfe"}', origin="o", timestamp=0.0)


def reject(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(InvalidMessage) as caught:
        validate(raw, origin="q:0:1", timestamp=NOW, limits=limits, now=NOW)
    return caught.value.reason


@pytest.mark.parametrize("raw", [
    b'{"text": "hi", "metadata": {"a": ' + b"[" * 1000 + b"]" * 1000 + b"}}",
    b'{"text": "hi", "metadata": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}",
    b'{"text": "hi", "metadata": ' + b"[" * 100_000,  # deep and unterminated
    b"{" * 5000,
])
def test_deep_nesting_is_a_reason_not_a_recursion_error(raw: bytes) -> None:
    assert reject(raw).startswith("nested too deeply: over 32 levels")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "{[" * 5000 + '\\"{'
    query = ok({"text": text, "metadata": {"a": [[[1]]]}})
    assert query.text == text and query.metadata == {"a": [[[1]]]}


@pytest.mark.parametrize(("raw", "key"), [
    (b'{"text": "hi", "tenant": "acme", "tenant": "globex"}', "tenant"),
    (b'{"text": "hi", "ten\\u0061nt": "acme", "tenant": "globex"}', "tenant"),  # escaped twin
    (b'{"text": "hi", "metadata": {"job": "a", "job": "b"}}', "job"),
    (b'{"text": "hi", "metadata": {"x": [{"k": 1}, {"k": 1, "k": 2}]}}', "k"),
    (b'{"messages": [{"role": "user", "content": "hi", "role": "system"}]}', "role"),
])
def test_duplicate_keys_at_any_level_are_rejected_naming_the_key(raw: bytes, key: str) -> None:
    assert reject(raw) == f"duplicate key {key!r}"


def test_the_same_key_in_different_objects_is_not_a_duplicate() -> None:
    query = ok({"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "hi"}], "metadata": {"text": "x"}})
    assert len(query.chat()) == 2


@pytest.mark.parametrize(("submitted_at", "reason"), [
    (b"1e20", "is more than 86400 s in the future"),
    (b"915148800", "before 2000-01-01"),  # 1999-01-01
    (b"1999", "before 2000-01-01"),  # a year, not a time
    (b"0", "before 2000-01-01"),
    (b"-1.5", "before 2000-01-01"),
    (str(NOW + 2 * 86400).encode(), "in the future"),
    (b"NaN", "NaN and Infinity are not JSON numbers"),
    (b"Infinity", "NaN and Infinity are not JSON numbers"),
    (b"1e999", "wrong types"),
])
def test_submitted_at_outside_a_sane_range_is_rejected(submitted_at: bytes, reason: str) -> None:
    assert reason in reject(b'{"text": "hi", "submitted_at": ' + submitted_at + b"}")


def test_submitted_at_within_range_is_kept() -> None:
    for at in (946_684_800.0, NOW - 7 * 86400, NOW + 3600):
        assert ok({"text": "hi", "submitted_at": at}, now=NOW).submitted_at == at


@pytest.mark.parametrize("field", [b"temperature", b"deadline_s", b"max_tokens"])
@pytest.mark.parametrize("value", [b"NaN", b"-Infinity", b"Infinity"])
def test_non_finite_numbers_are_rejected_in_every_number_field(field: bytes, value: bytes) -> None:
    assert "NaN and Infinity are not JSON numbers" in reject(
        b'{"text": "hi", "' + field + b'": ' + value + b"}")


def test_oversized_query_is_rejected_with_its_size_and_metadata_counts() -> None:
    limits = Limits(max_query_bytes=1000)
    raw = json.dumps({"text": "hi", "metadata": {"blob": "x" * 1000}}).encode()
    assert reject(raw, limits) == f"query too large: {len(raw)} bytes, limit 1000"
    default = b'{"text": "hi", "metadata": {"blob": "' + b"x" * 300_000 + b'"}}'
    assert reject(default).startswith(f"query too large: {len(default)} bytes, limit 262144")
