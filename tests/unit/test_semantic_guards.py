import pytest

from pipeline.semantic.guards import (
    direction,
    entities,
    first_conflict,
    negation_parity,
    numbers,
    same_word,
    substitution,
)


@pytest.mark.parametrize(("a", "b"), [
    ("Is ibuprofen safe to take with alcohol?", "Is ibuprofen not safe to take with alcohol?"),
    ("Cancel my subscription", "Don't cancel my subscription"),
    ("How do I lock my card?", "How do I unlock my card?"),
    ("What's the price for members?", "What's the price for non-members?"),
    ("Is a 2-bedroom flat available in March?", "Is a 3-bedroom flat available in March?"),
    ("Are you open on Saturday?", "Are you open on Sunday?"),
    ("What's the stamp duty on a £250,000 house?", "What's the stamp duty on a £600,000 house?"),
    ("Who is the CEO of Microsoft?", "Who is the CEO of Apple?"),
    ("What's the capital of Australia?", "What's the capital of Austria?"),
    ("Transfer £50 from my savings to my current account",
     "Transfer £50 from my current account to my savings"),
    ("How do I reset my password?", "How do I reset my colleague's password?"),
    ("What's the paracetamol dose for adults?", "What's the paracetamol dose for children?"),
    ("Report:\n" + "x " * 300 + "\nSummarise it.", "Report:\n" + "x " * 300 + "\nTranslate it to French."),
])
def test_traps_are_rejected(a: str, b: str) -> None:
    assert first_conflict(a, b) is not None


@pytest.mark.parametrize(("a", "b"), [
    ("How do I request a repeat prescription?", "How do I reqest a repeat perscription?"),
    ("How do I order a new debit card?", "How can I order a new debit card?"),
    ("Do you sell gift vouchers?", "do you sell gift vouchers??"),
    ("Is the clinic open on Sundays?", "is the clinic open on sundays"),
    ("What's 15% of 200?", "what's 15% of 200"),
    ("How do I cancel my subscription?", "I'd like to end my subscription, how do I do that?"),
    ("How do I book a smear test?", "um how do i book a smear test"),
    ("How much is a ticket for two adults?", "How much is a ticket for 2 adults?"),
])
def test_same_meaning_passes(a: str, b: str) -> None:
    assert first_conflict(a, b) is None


def test_extractors() -> None:
    assert numbers("Book a table for two at 7pm on Friday") == {"2", "7", "pm", "friday"}
    assert numbers("£1,000") == numbers("1000")
    assert negation_parity("I can't not go") == 0 and negation_parity("I can't go") == 1
    assert entities("How do I export data from Salesforce to the UK office?") == {"salesforce", "uk"}
    moved = direction("move money from savings into my ISA")
    assert moved is not None and "isa" in moved[1] and "isa" not in moved[0]
    assert same_word("perscription", "prescription") and not same_word("austria", "australia")
    assert not same_word("lock", "unlock") and same_word("centre", "center")
    assert substitution("How do I increase the font size?", "How do I decrease the font size?") == \
        (["increase"], ["decrease"])
