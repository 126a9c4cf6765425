"""Guards against the known false hits of semantic caches: pure functions over two texts.

Embeddings put "is X safe" next to "is X not safe", "2-bedroom" next to "3-bedroom",
"Microsoft" next to "Apple" and "is A faster than B" next to "is B faster than A". Each guard
extracts what must be equal for one answer to serve both and returns a reason when it is not, or
None. `first_conflict` runs them cheapest first, after writing letter-digit codes the same way on
both sides (`2FA` / `two-factor authentication`).

What does not count as a difference: a code is a name, not a number (2FA, MP3, COVID-19); a
negation only where it flips the polarity of a word both sides ask about (`can't remember my PIN`
negates nothing `how do I reset my PIN` asks); a WordNet synonym is not a word swap (buy /
purchase, find / locate; antonyms and co-hyponyms still are, see thesaurus.py); a duration is a
quantity (`14 days` == `two weeks`). Operand order is order.py's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from difflib import SequenceMatcher
from functools import lru_cache

from pipeline.semantic.embedders import TOKENIZER_FILE
from pipeline.semantic.lexicon import (
    CLOCK_UNITS,
    DURATION_SECONDS,
    NUMBER_WORDS,
    TIME_WORDS,
    content_words,
    is_negation,
    stem,
    words,
)
from pipeline.semantic.order import guard_order, unit
from pipeline.semantic.thesaurus import synonyms

_OPPOSITE_PREFIXES = ("un", "non", "in", "im", "dis", "de", "ir", "il", "anti", "counter")
LONG_PROMPT_CHARS = 400
_HYPHEN = re.compile(r"-(?=[a-z])|(?<=[a-z])-")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")
_CLOCK = re.compile(r"[\d.,:/%]+(am|pm)$")


_CODE_SUFFIX = re.compile(r"\d[\d.,]*-?([a-z]+)$")
_QUANTITY_SUFFIXES = frozenset({"am", "pm", "st", "nd", "rd", "th", "s", "k", "m", "bn"})


@lru_cache(maxsize=65_536)
def is_code(word: str) -> bool:
    """A name made of letters and digits (2FA, MP3, 4K, COVID-19, P60): not a number. A number with
    a unit or a word glued on (7pm, 5km, 2-bedroom, 1990s) is a number, written in lower case."""
    if not (any(c.isdigit() for c in word) and any(c.isalpha() for c in word)):
        return False
    if not word[:1].isdigit():
        return True  # MP3, COVID-19, P60, H1N1
    glued = _CODE_SUFFIX.match(word)
    if glued is None:
        return True  # H1N1-like: digits and letters interleaved
    suffix = glued.group(1)
    if any(c.isupper() for c in word):
        return True  # 2FA, 4K, 5G, 3D: capitals make it a name
    return not (suffix in _QUANTITY_SUFFIXES or unit(suffix) is not None or suffix in vocabulary())


@lru_cache(maxsize=65_536)
def numbers(text: str) -> frozenset[str]:
    """Numbers (digits or words, `£1,000` == `1000`), weekdays, months and relative dates; codes
    such as `2FA` or `COVID-19` are names, not numbers (the entity guard compares them)."""
    out: list[str] = []
    parts = [p for w in words(text) if not is_code(w) for p in _HYPHEN.split(w.casefold())]
    for prev, low in zip(["", *parts], parts, strict=False):
        number = prev[:1].isdigit() or prev in NUMBER_WORDS
        if low[:1].isdigit():
            digits = _THOUSANDS.sub("", low)
            clock = _CLOCK.match(digits)
            glued = _CODE_SUFFIX.match(digits)
            if glued is not None and clock is None and unit(glued.group(1)) is not None:
                digits = digits[: glued.start(1)].removesuffix("-")  # 300m == 300 metres: the number
            out.append(digits if clock is None else digits[:-2].removesuffix(":00"))
            if clock is not None:
                out.append(clock.group(1))
        elif low in NUMBER_WORDS:
            out.append(NUMBER_WORDS[low])
        elif low in TIME_WORDS or (low in CLOCK_UNITS and number):
            out.append(low.removesuffix("s"))
        elif low == "percent" and number and out:
            out.append(out.pop().removesuffix("%") + "%")  # "fifteen percent" == "15%"
        elif number and out and (seconds := DURATION_SECONDS.get(low.removesuffix("s"))) is not None:
            out.append(_duration(out.pop(), seconds))  # "14 days" == "two weeks"
    return frozenset(out)


def _duration(count: str, seconds: int) -> str:
    try:
        value = float(count) * seconds
    except ValueError:
        return count  # `3rd day`: not a count
    return f"{value:g}s" if value != int(value) else f"{int(value)}s"


def negation_parity(text: str) -> int:
    cues = (w.casefold() for w in words(text))
    return sum(is_negation(w) or w.startswith("non-") for w in cues) % 2


@lru_cache(maxsize=65_536)
def entities(text: str) -> frozenset[str]:
    """Named things: capitalised words not opening a sentence, acronyms, letter-digit codes (P60)."""
    out = set()
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text.strip()):
        for i, w in enumerate(words(sentence)):
            if w in ("I", "I'd", "I'm", "I've", "I'll", "OK") or len(w) < 2:
                continue
            acronym = w.isupper() or is_code(w)  # `300m` and `7pm` are quantities, not names
            if acronym or (i > 0 and w[0].isupper()):
                out.add(w.casefold().removesuffix("'s"))
    return frozenset(out)


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Whole words MiniLM's tokenizer knows: a word outside it is likely a typo of a near one."""
    vocab = json.loads(TOKENIZER_FILE.read_text())["model"]["vocab"]
    return frozenset(w for w in vocab if w.isalpha() and len(w) > 2)


