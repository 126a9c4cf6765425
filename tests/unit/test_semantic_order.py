"""Operand order: swapped operands around an asymmetric relation must not share an answer, while the
same order reworded still may. Each case is (cached, same order reworded, operands swapped)."""

import pytest

from pipeline.semantic.guards import first_conflict
from pipeline.semantic.order import relations, reversed_operands, unit

CASES = [
    # comparatives, entities and numbers
    ("Is Rust faster than Go for web servers?", "For web servers, is Rust faster than Go?",
     "Is Go faster than Rust for web servers?"),
    ("Is 8 greater than 23?", "is 8 greater than 23", "Is 23 greater than 8?"),
    ("Is a blue whale heavier than an elephant?", "Is a blue whale heavier than an elephant??",
     "Is an elephant heavier than a blue whale?"),
    ("Should I lease rather than buy a car?", "should I lease rather than buy a car",
     "Should I buy rather than lease a car?"),
    ("Is it better to rent than to buy?", "Is it better to rent than buy?",
     "Is it better to buy than to rent?"),
    # sequence
    ("Did the Renaissance come before the Reformation?", "Did the Renaissance come before the Reformation",
     "Did the Reformation come before the Renaissance?"),
    # arithmetic, in words and symbols, infix and prefix
    ("What's 15 minus 9?", "Subtract 9 from 15", "What's 9 minus 15?"),
    ("What's 144 divided by 12?", "Divide 144 by 12", "What's 12 divided by 144?"),
    ("What's 12 / 4?", "What is 12 / 4", "What's 4 / 12?"),
    ("What is 2 to the power of 5?", "what is 2 to the power of 5", "What is 5 to the power of 2?"),
    ("Subtract 4 from 10", "What is 10 minus 4?", "Subtract 10 from 4"),
    # routes and conversions, with and without from / to
    ("Count down from 10 to 1", "count down from 10 to 1 please", "Count down from 1 to 10"),
    ("EUR to GBP exchange rate", "EUR to GBP exchange rate?", "GBP to EUR exchange rate"),
    ("How many pounds is 40 kilograms?", "Convert 40 kilograms to pounds",
     "How many kilograms is 40 pounds?"),
    ("How many teaspoons in a tablespoon?", "how many teaspoons are in a tablespoon",
     "How many tablespoons in a teaspoon?"),
    ("How many feet is 300 metres?", "How many ft is 300 metres?", "How many metres is 300 feet?"),
]


@pytest.mark.parametrize(("cached", "same_order", "swapped"), CASES)
def test_swapped_operands_conflict_and_same_order_passes(cached: str, same_order: str, swapped: str) -> None:
    assert first_conflict(cached, swapped) is not None
    assert first_conflict(cached, same_order) is None


def test_context_that_moves_is_not_a_swap() -> None:
    # `in winter` changes sides, but the operands keep their roles: crossing one way only
    a = "In winter, is a heat pump cheaper than a gas boiler?"
    b = "Is a heat pump cheaper than a gas boiler in winter?"
    assert reversed_operands(a, b) is None


def test_converse_comparative_keeps_roles() -> None:
    # `X smaller than Y` is read as `Y larger than X`: the operands did not swap roles
    assert reversed_operands("Is 17 larger than 4?", "Is 4 smaller than 17?") is None
    assert reversed_operands("Is 17 larger than 4?", "Is 17 smaller than 4?") is not None


def test_roles_and_units() -> None:
    assert relations("How many km is 26 miles?") == ((frozenset({"mile"}), frozenset({"km"})),)
    assert unit("kilometres") == unit("km") and unit("pounds") == ("pound", frozenset({"mass", "money"}))
    assert relations("What's 7 - 3?") == relations("What's 7 minus 3?")
