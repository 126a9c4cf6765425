"""Operand order: `is A faster than B` is not `is B faster than A`, `7 minus 3` is not `3 minus 7`.

Embeddings and the other guards see the same words and numbers on both sides, so a question whose
operands were swapped around an asymmetric relation would get the other's answer. This module reads
every asymmetric relation of a text as (first role, second role): the operand tokens (numbers,
units, content words, names) on each side of the relation word, put in one canonical order so that
rewordings agree:

  comparative   X faster / more expensive / less than Y     (X, Y); the lower member flips: X slower
                                                             than Y is (Y, X)
  sequence      X before Y; X after Y is (Y, X)
  arithmetic    X minus / divided by / over / to the power of / percent of / mod / vs Y; X - Y, X / Y,
                X ^ Y; subtract / deduct Y from X; divide X by Y; ratio of X to Y     (X, Y)
  route         from X to Y; to Y from X; X to Y between names, numbers or units      (X, Y)
  conversion    two units of one dimension: (source, target), the source being the unit after
                `how many` / `how much`'s object (`how many km is 26 miles`: (mile, km)), else the first
                (`26 miles in km`, `convert 26 miles to km`)

Two texts conflict when an operand of one's first role is in the other's second role *and* one of
its second role is in the other's first role: a real swap. Context that merely moves (`In London,
is a train faster than a car?`) crosses one way only and passes.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pipeline.semantic.lexicon import NUMBER_WORDS, STOP, is_negation, stem, words

Roles = tuple[frozenset[str], frozenset[str]]


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Comparatives whose converse flips the roles: `X slower than Y` == `Y faster than X`.
_LOWER = _set("""less fewer smaller slower younger newer lighter shorter lower worse cheaper
    weaker thinner narrower colder cooler earlier closer nearer softer easier quieter poorer
    shallower lesser tinier""")
_COMPARATIVE = _set("more less fewer rather other else worse best least most")
_SUBTRACT = frozenset({"subtract", "deduct"})
_INFIX = frozenset({"minus", "divided", "over", "power", "mod", "modulo", "vs", "versus"})
_HOW = frozenset({"many", "much"})
_SEGMENT = re.compile(r"[.?!;\n]+")
# Spaced operators between numbers (`7 - 3`, `12 / 4`, `2 ^ 8`): written out so they read as words.
_OPERATOR = re.compile(r"(?<=\d)\s*([-−–/÷^])\s+(?=\d)|(?<=\d)\s+([-−–/÷^])\s*(?=\d)")
_OPERATOR_WORD = {"-": " minus ", "−": " minus ", "–": " minus ", "/": " divided by ",
                  "÷": " divided by ", "^": " to the power of "}
_CURRENCY = re.compile(r"([$£€¥])\s?(\d[\d,.]*)")
_CURRENCY_WORD = {"$": "dollars", "£": "pounds", "€": "euros", "¥": "yen"}
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")
_GLUED = re.compile(r"(\d)([A-Za-z]+)\b")


def _units() -> dict[str, tuple[str, frozenset[str]]]:
    """alias -> (unit, dimensions). `pound` is a weight and a currency: it matches either."""
    table = {
        "length": "mm=millimetre,millimeter cm=centimetre,centimeter m=metre,meter "
                  "km=kilometre,kilometer,kms inch=inches ft=foot,feet "
                  "yd=yard mile=mi,miles nautical-mile=nmi light-year=lightyear",
        "mass": "mg=milligram g=gram,gramme kg=kilo,kilogram,kilogramme,kgs lb=lbs,pound "
                "oz=ounce stone=stones ton=tons tonne=tonnes",
        "volume": "ml=millilitre,milliliter l=litre,liter gallon=gal pint quart cup "
                  "tbsp=tablespoon tsp=teaspoon cc",
        "temperature": "celsius=centigrade,°c fahrenheit=°f kelvin",
        "time": "second=sec,secs minute=min,mins hour=hr,hrs day week fortnight month year=yr,yrs "
                "decade century millisecond=ms",
        "speed": "mph kph=km/h,kmh knot",
        "area": "acre hectare=ha",
        "data": "bit byte kb=kilobyte mb=megabyte gb=gigabyte tb=terabyte",
        "energy": "calorie=kcal,cal joule kj=kilojoule kwh",
        "money": "dollar=usd,buck euro=eur pound=gbp,quid yen=jpy rupee=inr yuan=cny,rmb "
                 "franc=chf peso",
        "angle": "degree radian",
    }
    out: dict[str, tuple[str, set[str]]] = {}
    for dimension, spec in table.items():
        for item in spec.split():
            unit, _, aliases = item.partition("=")
            for alias in (unit, *filter(None, aliases.split(","))):
                out.setdefault(alias, (unit, set()))[1].add(dimension)
    # `lb` and `gbp` are both a `pound`: one name, so `pound` reads as a weight and a currency
    return {alias: ("pound" if name == "lb" else name, frozenset(dims))
            for alias, (name, dims) in out.items()}


_UNIT = _units()


def unit(word: str) -> tuple[str, frozenset[str]] | None:
    """The canonical unit of a word (`kilometres` -> km), trying singular forms; None if not a unit."""
    w = word.casefold()
    for candidate in (w, w.removesuffix("s"), w.removesuffix("es")):
        if candidate in _UNIT:
            return _UNIT[candidate]
    return None


def _operand(word: str, name: bool = False) -> str | None:
    """The token an operand is compared by: a number's digits, a unit's name, a word's stem;
    `name`: a capitalised word inside a sentence (`Go`, `May`), kept even if it looks like a function word."""
    low = word.casefold()
    if name and low != "i":
        return stem(low)
    if low in NUMBER_WORDS:
        return NUMBER_WORDS[low]
    if low[:1].isdigit():
        digits = _THOUSANDS.sub("", low).removesuffix("%")
        return digits if digits.replace(".", "").isdigit() else low  # `2fa`, `4k`: a code, kept whole
    found = unit(low)
    if found is not None:
        return found[0]
    if low in STOP or is_negation(low) or low in _LOWER or low in _INFIX or low in ("than", "more"):
        return None
    return stem(low)


def _unglue(match: re.Match[str]) -> str:
    return f"{match.group(1)} {match.group(2)}" if unit(match.group(2)) else match.group(0)


def _prepare(text: str) -> str:
    text = _CURRENCY.sub(lambda m: f"{m.group(2)} {_CURRENCY_WORD[m.group(1)]}", text)
    text = _GLUED.sub(_unglue, text)  # `26km` -> `26 km`
    return _OPERATOR.sub(lambda m: _OPERATOR_WORD[m.group(1) or m.group(2)], text)


def _span(raw: list[str], start: int, end: int) -> frozenset[str]:
    start = max(start, 0)
    found = (_operand(w, name=i > 0 and w[:1].isupper()) for i, w in enumerate(raw[start:end], start))
    return frozenset(o for o in found if o is not None)


def _salient(word: str) -> bool:
    """A name, number or unit: what stands on both sides of a bare `X to Y` route."""
    low = word.casefold()
    return word[:1].isupper() or low[:1].isdigit() or low in NUMBER_WORDS or unit(low) is not None


def _segment_relations(raw: list[str]) -> list[Roles]:
    tokens = [w.casefold() for w in raw]
    n = len(tokens)
    out: list[Roles] = []

    def infix(cue: int, after: int, flip: bool = False) -> None:
        first, second = _span(raw, 0, cue), _span(raw, after, n)
        out.append((second, first) if flip else (first, second))

    for i, t in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < n else ""
        prev = tokens[i - 1] if i else ""
        if t == "than" and i:
            # the comparative is not an operand; in `better to rent than to buy`, `rent` is one
            if i >= 2 and tokens[i - 2] in ("more", "less", "fewer"):
                cue = i - 2
            else:
                cue = i - 1 if prev.endswith("er") or prev in _COMPARATIVE else i
            lower = prev in _LOWER or (i >= 2 and tokens[i - 2] in ("less", "fewer"))
            infix(cue, i + 1, flip=lower)
        elif t in ("before", "after") and "or" not in (prev, nxt) and "and" not in (prev, nxt):
            infix(i, i + 1, flip=t == "after")
        elif t in _INFIX and (t != "over" or (prev[:1].isdigit() and nxt[:1].isdigit())):
            skip = 1 + (t == "divided" and nxt == "by") + (t == "power" and nxt == "of")
            infix(i, i + skip)
        elif (t.endswith("%") or t in ("percent", "percentage")) and nxt == "of":
            if t == "percentage" or prev in ("what", "which"):  # what percentage of X is Y: (Y, X)
                verb = next((j for j in range(i + 2, n) if tokens[j] in ("is", "are", "was")), n)
                out.append((_span(raw, verb + 1, n), _span(raw, i + 2, verb)))
            else:
                out.append((_span(raw, 0, i + 1), _span(raw, i + 2, n)))
        elif t in _SUBTRACT or (t == "take" and "away" in tokens[i + 1:i + 4]):
            source = next((j for j in range(i + 1, n) if tokens[j] == "from"), None)
            if source is not None:
                out.append((_span(raw, source + 1, n), _span(raw, i + 1, source)))
        elif t == "divide":
            by = next((j for j in range(i + 1, n) if tokens[j] == "by"), None)
            if by is not None:
                out.append((_span(raw, i + 1, by), _span(raw, by + 1, n)))
        elif t == "ratio" and nxt == "of":
            to = next((j for j in range(i + 2, n) if tokens[j] == "to"), None)
            if to is not None:
                out.append((_span(raw, i + 2, to), _span(raw, to + 1, n)))
        elif t == "from" and not any(s in _SUBTRACT or s == "take" for s in tokens[:i]):
            to = next((j for j in range(i + 1, n) if tokens[j] in ("to", "into", "until", "till")), None)
            back = next((j for j in range(i - 1, -1, -1) if tokens[j] in ("to", "into")), None)
            if to is not None:  # from X to Y
                out.append((_span(raw, i + 1, to), _span(raw, to + 1, n)))
            elif back is not None:  # to Y from X
                out.append((_span(raw, i + 1, n), _span(raw, back + 1, i)))
        elif t == "to" and "from" not in tokens and 0 < i < n - 1 and _salient(raw[i - 1]) \
                and _salient(raw[i + 1]):
            out.append((_span(raw, i - 1, i), _span(raw, i + 1, i + 2)))
    conversion = _conversion(tokens)
    if conversion is not None:
        out.append(conversion)
    return out


def _conversion(tokens: list[str]) -> Roles | None:
    """(source, target) of two units of one dimension: `how many U1 ... U2` converts U2 to U1."""
    found: list[tuple[int, str, frozenset[str]]] = []
    for i, t in enumerate(tokens):
        u = unit(t)
        if u is not None and all(u[0] != f[1] for f in found):
            found.append((i, *u))
    for k, (i, first, dims) in enumerate(found):
        for _, second, other in found[k + 1:]:
            if dims & other:
                asked = any(tokens[j] in _HOW for j in range(max(i - 2, 0), i))
                source, target = (second, first) if asked else (first, second)
                return frozenset({source}), frozenset({target})
    return None


@lru_cache(maxsize=65_536)
def relations(text: str) -> tuple[Roles, ...]:
    """Every asymmetric relation of the text as (first role, second role) operand sets; an operand
    on both sides of one relation says nothing about order and is dropped."""
    out: list[Roles] = []
    for segment in _SEGMENT.split(_prepare(text)):
        for first, second in _segment_relations(words(segment)):
            both = first & second
            out.append((first - both, second - both))
    return tuple(out)


def reversed_operands(a: str, b: str) -> list[str] | None:
    """Operands that swapped roles between `a` and `b` (both ways), or None."""
    for first_a, second_a in relations(a):
        for first_b, second_b in relations(b):
            forward, back = first_a & second_b, second_a & first_b
            if forward and back:
                return sorted(forward | back)
    return None


def guard_order(a: str, b: str) -> str | None:
    swapped = reversed_operands(a, b)
    return None if swapped is None else f"operands reversed: {swapped}"