def _prefixed(prefix: str, word: str, base: str) -> bool:
    return word.startswith(prefix) and word[len(prefix):].lstrip("-") == base


@lru_cache(maxsize=262_144)
def same_word(x: str, y: str) -> bool:
    ux, uy = unit(x), unit(y)
    if ux is not None and uy is not None:
        return ux[0] == uy[0]  # kg / kilograms, ft / feet: one unit; km / miles: two
    x, y = stem(x), stem(y)
    if x == y:
        return True
    if any(_prefixed(p, y, x) or _prefixed(p, x, y) for p in _OPPOSITE_PREFIXES):
        return False  # lock / unlock, members / non-members: opposites, not typos
    short, long = sorted((x, y), key=len)
    if len(short) >= 4 and long.startswith(short) and "-" not in long:
        return True  # quote / quotation, submit / submission
    known = vocabulary()
    if x in known and y in known:
        return False  # two real words (Austria / Australia): different meaning, not a typo
    return SequenceMatcher(None, x, y).ratio() >= 0.8


def substitution(a: str, b: str, min_ratio: float = 0.6) -> tuple[list[str], list[str]] | None:
    """Words swapped in an otherwise near-identical question (open -> closed, adults -> children).

    Only minimal edits count: the two word sequences must mostly align (difflib ratio >= min_ratio);
    a rewording shares few words in order and is left to the similarity threshold. Typos
    (`perscription`) match their word. Returns the unmatched content words of each side, or None.
    """
    wa, wb = [w.casefold() for w in words(a)], [w.casefold() for w in words(b)]
    if SequenceMatcher(None, wa, wb, autojunk=False).ratio() < min_ratio:
        return None
    ca, cb = content_words(a), content_words(b)
    only_a = [x for x in ca if not any(same_word(x, y) for y in cb)]
    only_b = [y for y in cb if not any(same_word(x, y) for x in ca)]
    only_a, only_b = _unmatched(only_a, only_b), _unmatched(only_b, only_a)
    return (only_a, only_b) if only_a or only_b else None


def _phrases(side: list[str]) -> list[list[tuple[str, int, int]]]:
    """Per word: itself and the two-word phrases it is part of (`set up`, `sign up`), with spans."""
    out: list[list[tuple[str, int, int]]] = [[(w, i, i + 1)] for i, w in enumerate(side)]
    for i in range(len(side) - 1):
        phrase = (f"{side[i]}_{side[i + 1]}", i, i + 2)
        out[i].append(phrase)
        out[i + 1].append(phrase)
    return out


def _unmatched(side: list[str], other: list[str]) -> list[str]:
    """The words of `side` that no synonym on the other side accounts for (buy / purchase, find /
    locate, set up / create): a change of word, not of meaning. Antonyms never count as synonyms."""
    theirs = [p for phrases in _phrases(other) for p in phrases]
    return [w for w, phrases in zip(side, _phrases(side), strict=True)
            if not any(synonyms(mine, t) for mine, _, _ in phrases for t, _, _ in theirs)]


