"""The answer book: the LLM stand-in answering as the strong model did, by its recorded correctness.

`pointsman eval pipeline` needs an LLM track whose quality is known without a remote model: for
each labelled prompt the book replies with the gold answer when the strong model got it right (or
when that is unknown), and with a wrong one otherwise, deterministically (the same prompt always
gets the same reply). A multiple-choice prompt gets a letter, another letter when wrong; a
numeric one ends on `#### N`, a different N when wrong, after the strong model's recorded response
when there is one, so completions (and so costs) have a realistic length. Plain data only: the
eval builds the entries from its labelled prompts, so this module imports nothing from pipeline/.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

LETTERS = "ABCD"
UNKNOWN_REPLY = "[answer book] no recorded answer for this prompt"
DONT_KNOW = "I do not know."
CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English text
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators of each chat message


@dataclass(frozen=True)
class BookEntry:
    text: str  # the prompt as sent (the user message)
    choices: tuple[str, ...]  # empty: a numeric or short answer
    answer: str  # the gold: a letter, a number or a short answer
    correct: bool  # answer like the strong model: right when it was right (or unknown)
    response: str | None = None  # the strong model's recorded response (GSM8K), for its length


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _key(text: str) -> str:
    return " ".join(text.split())


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("$", "").strip())
    except ValueError:
        return None


def _number_text(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def wrong_letter(entry: BookEntry) -> str:
    """Another option's letter, picked by a hash of the prompt (the same every run)."""
    n = max(2, len(entry.choices))
    gold = LETTERS.index(entry.answer) if entry.answer in LETTERS else 0
    step = 1 + zlib.crc32(entry.text.encode()) % (n - 1)
    return LETTERS[(gold + step) % n]


def wrong_number(entry: BookEntry, gold: float) -> float:
    return gold + 1 + zlib.crc32(entry.text.encode()) % 9


def _worked(response: str | None, final: str, max_tokens: int) -> str:
    """The recorded working (cut to the budget), then the final answer on its own line."""
    tail = f"#### {final}"
    if not response:
        return f"The answer is {final}.\n{tail}"
    room = max(0, max_tokens * CHARS_PER_TOKEN - len(tail) - 1)
    return f"{response.strip()[:room].rstrip()}\n{tail}"


def reply(entry: BookEntry, max_tokens: int = 256) -> str:
    """What the book answers for one entry."""
    if entry.choices:
        return entry.answer if entry.correct else wrong_letter(entry)
    gold = _number(entry.answer)
    if gold is not None:
        final = gold if entry.correct else wrong_number(entry, gold)
        return _worked(entry.response, _number_text(final), max_tokens)
    if entry.correct:
        return entry.answer
    return DONT_KNOW if _key(entry.answer).casefold() != _key(DONT_KNOW).casefold() else "No answer."


class AnswerBook:
    """Replies by prompt text; a prompt not in the book is told so (never an exception)."""

    def __init__(self, entries: Iterable[BookEntry]) -> None:
        self._entries: dict[str, BookEntry] = {_key(e.text): e for e in entries}
        self.unknown = 0  # calls for prompts the book does not hold

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, text: str) -> BookEntry | None:
        return self._entries.get(_key(text))

    def __call__(self, messages: Sequence[Mapping[str, object]], max_tokens: int) -> tuple[str, int, int]:
        """(reply, prompt tokens, completion tokens): the stand-in's answerer hook."""
        last = str(messages[-1].get("content", "")) if messages else ""
        entry = self.entry(last)
        if entry is None:
            self.unknown += 1
            text = UNKNOWN_REPLY
        else:
            text = reply(entry, max_tokens)
        prompt = sum(tokens(str(m.get("content", ""))) + MESSAGE_OVERHEAD_TOKENS for m in messages)
        return text, prompt, min(tokens(text), max(1, max_tokens))
