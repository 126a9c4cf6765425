"""Labelled data for the evaluations, read from installed packages and shared/ (nothing downloaded).

Cache pairs (a = the cached query, b = the new one, same = one answer serves both):
  fow     `fow-cache` (data CC-BY-4.0): 600 question pairs in six categories + 240 chat pairs;
          split by `fow_half` into an even half (design) and an odd half (held out)
  contra  `contradish` (MIT): each case's original vs. its rephrasings (~3,900 same) and the
          originals of neighbouring cases of one domain (~530 not same)
Router prompts: `shared/data/routellm` (RouteLLM's per-prompt labels for Mixtral vs GPT-4).
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import xxhash

ROUTELLM_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "routellm"  # ../shared


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    category: str
    source: str
    context_a: tuple[str, ...] = ()  # earlier turns of a chat, oldest first
    context_b: tuple[str, ...] = ()


def have(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def fow_pairs(conversations: bool = True) -> list[Pair]:
    from fow_cache.data import load_conversations, load_questions

    pairs = [Pair(q["a"], q["b"], bool(q["same_answer"]), q["category"], "fow") for q in load_questions()]
    if conversations:
        for c in load_conversations():
            ca = tuple(m["content"] for m in c["a"][:-1])
            cb = tuple(m["content"] for m in c["b"][:-1])
            pairs.append(Pair(c["a"][-1]["content"], c["b"][-1]["content"], bool(c["same_answer"]),
                              "chat_" + c["subtype"], "fow", ca, cb))
    return pairs


def fow_half(pair: Pair) -> str:
    """`even` (the guards were designed on it) or `odd` (held out): a hash of the cached question."""
    return "odd" if xxhash.xxh32(pair.a.encode()).intdigest() % 2 else "even"


def contradish_pairs() -> list[Pair]:
    import contradish

    root = Path(contradish.__file__).parent / "benchmarks"
    pairs: list[Pair] = []
    for path in sorted(glob.glob(str(root / "v*" / "*.json"))):
        cases = [c for c in json.loads(Path(path).read_text()).get("cases", [])
                 if "original" in c and "adversarial" in c]
        for i, case in enumerate(cases):
            pairs += [Pair(case["original"], alt, True, "paraphrase", "contra")
                      for alt in case["adversarial"]]
            if len(cases) > 1:
                other = cases[(i + 1) % len(cases)]["original"]
                pairs.append(Pair(case["original"], other, False, "same_domain", "contra"))
    return pairs


@dataclass(frozen=True)
class Prompt:
    text: str
    weak_ok: float  # score of the weak model (Mixtral-8x7B): 0/1, or MT-Bench's judge score / 10
    strong_ok: float  # same for the strong model (GPT-4)
    dataset: str  # gsm8k, mmlu, mt_bench
    group: str  # MMLU subject; else the dataset


def _contaminated(name: str, root: Path) -> set[str]:
    """Prompts RouteLLM dropped from its evaluation because its router's training data had them."""
    path = root / f"{name}_contaminated_prompts.jsonl"
    if not path.exists():
        return set()
    return {json.loads(line)["eval_prompt"].strip() for line in path.read_text().splitlines() if line.strip()}


def _ok(value: str) -> float:
    return 1.0 if value.strip().lower() == "true" else 0.0


def routellm_prompts(datasets: tuple[str, ...] = ("gsm8k", "mmlu", "mt_bench"),
                     root: Path = ROUTELLM_DIR) -> list[Prompt]:
    weak, strong = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    out: list[Prompt] = []
    csv.field_size_limit(1 << 24)
    if "gsm8k" in datasets:
        bad = _contaminated("gsm8k", root)
        with open(root / "gsm8k_responses.csv", newline="") as f:
            out += [Prompt(r["prompt"], _ok(r[weak]), _ok(r[strong]), "gsm8k", "gsm8k")
                    for r in csv.DictReader(f) if r["prompt"].strip() not in bad]
    if "mmlu" in datasets:
        bad = _contaminated("mmlu", root)
        for path in sorted((root / "mmlu").glob("mmlu_*.csv")):
            subject = path.stem.removeprefix("mmlu_")
            with open(path, newline="") as f:
                out += [Prompt(r["prompt"], _ok(r[weak]), _ok(r[strong]), "mmlu", subject)
                        for r in csv.DictReader(f) if r["prompt"].strip() not in bad]
    if "mt_bench" in datasets:
        bad = _contaminated("mt_bench", root)
        scores: dict[tuple[int, str], list[float]] = {}
        for line in (root / "mt_bench_judgements.jsonl").read_text().splitlines():
            j = json.loads(line)
            scores.setdefault((j["question_id"], j["model"]), []).append(float(j["score"]) / 10.0)
        for line in (root / "mt_bench_question.jsonl").read_text().splitlines():
            q = json.loads(line)
            w, s = scores.get((q["question_id"], weak)), scores.get((q["question_id"], strong))
            if w and s and q["turns"][0].strip() not in bad:  # routed on the first turn, scored on both
                out.append(Prompt(q["turns"][0], sum(w) / len(w), sum(s) / len(s), "mt_bench", "mt_bench"))
    return out
