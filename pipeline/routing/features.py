"""Cheap text features for the difficulty score: lengths, digits, maths, code, task verbs (~10 µs)."""

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

NAMES = ("log_chars", "log_words", "digit_share", "log_numbers", "math_marks", "code_marks", "choices",
         "reasoning_verbs", "writing_verbs", "questions", "log_lines", "mean_word_len")


def text_features(text: str) -> np.ndarray:
    words = text.split()
    n_chars = max(len(text), 1)
    return np.array([
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
    ], np.float32)
