"""Labelled prompts with gold answers: what our own SLM is labelled on and the pipeline judged by.

One prompt builder (`query_text`) and one scorer (`is_correct`) serve the labeller, the router's
training and `pointsman eval pipeline`, so a label means the same thing in all three.
  MMLU   RouteLLM's prompts joined on the question text with MMLU-Redux's gold answers (items the
         annotators marked ok, or their corrected answer); answered as one letter.
  GSM8K  RouteLLM's prompts; gold = the final number of a response RouteLLM marked correct
         (Mixtral's `#### N` first, else GPT-4's last number); prompts both got wrong have no gold.
Splits are the router's (pipeline.routing.train): MMLU by subject, GSM8K by a hash of the prompt.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import xxhash

from pipeline.eval.datasets import ROUTELLM_DIR
from pipeline.routing.train import gsm8k_split, split

REDUX_DIR = ROUTELLM_DIR.parent / "mmlu-redux"
LETTERS = "ABCD"
MMLU_MAX_TOKENS = 8  # one letter, with room for "B." or "(B)"
GSM8K_MAX_TOKENS = 256  # the pipeline's default answer budget
_WEAK, _STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
_LETTER_INSTRUCTION = "Answer with the letter of the correct option only."
_NUMBER_INSTRUCTION = "Solve it step by step, then give the final answer as a number on the last line."


@dataclass(frozen=True)
class LabelledPrompt:
    question: str  # without options or instruction
    choices: tuple[str, ...]  # empty for an open question
    answer: str  # a letter when there are choices, else a number or a short answer
    strong_correct: bool | None  # the strong model's recorded outcome; None: unknown (assume right)
    dataset: str  # mmlu, gsm8k, file
    group: str  # MMLU subject, else the dataset
    weak_correct: bool | None = None  # RouteLLM's weak model (Mixtral), for the RouteLLM-label router

    @property
    def text(self) -> str:
        return query_text(self.question, self.choices)

    @property
    def max_tokens(self) -> int:
        return MMLU_MAX_TOKENS if self.choices else GSM8K_MAX_TOKENS


def query_text(question: str, choices: Sequence[str] = ()) -> str:
    """The user message sent for a labelled prompt: options lettered A-D, then what to answer."""
    if choices:
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
        return f"{question.strip()}\n{options}\n{_LETTER_INSTRUCTION}"
    return f"{question.strip()}\n{_NUMBER_INSTRUCTION}"


_LETTER = re.compile(r"(?<![A-Za-z])\(?([A-D])(?![A-Za-z])")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


_ARTICLE = re.compile(r"\s+[a-z]")


def answer_letter(answer: str) -> str | None:
    """The first standalone A-D in an answer ("B", "B.", "(B)", "The answer is B"); an "A" that
    starts a phrase ("A chi-squared test ...") is the article, not an option."""
    text = answer.replace("Answer:", " ")
    for match in _LETTER.finditer(text):
        if match.group(1) == "A" and _ARTICLE.match(text, match.end()):
            continue
        return match.group(1)
    return None


def final_number(answer: str) -> float | None:
    """The number a worked answer ends on: after `####` if there is one, else its last number."""
    tail = answer.rsplit("####", 1)[-1] if "####" in answer else answer
    numbers = _NUMBER.findall(tail)
    if not numbers:
        return None
    try:
        return float(numbers[-1].replace(",", "").replace("$", "").rstrip("."))
    except ValueError:
        return None


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def is_correct(prompt: LabelledPrompt, answer: str) -> bool:
    """Letters by the first letter given, numbers by the final number, else normalised exact match."""
    if prompt.choices:
        return answer_letter(answer) == prompt.answer
    gold = final_number(prompt.answer)
    if gold is not None and _normal(prompt.answer).replace(" ", "").replace(".", "").lstrip("-").isdigit():
        got = final_number(answer)
        return got is not None and abs(got - gold) < 1e-6 * max(1.0, abs(gold))
    return _normal(answer) == _normal(prompt.answer)


def _routellm_question(prompt: str) -> str:
    return prompt.rsplit("\nA.", 1)[0].strip()


def _redux_rows(path: Path) -> list[dict[str, str]]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    header = text.split("\n", 1)[0]
    delimiter = ";" if header.count(";") > header.count(",") else ","  # csv.Sniffer fails on these
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def _gold_index(row: dict[str, str]) -> int | None:
    verdict = row.get("error_type", "").strip().lower()
    if verdict == "ok":
        return int(row["answer"])
    corrected = (row.get("correct_answer") or "").strip()
    if verdict == "wrong groundtruth" and corrected[:1].upper() in LETTERS and len(corrected) <= 3:
        return LETTERS.index(corrected[:1].upper())
    if verdict == "wrong groundtruth" and corrected.isdigit() and int(corrected) < 4:
        return int(corrected)
    return None  # no correct answer, several, unclear, expert: not scored


def _ok(value: str) -> bool:
    return value.strip().lower() == "true"


def mmlu_labelled(which: str, root: Path = ROUTELLM_DIR, redux: Path = REDUX_DIR) -> list[LabelledPrompt]:
    """MMLU prompts of the `which` split ("train" / "test") that have a gold answer."""
    csv.field_size_limit(1 << 24)
    out: list[LabelledPrompt] = []
    for path in sorted((root / "mmlu").glob("mmlu_*.csv")):
        subject = path.stem.removeprefix("mmlu_")
        gold_path = redux / f"mmlu_{subject}.csv"
        if split(subject) != which or not gold_path.exists():
            continue
        gold: dict[str, tuple[tuple[str, ...], int]] = {}
        for row in _redux_rows(gold_path):
            index = _gold_index(row)
            if index is not None:
                choices = tuple(str(c) for c in ast.literal_eval(row["choices"]))
                gold[row["question"].strip()] = (choices, index)
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                question = _routellm_question(row["prompt"])
                if question not in gold:
                    continue
                choices, index = gold[question]
                if len(choices) != 4 or f"\nA. {choices[0].strip()}" not in row["prompt"]:
                    continue  # same question, other options: not the item the labels are for
                out.append(LabelledPrompt(question, choices, LETTERS[index], _ok(row[_STRONG]), "mmlu",
                                          subject, _ok(row[_WEAK])))
    return out


def _gsm8k_gold(row: dict[str, str]) -> float | None:
    for model in (_WEAK, _STRONG):
        if _ok(row[model]):
            number = final_number(row[f"{model}_response"])
            if number is not None:
                return number
    return None


def _number_text(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def gsm8k_labelled(which: str, root: Path = ROUTELLM_DIR) -> list[LabelledPrompt]:
    """GSM8K prompts of the `which` split that have a gold number."""
    csv.field_size_limit(1 << 24)
    out: list[LabelledPrompt] = []
    with open(root / "gsm8k_responses.csv", newline="") as f:
        for row in csv.DictReader(f):
            question = row["prompt"].strip()
            gold = _gsm8k_gold(row)
            if gsm8k_split(row["prompt"]) != which or gold is None:
                continue
            out.append(LabelledPrompt(question, (), _number_text(gold), _ok(row[_STRONG]), "gsm8k", "gsm8k",
                                      _ok(row[_WEAK])))
    return out


def strong_response(question: str, root: Path = ROUTELLM_DIR) -> dict[str, str]:
    """GPT-4's recorded GSM8K responses by question: the stand-in answers at their length."""
    csv.field_size_limit(1 << 24)
    with open(root / "gsm8k_responses.csv", newline="") as f:
        return {r["prompt"].strip(): r[f"{_STRONG}_response"] for r in csv.DictReader(f)}