_DIRECTION = re.compile(r"\b(?:from|convert|transfer|move|migrate|switch|translate|put|swap|port)\b(.*?)"
                        r"\b(?:to|into|onto)\b(.*)", re.I | re.S)


def direction(text: str) -> tuple[set[str], set[str]] | None:
    """(source words, target words) of a move: `from savings to current account`, `convert PDF to Word`."""
    m = _DIRECTION.search(text)
    if m is None:
        return None
    return {stem(w) for w in content_words(m.group(1))}, {stem(w) for w in content_words(m.group(2))[:4]}


def long_prefix(a: str, b: str, min_chars: int = LONG_PROMPT_CHARS) -> bool:
    """Long prompts that differ only after a long shared prefix (same document, other question)."""
    if max(len(a), len(b)) < min_chars or a == b:
        return False
    return _common_prefix(a, b) >= 0.5 * max(len(a), len(b))


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


Guard = Callable[[str, str], "str | None"]


def guard_numbers(a: str, b: str) -> str | None:
    na, nb = numbers(a), numbers(b)
    return None if na == nb else f"numbers differ: {sorted(na ^ nb)}"


_NOUN_NEGATORS = frozenset({"no", "without", "none", "nothing", "nobody", "neither", "nor"})


def polarity(text: str) -> dict[str, bool] | None:
    """Each content word -> whether a negation governs it. A verb's negation (`not safe`, `don't
    cancel`, `can't remember`) governs the next content word; a noun's (`no sugar`, `without its
    usual toppings`) the run of content words that follows. None when a cue governs nothing (`why
    not?`): its scope is unknown."""
    out: dict[str, bool] = {}
    scope = ""  # "verb" / "noun": the kind of cue still waiting for its words
    taken = False
    for raw in words(text):
        w = raw.casefold()
        if w.startswith("non-"):
            scope, taken, w = "verb", False, w.removeprefix("non-")
        elif is_negation(w):
            if scope and not taken:
                return None
            scope, taken = ("noun" if w in _NOUN_NEGATORS else "verb"), False
            continue
        if not _is_content(w):
            if taken:
                scope = ""  # a function word ends a noun phrase
            continue
        out[w] = out.get(w, False) or bool(scope)
        if scope:
            taken = True
            if scope == "verb" and not w.endswith("ly"):
                scope = ""
    return None if scope and not taken else out


@lru_cache(maxsize=65_536)
def _is_content(word: str) -> bool:
    return content_words(word) == [word]


def guard_negation(a: str, b: str) -> str | None:
    """Negation matters where it flips the polarity of something both ask about: `is X safe` vs `is X
    not safe`. `I can't remember my PIN` vs `how do I reset my PIN` negates nothing the other asks."""
    if negation_parity(a) == negation_parity(b):
        return None
    pa, pb = polarity(a), polarity(b)
    if pa is None or pb is None:
        return "negation differs"  # a cue with no scope: keep the strict rule
    flipped = _flipped(pa, pb) + _flipped(pb, pa)
    return f"negation differs: {sorted(set(flipped))}" if flipped else None


def _flipped(negating: dict[str, bool], other: dict[str, bool]) -> list[str]:
    """Words `negating` negates that `other` asks about un-negated (few cues: a short loop)."""
    return [x for x, neg in negating.items() if neg
            and any(not other_neg and same_word(x, y) for y, other_neg in other.items())]


_AUXILIARIES = frozenset({"can", "could", "is", "are", "am", "do", "does", "did", "will", "would",
                          "should", "shall", "may", "might", "must", "have", "has", "was", "were"})
_HOW_MUCH = re.compile(r"\bhow (much|many|long|often|far|old)\b", re.I)


def question_kind(text: str) -> str | None:
    """`amount` (how much / many / long ...), `yes-no` (opens with an auxiliary: can I, is it), or None."""
    if _HOW_MUCH.search(text):
        return "amount"
    first = next(iter(words(text)), "").casefold()
    return "yes-no" if first in _AUXILIARIES else None


