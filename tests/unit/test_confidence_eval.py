"""`pointsman eval confidence`: AUC, reliability, escalation precision/recall on a small labels file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.eval.confidence_eval import auc, auc_interval, evaluate, read_rows, reliability

MMLU_Q = "Which planet is known as the red planet?"
CHOICES = ["Venus", "Mars", "Jupiter", "Saturn"]
GSM_Q = "Tom has 3 apples and buys 4 more bags of 2 apples each. How many apples does he have now?"


def row(dataset: str, answer: str, correct: bool, confidence: float, finish: str = "stop") -> dict:
    mmlu = dataset == "mmlu"
    return {"dataset": dataset, "group": "astronomy" if mmlu else "gsm8k",
            "question": MMLU_Q if mmlu else GSM_Q, "choices": CHOICES if mmlu else [],
            "answer": "B" if mmlu else "11", "strong_correct": True,
            "weak_correct": True, "key": f"k{confidence}", "slm_answer": answer, "slm_correct": correct,
            "confidence": confidence, "prompt_tokens": 40, "completion_tokens": 8, "finish_reason": finish}


ROWS = [
    row("mmlu", "B", True, 0.8),
    row("mmlu", "B", True, 0.6),
    row("mmlu", "A", False, 0.55),
    row("mmlu", "Which planet is known as the red planet? Which planet", False, 0.9, "length"),  # echo
    row("gsm8k", "3 + 4 * 2 = 11\n11", True, 0.5),
    row("gsm8k", "－" * 256, False, 0.91, "length"),  # empty and looping, and sure of itself
    row("gsm8k", "3 + 4 = 7\n7", False, 0.3),
    row("gsm8k", "Том купил яблоки, их стало одиннадцать.", False, 0.45),  # another script
]


def write_labels(path: Path, rows: list[dict], *, torn_tail: bool = False) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:4])
    with gzip.open(path, "at", encoding="utf-8") as f:  # a second member, as the labeller appends
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[4:])
    if torn_tail:  # a member being written while we read: cut short
        member = gzip.compress(b'{"dataset": "mmlu", "question": "half a line')
        with open(path, "ab") as f:
            f.write(member[: len(member) // 2])
    return path


def test_auc_by_hand() -> None:
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won 1 + 1 + 1, lost 1 -> 3/4
    assert auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half: (0.5 + 1 + 1 + 1) / 4
    assert auc([0.5, 0.5, 0.2, 0.9], [True, False, False, True]) == pytest.approx(0.875)
    assert auc([0.3, 0.3, 0.3], [True, False, True]) == pytest.approx(0.5)
    assert auc([0.9, 0.1], [False, True]) == 0.0
    assert auc([0.2, 0.4], [True, True]) is None  # no negative to rank against


def test_auc_interval_brackets_the_auc() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    right = rng.random(200) < 0.5
    scores = right * 0.3 + rng.random(200)  # informative, not perfectly
    low, high = auc_interval(scores, right)
    assert 0.5 < low < auc(scores, right) < high < 1.0
    assert auc_interval(np.array([0.1, 0.9, 0.2, 0.8]), np.array([False, True, False, True])) == (1.0, 1.0)


def test_reliability_bins() -> None:
    import numpy as np

    table = reliability(np.array([0.05, 0.15, 0.18, 1.0]), np.array([False, True, False, True]))
    assert [b["count"] for b in table] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]  # 1.0 falls in the last bin
    assert table[1]["mean_confidence"] == pytest.approx(0.165) and table[1]["accuracy"] == 0.5
    assert table[2]["accuracy"] is None


def test_eval_on_a_small_labels_file(tmp_path: Path) -> None:
    rows = read_rows(write_labels(tmp_path / "labels.jsonl.gz", ROWS, torn_tail=True))
    assert len(rows) == len(ROWS)  # the torn member at the end is left out, the rest read
    report = evaluate(rows, threshold=0.4)
    overall = report["overall"]
    # raw: the wrong answers at 0.9 and 0.91 outrank every right one; improved puts them last
    assert overall["raw"]["auc"] == pytest.approx(8 / 15)
    assert overall["improved"]["auc"] == pytest.approx(14 / 15)  # only "A" at 0.55 still beats a right 0.5
    raw_esc, new_esc = overall["raw"]["escalation"], overall["improved"]["escalation"]
    assert (raw_esc["escalated"], raw_esc["precision"], raw_esc["recall"]) == (1, 1.0, pytest.approx(0.2))
    assert (new_esc["escalated"], new_esc["precision"], new_esc["recall"]) == (4, 1.0, pytest.approx(0.8))
    rules = overall["rules"]
    assert rules["echo"]["flagged"] == 1 and rules["script"]["flagged"] == 1
    assert rules["empty"]["flagged"] == 1 and rules["repetition"]["flagged"] == 1
    assert rules["empty"]["accuracy"] == 0.0 and rules["truncated"]["flagged"] == 1  # the 8-token cut is not
    assert set(report["sets"]) == {"gsm8k", "mmlu"} and report["sets"]["mmlu"]["answers"] == 4
    assert report["sets"]["mmlu"]["improved"]["auc"] == pytest.approx(1.0)
    bins = overall["improved"]["reliability"]
    assert sum(b["count"] for b in bins) == len(ROWS)


def test_cli_prints_the_report_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = write_labels(tmp_path / "labels.jsonl.gz", ROWS)
    assert main(["eval", "confidence", "--json", "--labels", str(labels)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == len(ROWS) and report["threshold"] == 0.4
    assert report["overall"]["improved"]["auc"] > report["overall"]["raw"]["auc"]
    assert main(["eval", "confidence", "--labels", str(tmp_path / "missing.jsonl.gz")]) == 1