def sample(prompts: Sequence[LabelledPrompt], n: int | None) -> list[LabelledPrompt]:
    """A deterministic sample of n that spans subjects: the n lowest hashes of the text."""
    if n is None or n >= len(prompts):
        return list(prompts)
    return sorted(prompts, key=lambda p: xxhash.xxh64_intdigest(p.text.encode()))[:n]


def labelled_set(name: str, which: str) -> list[LabelledPrompt]:
    if name == "mmlu":
        return mmlu_labelled(which)
    if name == "gsm8k":
        return gsm8k_labelled(which)
    raise ValueError(f"unknown labelled set {name!r}: mmlu or gsm8k")


def read_file(path: Path) -> Iterable[LabelledPrompt]:
    """A user's labelled prompts, one JSON object a line: text, optional choices, answer, optional
    strong_correct. An answer to a multiple-choice line may be its letter, index or option text."""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            text, answer = obj["text"], obj["answer"]
            choices = tuple(str(c) for c in obj.get("choices") or ())
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: want an object with text and answer ({exc})") from None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{n}: text must be a non-empty string")
        if len(choices) > len(LETTERS):
            raise ValueError(f"{path}:{n}: at most {len(LETTERS)} choices")
        if choices:
            answer = _choice_letter(answer, choices)
            if answer is None:
                raise ValueError(f"{path}:{n}: answer must be a letter, an index or one of the choices")
        strong = obj.get("strong_correct")
        strong_correct = None if strong is None else bool(strong)
        yield LabelledPrompt(text, choices, str(answer), strong_correct, "file", "file")


def _choice_letter(answer: object, choices: Sequence[str]) -> str | None:
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return LETTERS[answer]
    if isinstance(answer, str):
        if answer.strip().upper() in LETTERS[:len(choices)] and len(answer.strip()) == 1:
            return answer.strip().upper()
        for i, choice in enumerate(choices):
            if _normal(choice) == _normal(answer):
                return LETTERS[i]
    return None
