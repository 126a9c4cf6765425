"""The shadow judge: how far a served answer agrees with the LLM's fresh answer, in [0, 1].

Pure: no Kafka, no HTTP. The LLM worker calls it (it is handed an AnswerJudge by the app, so
workers import nothing from here), and for the LLM rubric it sends `rubric_messages` through its
own upstream client and reads the reply with `parse_rubric_score`.

Rules, first match wins:
  letter     the question lists options (A-D) or both answers are a bare letter: the first
             standalone letter of each must be the same (1 or 0)
  number     both answers end on a number (a short numeric answer, `#### N`, or a short last
             line with a number): the final numbers must be equal (1 or 0)
  short      both answers are a few words: the same words after normalising, or the shorter
             said inside the longer without a negation it lacks (1 or 0)
  free text  otherwise: cosine of the two answers' embeddings, clamped to [0, 1] ("embedding:<name>");
             with mode "llm" the LLM rubric scores it instead, and the embedding stays the fallback
             when the rubric call fails or its reply has no score
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.eval.labelled import answer_letter, final_number
from pipeline.routing.features import multiple_choice

JUDGE_MODES = ("auto", "llm")
SHORT_WORDS = 8  # an answer of at most this many words is judged by its words, not embedded
_BARE_LETTER = re.compile(r"^\W*\(?[A-D]\)?\W*$")
_HAS_NUMBER = re.compile(r"\d")
_NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "neither", "nor", "cannot", "isn",
                        "aren", "wasn", "weren", "don", "doesn", "didn", "won", "can"})


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Verdict:
    judge: str  # exact, embedding:<embedder>, llm
    score: float


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.casefold()).split()


def _is_letter(question: str, answer: str) -> bool:
    return multiple_choice(question) or bool(_BARE_LETTER.match(answer))


def _numeric(answer: str) -> bool:
    """An answer that ends on a number on purpose, not prose that happens to hold one."""
    if final_number(answer) is None:
        return False
    if "####" in answer or len(_words(answer)) <= SHORT_WORDS:
        return True
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return len(_words(last)) <= SHORT_WORDS and bool(_HAS_NUMBER.search(last))


def _same_number(a: str, b: str) -> bool:
    x, y = final_number(a), final_number(b)
    return x is not None and y is not None and abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y))


def _contains(longer: list[str], shorter: list[str]) -> bool:
    n = len(shorter)
    return n > 0 and any(longer[i:i + n] == shorter for i in range(len(longer) - n + 1))


def _short_agree(a: str, b: str) -> bool:
    x, y = _words(a), _words(b)
    if x == y:
        return True
    shorter, longer = sorted((x, y), key=len)
    # "Paris" inside "the capital is Paris" agrees; inside "it is not Paris" it does not
    added = set(longer) - set(shorter)
    return _contains(longer, shorter) and not (added & _NEGATIONS)


def exact_verdict(question: str, served: str, shadow: str) -> Verdict | None:
    """The exact judgement when one applies (letters, numbers, short answers); None for free text."""
    if not served.strip() or not shadow.strip():
        return Verdict("exact", float(served.strip() == shadow.strip()))
    if _is_letter(question, served) or _is_letter(question, shadow):
        a, b = answer_letter(served), answer_letter(shadow)
        if multiple_choice(question) or (a is not None and b is not None):
            return Verdict("exact", float(a is not None and a == b))
    if _numeric(served) and _numeric(shadow):
        return Verdict("exact", float(_same_number(served, shadow)))
    if len(_words(served)) <= SHORT_WORDS and len(_words(shadow)) <= SHORT_WORDS:
        return Verdict("exact", float(_short_agree(served, shadow)))
    return None


def embedding_verdict(embedder: Embedder, served: str, shadow: str) -> Verdict:
    vectors = np.asarray(embedder.embed([served, shadow]), dtype=np.float64)
    a, b = vectors[0], vectors[1]
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b) / norm if norm > 0 else 0.0
    return Verdict(f"embedding:{embedder.name}", min(1.0, max(0.0, cosine)))


# -- the LLM rubric -----------------------------------------------------------------------------

RUBRIC = ("You grade whether a candidate answer says the same as a reference answer to a question. "
          "Judge meaning and correctness, not wording or length. Reply with one number between 0 "
          "and 1 only: 1 when they agree fully, 0 when they contradict or the candidate is wrong, "
          "in between for partial agreement.")
_RUBRIC_BODY_CHARS = 6000  # each text in the rubric prompt is cut to this: the judge call stays small
_SCORE = re.compile(r"(?<![\w.-])(\d+(?:\.\d+)?|\.\d+)\s*(%|/\s*(\d+(?:\.\d+)?))?")


def _cut(text: str) -> str:
    return text if len(text) <= _RUBRIC_BODY_CHARS else text[:_RUBRIC_BODY_CHARS] + " [...]"


def rubric_messages(question: str, served: str, shadow: str) -> list[dict[str, str]]:
    """The judge call's chat: the reference is the LLM's own answer, the candidate the served one."""
    return [
        {"role": "system", "content": RUBRIC},
        {"role": "user", "content": f"Question:\n{_cut(question)}\n\nReference answer:\n{_cut(shadow)}"
                                    f"\n\nCandidate answer:\n{_cut(served)}\n\nScore (0 to 1):"},
    ]


def parse_rubric_score(reply: str) -> float | None:
    """The first score in a judge's reply: 0.8, .8, "Score: 1", 80%, 4/5, 8 (read as out of 10);
    None when it holds none in range (the caller falls back to the embedding)."""
    match = _SCORE.search(reply)
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(3) is not None:
        denominator = float(match.group(3))
        value = value / denominator if denominator > 0 else math.inf
    elif match.group(2) == "%":
        value /= 100
    elif 1 < value <= 10:
        value /= 10
    return value if 0.0 <= value <= 1.0 else None


# -- what the LLM worker is handed ----------------------------------------------------------------

class AnswerJudge:
    """Judge settings and the embedder for free text, loaded on first use."""

    def __init__(self, mode: str = "auto", embedder: str = "static") -> None:
        if mode not in JUDGE_MODES:
            raise ValueError(f"unknown judge mode {mode!r}: {', '.join(JUDGE_MODES)}")
        self.mode = mode
        self.embedder_name = embedder
        self._embedder: Embedder | None = None

    @property
    def uses_llm(self) -> bool:
        return self.mode == "llm"

    def embedder(self) -> Embedder:
        if self._embedder is None:
            from pipeline.semantic.embedders import make_embedder

            self._embedder = make_embedder(self.embedder_name)
        return self._embedder

    def exact(self, question: str, served: str, shadow: str) -> Verdict | None:
        return exact_verdict(question, served, shadow)

    def embedding(self, served: str, shadow: str) -> Verdict:
        return embedding_verdict(self.embedder(), served, shadow)

    def rubric_messages(self, question: str, served: str, shadow: str) -> list[dict[str, str]]:
        return rubric_messages(question, served, shadow)

    def parse(self, reply: str) -> float | None:
        return parse_rubric_score(reply)
