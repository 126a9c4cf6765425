"""Secrets never leave the process; outputs always fit the broker's message limit."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from topics.codec import decode
from topics.limits import MAX_MESSAGE_BYTES, encode_dead_letter, encode_result, truncate_marked
from topics.redact import MARK, forget_secrets, install_redaction, redact, register_secret
from topics.schemas import DeadLetter, Query, Result

KEY = "sk-test-0123456789abcdef"


@pytest.fixture()
def secret() -> Iterator[str]:
    register_secret(KEY, "", None, "ab")  # empty and too-short values are ignored
    yield KEY
    forget_secrets()


def test_redact_hides_a_key_echoed_inside_text(secret: str) -> None:
    echoed = f'401 {{"error": "bad header Authorization: Bearer {secret}"}}'
    assert secret not in redact(echoed) and MARK in redact(echoed)
    assert redact("ab cd") == "ab cd"  # a two-letter "secret" would redact ordinary words


def test_log_records_and_their_tracebacks_are_redacted(secret: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    install_redaction()
    log = logging.getLogger("pointsman.test")
    try:
        raise RuntimeError(f"upstream said {secret}")
    except RuntimeError:
        log.exception("call failed with key %s", secret)
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "call failed with key" in text and "upstream said" in text
    assert secret not in text


def test_truncate_marked_keeps_whole_characters_and_says_what_was_cut() -> None:
    cut = truncate_marked("é" * 1000, 200)
    assert len(cut.encode()) <= 200 and "truncated: 2000 bytes" in cut
    assert truncate_marked("short", 200) == "short"


def test_an_oversized_result_sheds_its_query_copy_then_truncates_the_answer() -> None:
    small = Result(query_id="q", tenant="t", route="llm", answer="ok", query=Query(text="x" * 1000))
    assert decode(encode_result(small, limit=10_000), Result).query is not None
    big = Result(query_id="q", tenant="t", route="llm", answer="a" * 3_000_000,
                 query=Query(text="x" * 30_000))
    value = encode_result(big)
    assert len(value) <= MAX_MESSAGE_BYTES
    back = decode(value, Result)
    assert back.query is None and "truncated: 3000000 bytes" in back.answer


def test_a_dead_letter_of_escaping_bytes_still_fits() -> None:
    # control bytes escape to \\u00XX: six output bytes for each input byte
    letter = DeadLetter(reason="too large", raw="\x01" * 900_000, source_topic="queries")
    value = encode_dead_letter(letter)
    assert len(value) <= MAX_MESSAGE_BYTES
    assert "truncated: 900000 bytes" in decode(value, DeadLetter).raw


def test_encoded_outputs_carry_no_secret(secret: str) -> None:
    result = Result(query_id="q", tenant="t", route="llm", error=f"401: Bearer {secret}")
    letter = DeadLetter(reason=f"401: Bearer {secret}", raw=f'{{"k": "{secret}"}}', source_topic="q")
    assert secret.encode() not in encode_result(result) + encode_dead_letter(letter)


def test_a_result_with_a_huge_answer_and_a_huge_error_still_fits() -> None:
    both = Result(query_id="q", tenant="t", route="llm", answer="a" * 2_000_000, error="e" * 1_500_000)
    value = encode_result(both)
    assert len(value) <= MAX_MESSAGE_BYTES
    back = decode(value, Result)
    assert "truncated" in back.answer and "truncated" in (back.error or "")