def guard_question_kind(a: str, b: str) -> str | None:
    """`Can I claim compensation for a 4-hour delay?` is answered yes or no; `How much compensation
    can I claim ...?` with an amount: once the guards stopped reading `4-hour` as a name, only the
    kind of question told these apart."""
    kinds = {question_kind(a), question_kind(b)}
    return "question kind differs: amount vs yes-no" if kinds == {"amount", "yes-no"} else None


def spelled_out(acronym: str, text: str) -> bool:
    """`PAC` in `a porting authorisation code`: consecutive words whose initials spell the acronym."""
    n = len(acronym)
    if not (acronym.isalpha() and 3 <= n <= 6):
        return False
    initials = "".join(w[0] for w in words(text.casefold()))
    return acronym.casefold() in initials


_PART = re.compile(r"[A-Za-z]+|\d+")


def _spell_code(code: str, text: str) -> str:
    """`text` with the words that spell the letter-digit `code` (`two-factor authentication` for
    2FA, `three-dimensional` for 3D) replaced by the code, so every guard sees one name on both sides."""
    target = code.casefold().replace("-", "")
    if not (3 <= len(target) <= 8) or stem(code.casefold()) in {stem(w.casefold()) for w in words(text)}:
        return text
    parts = list(_PART.finditer(text))
    initials = [NUMBER_WORDS.get(m.group().casefold(), m.group() if m.group().isdigit()
                                 else m.group()[0].casefold()) for m in parts]
    for i in range(len(parts)):
        spelled = ""
        for j in range(i, len(parts)):
            spelled += initials[j]
            if spelled == target and j > i:
                return text[:parts[i].start()] + code + text[parts[j].end():]
            if not target.startswith(spelled):
                break
    return text


def align_codes(a: str, b: str) -> tuple[str, str]:
    """Both texts with each side's letter-digit codes (2FA, 4WD) written as codes on the other."""
    for code in entities(a):
        if is_code(code):
            b = _spell_code(code, b)
    for code in entities(b):
        if is_code(code):
            a = _spell_code(code, a)
    return a, b


def guard_entities(a: str, b: str) -> str | None:
    """An entity of one side must appear on the other, in any case (`UK` vs. an all-lowercase `uk`),
    or spelled out (`PAC` vs. `porting authorisation code`)."""
    wa, wb = {stem(w) for w in words(a)}, {stem(w) for w in words(b)}
    missing = ({e for e in entities(a) if stem(e) not in wb and not spelled_out(e, b)}
               | {e for e in entities(b) if stem(e) not in wa and not spelled_out(e, a)})
    return None if not missing else f"entities differ: {sorted(missing)}"


def guard_substitution(a: str, b: str) -> str | None:
    swapped = substitution(a, b)
    return None if swapped is None else f"words swapped: {swapped[0]} -> {swapped[1]}"


def guard_long_prefix(a: str, b: str) -> str | None:
    return "long prompt differs after a shared prefix" if long_prefix(a, b) else None


def guard_direction(a: str, b: str) -> str | None:
    da, db = direction(a), direction(b)
    if da is None or db is None:
        return None
    crossed = (da[0] & db[1]) | (da[1] & db[0])
    return f"direction reversed: {sorted(crossed)}" if crossed else None


GUARDS: tuple[Guard, ...] = (guard_long_prefix, guard_numbers, guard_negation, guard_question_kind,
                             guard_entities, guard_direction, guard_order, guard_substitution)


def first_conflict(a: str, b: str, guards: tuple[Guard, ...] = GUARDS) -> str | None:
    """The first reason the cached text `a` must not answer `b`, or None when every guard passes."""
    a, b = align_codes(a, b)
    for guard in guards:
        reason = guard(a, b)
        if reason is not None:
            return reason
    return None


def warm() -> None:
    """Load the word tables now (~0.6 s, once a process), not in the first lookup's latency."""
    vocabulary()
    synonyms("warm", "hot")


def spelling_variant(a: str, b: str) -> bool:
    """The same words in the same order up to typos, stems and case (`acount` == `account`): a near
    repeat whose answer holds whatever its embeddings say (typos push a short text's cosine down)."""
    wa, wb = [w.casefold() for w in words(a)], [w.casefold() for w in words(b)]
    return len(wa) == len(wb) > 0 and all(same_word(x, y) for x, y in zip(wa, wb, strict=True))
