"""Labelled prompts: the gold join, the prompt builder, scoring, the user file, and the labeller."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.eval.datasets import ROUTELLM_DIR
from pipeline.eval.label_slm import (
    LABELS_FILE,
    label_rows,
    other_machines,
    provenance_path,
    read_labels,
    run_label_slm,
)
from pipeline.eval.labelled import (
    LabelledPrompt,
    answer_letter,
    final_number,
    gsm8k_labelled,
    is_correct,
    mmlu_labelled,
    query_text,
    read_file,
    sample,
)
from pipeline.routing.train import gsm8k_split, split
from workers.slm.bench import machine

needs_data = pytest.mark.skipif(not (ROUTELLM_DIR / "gsm8k_responses.csv").exists(),
                                reason="shared/data not present")

MC = LabelledPrompt("Which planet is largest?", ("Mars", "Jupiter", "Venus", "Earth"), "B", True, "file", "f")
NUM = LabelledPrompt("Tom has 3 apples and buys 4. How many?", (), "7", False, "file", "f")


def test_letters_and_numbers_are_read_the_way_answers_are_written():
    assert [answer_letter(a) for a in ("B", "B.", "(C)", "The answer is D", "Answer: A", "I think")] == \
        ["B", "B", "C", "D", "A", None]
    # "A" opening a phrase is the article: an echoed question is no answer
    assert answer_letter("A chi-squared test of independence is") is None
    assert answer_letter("A. Mars") == "A" and answer_letter("A is right") is None
    assert final_number("3 + 4 = 7\n#### 7") == 7 and final_number("costs $1,250.50.") == 1250.5
    assert final_number("no digits") is None


def test_scoring_letters_numbers_and_short_answers():
    assert is_correct(MC, "B. Jupiter") and not is_correct(MC, "A. Mars")
    assert is_correct(NUM, "3 + 4 = 7 apples") and not is_correct(NUM, "7 + 1 = 8")
    short = LabelledPrompt("Capital of France?", (), "Paris", None, "file", "f")
    assert is_correct(short, "paris.") and not is_correct(short, "Lyon")


def test_the_prompt_letters_the_options_and_says_what_to_answer():
    text = query_text(MC.question, MC.choices)
    assert "\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\n" in text and text.endswith("option only.")
    assert MC.max_tokens < NUM.max_tokens


def test_a_users_file_maps_answers_to_letters_and_refuses_bad_lines(tmp_path: Path):
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(o) for o in (
        {"text": "Largest?", "choices": ["Mars", "Jupiter"], "answer": "Jupiter", "strong_correct": False},
        {"text": "Largest?", "choices": ["Mars", "Jupiter"], "answer": 0},
        {"text": "2+2?", "answer": "4"})) + "\n\n")
    prompts = list(read_file(good))
    assert [p.answer for p in prompts] == ["B", "A", "4"]
    assert [p.strong_correct for p in prompts] == [False, None, None]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Largest?", "choices": ["Mars"], "answer": "Pluto"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        list(read_file(bad))


@needs_data
def test_gold_answers_join_on_the_question_and_respect_the_router_splits():
    train, test = mmlu_labelled("train"), mmlu_labelled("test")
    assert len(train) > 2000 and len(test) > 2000
    assert all(split(p.group) == "train" for p in train) and all(split(p.group) == "test" for p in test)
    assert {p.answer for p in train} == set("ABCD") and all(len(p.choices) == 4 for p in train)
    gsm = gsm8k_labelled("train")
    assert len(gsm) > 600 and all(final_number(p.answer) is not None for p in gsm)
    assert 0.85 < sum(bool(p.strong_correct) for p in gsm) / len(gsm) < 0.97
    assert not {p.question for p in gsm} & {p.question for p in gsm8k_labelled("test")}
    assert all(gsm8k_split(p.question) == "train" for p in gsm[:50])


@needs_data
def test_a_sample_is_fixed_and_spans_subjects():
    prompts = mmlu_labelled("train")
    first, again = sample(prompts, 200), sample(prompts, 200)
    assert first == again and len({p.group for p in first}) > 15


def test_the_shipped_labels_are_train_split_only_and_match_their_provenance():
    rows = read_labels(LABELS_FILE)
    provenance = json.loads(LABELS_FILE.with_suffix("").with_suffix(".json").read_text())
    for name, stats in provenance["sets"].items():
        mine = [r for r in rows if r["dataset"] == name]
        assert len(mine) == stats["prompts"]
        assert sum(r["slm_correct"] for r in mine) / len(mine) == pytest.approx(stats["slm_accuracy"])
    assert all(split(r["group"]) == "train" for r in rows if r["dataset"] == "mmlu")
    assert all(gsm8k_split(r["question"]) == "train" for r in rows if r["dataset"] == "gsm8k")
    assert len({r["key"] for r in rows}) == len(rows)  # each prompt labelled once


def test_the_labeller_records_the_real_models_answers_and_resumes(tiny_model: Path, tmp_path: Path):
    from rich.console import Console

    from workers.slm.engine import SlmEngine

    engine = SlmEngine(tiny_model, threads=1)
    rows = label_rows(engine, [MC, NUM])
    assert [r["answer"] for r in rows] == ["B", "7"]
    for row in rows:
        assert row["slm_correct"] == is_correct(MC if row["choices"] else NUM, row["slm_answer"])
        assert 0.0 <= row["confidence"] <= 1.0 and row["completion_tokens"] > 0
    if not (ROUTELLM_DIR / "gsm8k_responses.csv").exists():
        return
    out = tmp_path / "labels.jsonl.gz"
    assert run_label_slm(Console(), tiny_model, sets=("mmlu",), limit=3, out=out, threads=1) == 0
    assert run_label_slm(Console(), tiny_model, sets=("mmlu",), limit=3, out=out, threads=1) == 0
    labelled = read_labels(out)
    assert len(labelled) == 3  # the second run found every prompt done
    # a prompt longer than the tiny model's context is labelled wrong (the worker escalates it)
    assert all(r["slm_correct"] is False for r in labelled if r["finish_reason"] == "refused")
    provenance = json.loads(provenance_path(out).read_text())
    assert provenance["sets"]["mmlu"]["prompts"] == 3 and len(provenance["runs"]) == 2
    assert all(run["machine"] == machine() for run in provenance["runs"])
    assert other_machines(out) == set()
    # a file begun on a CPU with other int8 kernels: resuming it here says the labels would mix
    provenance["runs"][0]["machine"] = "Some CPU (a different ISA), 2 CPUs"
    provenance_path(out).write_text(json.dumps(provenance))
    assert other_machines(out) == {"Some CPU (a different ISA), 2 CPUs"}
    console = Console(record=True, width=400)
    assert run_label_slm(console, tiny_model, sets=("mmlu",), limit=4, out=out, threads=1) == 0
    assert "begun on Some CPU (a different ISA)" in console.export_text()
