"""Words of a query as the guards see them: tokens, stems, function words, number and time words.

Shared by the guards (guards.py) and the operand-order guard (order.py); pure and cached.
"""

from __future__ import annotations

import re
from functools import lru_cache


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _set_order(text: str) -> list[str]:
    return text.split()

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*(?:\d[\dA-Za-z-]*)?|\d[\d,.:/%-]*\w*")
_NEGATION = _set("""not no never none nothing nobody nowhere neither nor without cannot
    can't don't doesn't didn't isn't aren't wasn't weren't won't wouldn't shouldn't couldn't
    haven't hasn't hadn't mustn't needn't""")
NUMBER_WORDS = {w: str(i) for i, w in enumerate(list(_set_order(
    "zero - two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    " sixteen seventeen eighteen nineteen twenty")))}
NUMBER_WORDS.update(thirty="30", forty="40", fifty="50", sixty="60", seventy="70", eighty="80",
                     ninety="90", hundred="100", thousand="1000", million="1000000", half="0.5",
                     twice="2", third="3rd", double="2", dozen="12")
del NUMBER_WORDS["-"]
TIME_WORDS = _set("""monday tuesday wednesday thursday friday saturday sunday weekday weekdays
    weekend weekends january february march april may june july august september october
    november december today tomorrow yesterday tonight morning afternoon evening night noon
    midnight""")
CLOCK_UNITS = ("am", "pm")  # times only after a number: "7 am", never "am I entitled"
# Function words and politeness: paraphrases change these freely, so they never count as content.
STOP = _set("""a an the and or but if of to in on at by for from with about into onto as is
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


def _strip_chatter(text: str) -> str:
    text = _CHATTER.sub("", text)
    tail = text[-40:].casefold()
    return _CLOSING.sub("", text) if "thank" in tail or "cheers" in tail else text  # regex only if needed


def words(text: str) -> list[str]:
    core = _strip_chatter(text)
    return [w.replace("’", "'").strip("'-.,:/") for w in _WORD.findall(core)]


@lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    w = word.casefold().removesuffix("'s")
    for pattern, repl in _SPELLING:
        w = pattern.sub(repl, w)
    for suffix in ("ing", "ed", "es", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def is_negation(word: str) -> bool:
    return word in _NEGATION or word.endswith("n't")


# Durations the numbers guard compares as quantities (`14 days` == `two weeks`), in seconds.
DURATION_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400, "week": 604_800,
                    "fortnight": 1_209_600}


def content_words(text: str) -> list[str]:
    """Words that carry the question: not function words, numbers, times or the unit of a duration
    (the numbers guard's job) nor plain negations (the negation guard's: `can't` and `cannot` are
    the same word)."""
    low = [w.casefold() for w in words(text)]
    return [w for prev, w in zip(["", *low], low, strict=False)
            if not {w, w.removesuffix("'s"), stem(w)} & STOP and not w[:1].isdigit()
            and w not in NUMBER_WORDS and w not in TIME_WORDS and not is_negation(w)
            and not (w.removesuffix("s") in DURATION_SECONDS
                     and (prev[:1].isdigit() or prev in NUMBER_WORDS))]
