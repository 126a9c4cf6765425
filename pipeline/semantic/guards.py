"""Guards against the known false hits of semantic caches: pure functions over two texts.

Embeddings put "is X safe" next to "is X not safe", "2-bedroom" next to "3-bedroom" and
"Microsoft" next to "Apple". Each guard extracts what must be equal for one answer to serve both
and returns a reason when it is not, or None. `first_conflict` runs them cheapest first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from difflib import SequenceMatcher
from functools import lru_cache

from pipeline.semantic.embedders import TOKENIZER_FILE


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _set_order(text: str) -> list[str]:
    return text.split()

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d[\d,.:/%-]*\w*")
_NEGATION = _set("""not no never none nothing nobody nowhere neither nor without cannot
    can't don't doesn't didn't isn't aren't wasn't weren't won't wouldn't shouldn't couldn't
    haven't hasn't hadn't mustn't needn't""")
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(list(_set_order(
    "zero - two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    " sixteen seventeen eighteen nineteen twenty")))}
_NUMBER_WORDS.update(thirty="30", forty="40", fifty="50", sixty="60", seventy="70", eighty="80",
                     ninety="90", hundred="100", thousand="1000", million="1000000", half="0.5",
                     twice="2", third="3rd", double="2", dozen="12")
del _NUMBER_WORDS["-"]
_TIME_WORDS = _set("""monday tuesday wednesday thursday friday saturday sunday weekday weekdays
    weekend weekends january february march april may june july august september october
    november december today tomorrow yesterday tonight morning afternoon evening night noon
    midnight""")
_CLOCK_UNITS = ("am", "pm")  # times only after a number: "7 am", never "am I entitled"
# Function words and politeness: paraphrases change these freely, so they never count as content.
_STOP = _set("""a an the and or but if of to in on at by for from with about into onto as is
    are was were be been being am do does did done doing have has had having can could will would
    shall should may might must i me my mine we us our you your yours it its this that these those
    there here what which who whom whose when where why how please thanks thank hi hello hey just
    so also any some get got go going way able possible need want like i'd i'm i've it's what's
    there's let let's tell know kindly ok okay um uh er erm hmm ah oh much many""")
# Greetings, apologies and thanks that open or close a message say nothing about the question.
_OPENERS = (r"(hi|hiya|hello|hey|good morning|good afternoon|good evening|morning|afternoon|evening)"
            r"( team| there| all| folks)?|um|uh|er|erm|so|yeah|ok|okay"
            r"|sorry( to bother you| to trouble you)?|(quick|silly|stupid|dumb|simple) question")
_CLOSERS = r"(many )?thanks( so much| a lot| in advance)?|thank you( so much| in advance)?|cheers"
_CHATTER = re.compile(rf"^\W*(({_OPENERS})\b[\s,!.]*(but\b[\s,]*)?)+", re.I)
_CLOSING = re.compile(rf"(?<![\w'])(({_CLOSERS})\b[\s,!.]*)+$", re.I)
_SPELLING = ((re.compile(r"our\b"), "or"), (re.compile(r"re\b"), "er"),
             (re.compile(r"is(e|ed|ing)\b"), r"iz\1"))  # British -> American spelling
_OPPOSITE_PREFIXES = ("un", "non", "in", "im", "dis", "de", "ir", "il", "anti", "counter")
LONG_PROMPT_CHARS = 400
_HYPHEN = re.compile(r"-(?=[a-z])|(?<=[a-z])-")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")
_CLOCK = re.compile(r"[\d.,:/%]+(am|pm)$")


def _strip_chatter(text: str) -> str:
    text = _CHATTER.sub("", text)
    tail = text[-40:].casefold()
    return _CLOSING.sub("", text) if "thank" in tail or "cheers" in tail else text  # regex only if needed


def words(text: str) -> list[str]:
    core = _strip_chatter(text)
    return [w.replace("’", "'").strip("'-.,:/") for w in _WORD.findall(core)]


@lru_cache(maxsize=65_536)
def _stem(word: str) -> str:
    w = word.casefold().removesuffix("'s")
    for pattern, repl in _SPELLING:
        w = pattern.sub(repl, w)
    for suffix in ("ing", "ed", "es", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def numbers(text: str) -> frozenset[str]:
    """Numbers (digits or words, `£1,000` == `1000`), weekdays, months and relative dates."""
    out: list[str] = []
    parts = [p for w in words(text) for p in _HYPHEN.split(w.casefold())]
    for prev, low in zip(["", *parts], parts, strict=False):
        number = prev[:1].isdigit() or prev in _NUMBER_WORDS
        if low[:1].isdigit():
            digits = _THOUSANDS.sub("", low)
            unit = _CLOCK.match(digits)
            out.append(digits if unit is None else digits[:-2].removesuffix(":00"))
            if unit is not None:
                out.append(unit.group(1))
        elif low in _NUMBER_WORDS:
            out.append(_NUMBER_WORDS[low])
        elif low in _TIME_WORDS or (low in _CLOCK_UNITS and number):
            out.append(low.removesuffix("s"))
        elif low == "percent" and number and out:
            out.append(out.pop().removesuffix("%") + "%")  # "fifteen percent" == "15%"
    return frozenset(out)


def negation_parity(text: str) -> int:
    cues = (w.casefold() for w in words(text))
    return sum(_negation(w) or w.startswith("non-") for w in cues) % 2


def entities(text: str) -> frozenset[str]:
    """Named things: capitalised words not opening a sentence, acronyms, letter-digit codes (P60)."""
    out = set()
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text.strip()):
        for i, w in enumerate(words(sentence)):
            if w in ("I", "I'd", "I'm", "I've", "I'll", "OK") or len(w) < 2:
                continue
            acronym = w.isupper() or (any(c.isdigit() for c in w) and any(c.isalpha() for c in w))
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


def same_word(x: str, y: str) -> bool:
    x, y = _stem(x), _stem(y)
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


def _negation(word: str) -> bool:
    return word in _NEGATION or word.endswith("n't")


def content_words(text: str) -> list[str]:
    """Words that carry the question: not function words, numbers or times (the numbers guard's
    job) nor plain negations (the negation guard's: `can't` and `cannot` are the same word)."""
    low = (w.casefold() for w in words(text))
    return [w for w in low if not {w, w.removesuffix("'s"), _stem(w)} & _STOP and not w[:1].isdigit()
            and w not in _NUMBER_WORDS and w not in _TIME_WORDS and not _negation(w)]


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
    return (only_a, only_b) if only_a or only_b else None


_DIRECTION = re.compile(r"\b(?:from|convert|transfer|move|migrate|switch|translate|put|swap|port)\b(.*?)"
                        r"\b(?:to|into|onto)\b(.*)", re.I | re.S)


def direction(text: str) -> tuple[set[str], set[str]] | None:
    """(source words, target words) of a move: `from savings to current account`, `convert PDF to Word`."""
    m = _DIRECTION.search(text)
    if m is None:
        return None
    return {_stem(w) for w in content_words(m.group(1))}, {_stem(w) for w in content_words(m.group(2))[:4]}


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


def guard_negation(a: str, b: str) -> str | None:
    return None if negation_parity(a) == negation_parity(b) else "negation differs"


def spelled_out(acronym: str, text: str) -> bool:
    """`PAC` in `a porting authorisation code`: consecutive words whose initials spell the acronym."""
    n = len(acronym)
    if not (acronym.isalpha() and 3 <= n <= 6):
        return False
    initials = "".join(w[0] for w in words(text.casefold()))
    return acronym.casefold() in initials


def guard_entities(a: str, b: str) -> str | None:
    """An entity of one side must appear on the other, in any case (`UK` vs. an all-lowercase `uk`),
    or spelled out (`PAC` vs. `porting authorisation code`)."""
    wa, wb = {_stem(w) for w in words(a)}, {_stem(w) for w in words(b)}
    missing = ({e for e in entities(a) if _stem(e) not in wb and not spelled_out(e, b)}
               | {e for e in entities(b) if _stem(e) not in wa and not spelled_out(e, a)})
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


GUARDS: tuple[Guard, ...] = (guard_long_prefix, guard_numbers, guard_negation, guard_entities,
                             guard_direction, guard_substitution)


def first_conflict(a: str, b: str, guards: tuple[Guard, ...] = GUARDS) -> str | None:
    """The first reason the cached text `a` must not answer `b`, or None when every guard passes."""
    for guard in guards:
        reason = guard(a, b)
        if reason is not None:
            return reason
    return None


def spelling_variant(a: str, b: str) -> bool:
    """The same words in the same order up to typos, stems and case (`acount` == `account`): a near
    repeat whose answer holds whatever its embeddings say (typos push a short text's cosine down)."""
    wa, wb = [w.casefold() for w in words(a)], [w.casefold() for w in words(b)]
    return len(wa) == len(wb) > 0 and all(same_word(x, y) for x, y in zip(wa, wb, strict=True))
