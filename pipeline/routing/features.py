"""Cheap text features for the difficulty score: lengths, digits, maths, code, task verbs (~20 µs).

`text_features` returns BASE_NAMES then MATH_NAMES; the list is append-only, and a model uses the
first `len(feat_mean)` of them (the multiple-choice head: the 12 base ones; the open head: all).
MATH_NAMES are the multi-step cues of a word problem: how many (distinct) numbers, sentences,
quantity words (each, per, twice, remaining...), percentages, money, decimals, fractions.
"""

from __future__ import annotations

import math
import re

import numpy as np

_MATH = re.compile(r"[=+*/^<>%$]|\b(?:sum|product|percent|ratio|probability|equation|solve|integral"
                   r"|derivative)\b")
_CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|[{};]|\bfunction\b|\bSELECT\b|#include")
_CHOICE = re.compile(r"^\s*[A-D][.)]\s", re.M)
_REASON = re.compile(r"\b(?:prove|derive|explain why|step by step|compare|analy[sz]e|evaluate|justify"
                     r"|design)\b", re.I)
_WRITE = re.compile(r"\b(?:write|compose|draft|story|poem|essay|email|blog|rewrite)\b", re.I)
_NUM = re.compile(r"\d+(?:[.,]\d+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE = re.compile(r"[.!?](?:\s|$)")
_QUANTITY = re.compile(r"\b(?:each|every|per|twice|thrice|half|double|triple|times|total|remaining|left"
                       r"|rest|more|less|fewer|than|percent|average|after|before|then|if)\b", re.I)
_PART = re.compile(r"\b(?:half|third|quarter|fifth)\b", re.I)

BASE_NAMES = ("log_chars", "log_words", "digit_share", "log_numbers", "math_marks", "code_marks", "choices",
              "reasoning_verbs", "writing_verbs", "questions", "log_lines", "mean_word_len")
MATH_NAMES = ("log_numbers_all", "log_distinct_numbers", "log_sentences", "log_quantity_words", "percent",
              "money", "decimal", "slash_fraction", "log_max_number", "word_fraction")
NAMES = BASE_NAMES + MATH_NAMES


def multiple_choice(text: str) -> bool:
    """An MMLU-style prompt (three or more `A.`/`B)` option lines): scored by the choice head."""
    return len(_CHOICE.findall(text)) >= 3


def _base_features(text: str) -> list[float]:
    words = text.split()
    n_chars = max(len(text), 1)
    return [
        math.log1p(len(text)),
        math.log1p(len(words)),
        sum(c.isdigit() for c in text) / n_chars,
        math.log1p(len(_NUM.findall(text))),
        math.log1p(len(_MATH.findall(text))),
        math.log1p(len(_CODE.findall(text))),
        min(len(_CHOICE.findall(text)), 6) / 6,
        math.log1p(len(_REASON.findall(text))),
        math.log1p(len(_WRITE.findall(text))),
        math.log1p(text.count("?")),
        math.log1p(text.count("\n")),
        (sum(len(w) for w in words) / len(words)) if words else 0.0,
    ]


def _number_value(token: str) -> float:
    try:
        return float(token.replace(",", ""))
    except ValueError:  # "1.2.3"
        return 0.0


def _math_features(text: str) -> list[float]:
    numbers = _NUMBER.findall(text)
    largest = max((_number_value(n) for n in numbers), default=0.0)
    return [
        math.log1p(len(numbers)),
        math.log1p(len(set(numbers))),
        math.log1p(len(_SENTENCE.findall(text))),
        math.log1p(len(_QUANTITY.findall(text))),
        float("%" in text),
        float("$" in text),
        float(re.search(r"\d\.\d", text) is not None),
        float(re.search(r"\d/\d", text) is not None),
        math.log1p(min(largest, 1e12)),
        float(_PART.search(text) is not None),
    ]


def text_features(text: str, count: int = len(NAMES)) -> np.ndarray:
    """The first `count` features of NAMES (the math ones are skipped when not asked for)."""
    values = _base_features(text)
    if count > len(BASE_NAMES):
        values += _math_features(text)
    return np.array(values[:count], np.float32)
