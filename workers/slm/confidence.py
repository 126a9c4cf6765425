"""A confidence that means something: the engine's mean token probability, checked for degenerate output.

A small model can be sure of itself while saying nothing: 256 tokens of "－－－" decode with a
mean token probability of 0.91, because each dash makes the next one likely. Mean log-prob measures
fluency, not an answer. These rules look at the text the way a reader would and cut the confidence
of an answer that is:
  empty       no letter or digit at all (whitespace, punctuation, dashes)
  repetition  looping: its tail repeats one unit 3+ times, most of its word 4-grams are repeats,
              or most of its lines are copies of one line; and, for an answer cut at the token
              limit, a loop that counts ("Step 11: add it. Step 12: add it. ..."): its last 4-grams
              repeat once numbers are read as one word
  echo        the question given back: most of the answer is long runs copied from the question,
              and the copy is the question's opening or most of the question (quoting one option
              of a multiple-choice question is not an echo)
  script      written in another script than the question (letters by Unicode script: Latin,
              Cyrillic, Greek, Arabic, CJK ...), e.g. an English answer to a Japanese question
  truncated   cut at the token limit (finish_reason "length") with a budget meant for a full answer
A degenerate rule multiplies the confidence by DEGENERATE_FACTOR (one factor per rule that fired),
which puts the answer under any sensible escalation threshold. A truncation alone is recorded but
not penalised (TRUNCATED_FACTOR): on our SLM's GSM8K labels the cut answers no other rule flagged
were right as often as the finished ones (2 of 36 vs 9 of 314); the loop rules catch the rest.
Pure functions: the SLM worker and `pointsman eval confidence` call the same `assess`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

DEGENERATE_FACTOR = 0.1
TRUNCATED_FACTOR = 1.0
REASONS = {
    "empty": "degenerate: empty answer",
    "repetition": "degenerate: repetition loop",
    "echo": "degenerate: question echoed",
    "script": "degenerate: other script than the question",
    "truncated": "truncated at the token limit",
}
DEGENERATE = ("empty", "repetition", "echo", "script")

# A run repeating at the end: at least this many characters, in at least this many copies.
_LOOP_MIN_CHARS = 24
_LOOP_MIN_COPIES = 3
_LOOP_MAX_PERIOD = 200
# Word 4-grams: an answer of 24+ of them where under half are distinct is going round in circles.
_NGRAM = 4
_NGRAM_MIN = 24
_NGRAM_MIN_DISTINCT = 0.5
# Cut at the limit: the last 48 4-grams, numbers as one word, under 40% distinct. Only for a cut
# answer: a finished worked solution repeats "<n> + <n> = <n>" shapes honestly (on GSM8K's recorded
# GPT-4 and Mixtral solutions this fires on 5 of 2638, the stricter rules above on none).
_COUNTING_WINDOW = 48
_COUNTING_MIN_DISTINCT = 0.4
# Lines: 3+ copies of one line making up half the lines.
_LINE_MIN_COPIES = 3
# Echo: runs of 6+ words copied from the question, making up 70%+ of the answer.
_ECHO_RUN = 6
_ECHO_SHARE = 0.7
# Script: judged on 4+ letters each side; the answer mismatches when under 20% of its letters
# are in the question's main script.
_SCRIPT_MIN_LETTERS = 4
_SCRIPT_MIN_SHARE = 0.2
_SCRIPT_SAMPLE = 2000  # characters from each end of a long text: its script is plain by then
# Budgets under this are for a short answer (a letter, a word): running into them says little.
_TRUNCATION_MIN_BUDGET = 32

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
# Words of spaced scripts, and every CJK character on its own (those scripts have no spaces).
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_SCRIPT_FAMILY = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK", "BOPOMOFO": "CJK",
                  "IDEOGRAPHIC": "CJK", "CJK": "CJK"}


@dataclass(frozen=True)
class Assessment:
    confidence: float  # in [0, 1]: what the escalation gate compares
    raw: float  # the engine's exp(mean log-prob)
    flags: tuple[str, ...]  # rule names that fired, in REASONS order

    @property
    def degenerate(self) -> bool:
        return any(f in DEGENERATE for f in self.flags)

    @property
    def reason(self) -> str:
        """Short, for an escalation reason: "degenerate: repetition loop; ..." ("" when none fired)."""
        return "; ".join(REASONS[f] for f in self.flags)


def assess(question: str, answer: str, *, raw_confidence: float, finish_reason: str = "stop",
           max_tokens: int | None = None) -> Assessment:
    """One confidence for an answer to `question` (the user's message as the model saw it)."""
    text = _normal(answer)
    flags = [name for name, fired in (
        ("empty", is_empty(text)),
        ("repetition", is_repetition(text) or (finish_reason == "length" and is_counting_loop(text))),
        ("echo", is_echo(_normal(question), text)),
        ("script", is_other_script(_normal(question), text)),
        ("truncated", is_truncated(finish_reason, max_tokens)),
    ) if fired]
    confidence = min(1.0, max(0.0, float(raw_confidence)))
    for flag in flags:
        confidence *= TRUNCATED_FACTOR if flag == "truncated" else DEGENERATE_FACTOR
    return Assessment(confidence, float(raw_confidence), tuple(flags))


def _normal(text: str) -> str:
    """NFKC (fullwidth "－" is "-", "Ａ" is "A"), whitespace runs as one space or newline."""
    text = unicodedata.normalize("NFKC", text)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold())


def is_empty(text: str) -> bool:
    return not any(c.isalnum() for c in text)


def is_repetition(text: str) -> bool:
    return _tail_loop(text) or _ngram_loop(tokens(text)) or _line_loop(text)


def is_counting_loop(text: str) -> bool:
    """The tail goes round with only its numbers changing (what a model cut mid-loop says)."""
    words = ["0" if w.isdigit() else w for w in tokens(text)]
    grams = [tuple(words[i:i + _NGRAM]) for i in range(len(words) - _NGRAM + 1)][-_COUNTING_WINDOW:]
    return len(grams) >= _NGRAM_MIN and len(set(grams)) < _COUNTING_MIN_DISTINCT * len(grams)


def _tail_loop(text: str) -> bool:
    """The text ends in one unit said over and over ("－－－－", "I think I think I think")."""
    n = len(text)
    for period in range(1, min(_LOOP_MAX_PERIOD, n // _LOOP_MIN_COPIES) + 1):
        run = 0  # characters, from the end, equal to the one a period earlier
        while run < n - period and text[n - 1 - run] == text[n - 1 - run - period]:
            run += 1
        covered = run + period
        if covered >= _LOOP_MIN_CHARS and covered >= _LOOP_MIN_COPIES * period:
            return True
    return False


def _ngram_loop(words: list[str]) -> bool:
    grams = [tuple(words[i:i + _NGRAM]) for i in range(len(words) - _NGRAM + 1)]
    return len(grams) >= _NGRAM_MIN and len(set(grams)) < _NGRAM_MIN_DISTINCT * len(grams)


def _line_loop(text: str) -> bool:
    lines = text.split("\n")
    top = Counter(lines).most_common(1)
    return bool(top) and top[0][1] >= _LINE_MIN_COPIES and 2 * top[0][1] >= len(lines)


def is_echo(question: str, answer: str) -> bool:
    asked, said = tokens(question), tokens(answer)
    if len(said) < _ECHO_RUN or len(asked) < _ECHO_RUN:
        return False
    asked_runs = {tuple(asked[i:i + _ECHO_RUN]) for i in range(len(asked) - _ECHO_RUN + 1)}
    copied = [False] * len(said)
    for i in range(len(said) - _ECHO_RUN + 1):
        if tuple(said[i:i + _ECHO_RUN]) in asked_runs:
            copied[i:i + _ECHO_RUN] = [True] * _ECHO_RUN
    if sum(copied) < _ECHO_SHARE * len(said):
        return False
    opening = tuple(asked[:_ECHO_RUN])
    says_opening = any(tuple(said[i:i + _ECHO_RUN]) == opening for i in range(len(said) - _ECHO_RUN + 1))
    return says_opening or sum(copied) >= 0.5 * len(asked)


@lru_cache(maxsize=8192)
def _family(char: str) -> str | None:
    """The Unicode script of a letter, CJK scripts as one family; None for non-letters."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    if not name:
        return None
    first = re.split(r"[ -]", name, maxsplit=1)[0]
    return _SCRIPT_FAMILY.get(first, first)


def main_script(text: str) -> tuple[str | None, Counter[str]]:
    """The script most letters are in (None under _SCRIPT_MIN_LETTERS letters), with all counts."""
    if len(text) > 2 * _SCRIPT_SAMPLE:
        text = text[:_SCRIPT_SAMPLE] + text[-_SCRIPT_SAMPLE:]
    counts = Counter(f for c in text if (f := _family(c)) is not None)
    if sum(counts.values()) < _SCRIPT_MIN_LETTERS:
        return None, counts
    return counts.most_common(1)[0][0], counts


def is_other_script(question: str, answer: str) -> bool:
    asked, _ = main_script(question)
    said, counts = main_script(answer)
    if asked is None or said is None:
        return False
    return counts[asked] < _SCRIPT_MIN_SHARE * sum(counts.values())


def is_truncated(finish_reason: str, max_tokens: int | None) -> bool:
    return finish_reason == "length" and (max_tokens is None or max_tokens >= _TRUNCATION_MIN_BUDGET)
