"""`pointsman label slm`: run the shipped SLM over the train splits and record, per prompt, if it was right.

Output: pipeline/routing/data/slm_labels.jsonl.gz (one object a line: the prompt, its gold answer,
the strong and weak models' recorded outcomes, the SLM's answer, whether it was right, its
confidence and tokens) and slm_labels.json (provenance: model and its checksum, engine settings,
sources, counts, accuracy, when and how long). Greedy decoding with the same messages and answer
budget the pipeline sends (labelled.query_text / max_tokens), in micro-batches like the SLM worker.
Resumable: prompts already in the output are skipped, so an interrupted run goes on where it was.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from infra.machine import int8_isa
from pipeline.eval.labelled import LabelledPrompt, is_correct, labelled_set, sample
from topics.errors import PermanentError
from workers.slm.bench import machine
from workers.slm.weights import model_checksum

LABELS_FILE = Path(__file__).resolve().parents[1] / "routing" / "data" / "slm_labels.jsonl.gz"
SETS = ("mmlu", "gsm8k")
SOURCES = {
    "mmlu": "RouteLLM MMLU prompts (shared/data/routellm/mmlu, Apache-2.0) joined with MMLU-Redux gold "
            "(shared/data/mmlu-redux, CC-BY-4.0); train subjects only (pipeline.routing.train.split)",
    "gsm8k": "RouteLLM GSM8K prompts and responses (shared/data/routellm/gsm8k_responses.csv, Apache-2.0); "
             "train half only (pipeline.routing.train.gsm8k_split)",
}


def prompt_key(prompt: LabelledPrompt) -> str:
    return hashlib.blake2b(prompt.text.encode(), digest_size=8).hexdigest()


def read_labels(path: Path = LABELS_FILE) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def provenance_path(out: Path) -> Path:
    return out.with_suffix("").with_suffix(".json")


def earlier_runs(out: Path) -> list[dict[str, Any]]:
    path = provenance_path(out)
    return json.loads(path.read_text()).get("runs", []) if path.exists() else []


def other_machines(out: Path) -> set[str]:
    """Machines of the earlier runs that wrote `out` with another int8 instruction set than this
    one: onnxruntime's kernels differ by it, and so do a few answers."""
    here = f"({int8_isa()})"
    return {m for r in earlier_runs(out) if (m := r.get("machine")) and here not in m}


def labelled_prompt(row: dict[str, Any]) -> LabelledPrompt:
    return LabelledPrompt(row["question"], tuple(row["choices"]), row["answer"], row["strong_correct"],
                          row["dataset"], row["group"], row["weak_correct"])


def _generate(engine: Any, prompts: Sequence[LabelledPrompt]) -> list[Any]:
    """One engine call per micro-batch; a prompt the model refuses (longer than its context) is
    retried alone so the rest keep their answers, and is labelled wrong: in the pipeline the SLM
    worker escalates it."""
    messages = [[{"role": "user", "content": p.text}] for p in prompts]
    try:
        return engine.generate(messages, max_tokens=[p.max_tokens for p in prompts], temperature=0.0)
    except PermanentError:
        if len(prompts) == 1:
            return [None]
        return [g for p in prompts for g in _generate(engine, [p])]


def label_rows(engine: Any, prompts: Sequence[LabelledPrompt]) -> list[dict[str, Any]]:
    rows = []
    for prompt, gen in zip(prompts, _generate(engine, prompts), strict=True):
        row = asdict(prompt)
        row["choices"] = list(prompt.choices)
        row["key"] = prompt_key(prompt)
        if gen is None:
            row.update(slm_answer="", slm_correct=False, confidence=0.0, prompt_tokens=0,
                       completion_tokens=0, finish_reason="refused")
        else:
            row.update(slm_answer=gen.text, slm_correct=is_correct(prompt, gen.text),
                       confidence=round(float(gen.confidence), 6), prompt_tokens=gen.prompt_tokens,
                       completion_tokens=gen.completion_tokens, finish_reason=gen.finish_reason)
        rows.append(row)
    return rows


def run_label_slm(console: Console, model_dir: Path, *, sets: Sequence[str] = SETS, limit: int | None = None,
                  out: Path = LABELS_FILE, batch: int = 16, threads: int = 2) -> int:
    from workers.slm.engine import SlmEngine

    if not (model_dir / "model.onnx").exists():
        console.print(f"no model in {model_dir}: run `pointsman models prepare` first")
        return 1
    done = {row["key"] for row in read_labels(out)}
    todo: list[LabelledPrompt] = []
    for name in sets:
        prompts = labelled_set(name, "train")
        for prompt in sample(prompts, limit):
            # the data repeats a few prompts word for word: each is labelled once
            if (key := prompt_key(prompt)) not in done:
                done.add(key)
                todo.append(prompt)
    todo.sort(key=lambda p: (p.max_tokens, len(p.text)))  # like lengths batch with little padding
    if todo and (others := other_machines(out)):
        console.print(f"[yellow]note: {out.name} was begun on {', '.join(sorted(others))}; this CPU "
                      f"({int8_isa()}) gives some answers differently (measured: 4% of MMLU labels, "
                      f"BENCHMARKS.md), so the file will mix two machines' labels. Use --out for a new one."
                      "[/yellow]")
    console.print(f"labelling {len(todo)} prompts with {model_dir.name} "
                  f"({len(done) - len(todo)} already in {out.name})")
    engine = SlmEngine(model_dir, threads=threads)
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("SLM answers", total=len(todo))
        for i in range(0, len(todo), batch):
            rows = label_rows(engine, todo[i:i + batch])
            with gzip.open(out, "at", encoding="utf-8") as f:  # one gzip member per batch: resumable
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            progress.advance(task, len(rows))
    rows = read_labels(out)
    provenance = write_provenance(out, rows, model_dir, engine, time.monotonic() - started, batch, threads)
    for name, stats in provenance["sets"].items():
        console.print(f"{name}: {stats['prompts']} prompts, SLM right on {stats['slm_accuracy']:.1%}, "
                      f"strong model right on {stats['strong_accuracy']:.1%}")
    console.print(f"wrote {out} and {out.with_suffix('').with_suffix('.json').name}")
    return 0


def write_provenance(out: Path, rows: list[dict[str, Any]], model_dir: Path, engine: Any, seconds: float,
                     batch: int, threads: int) -> dict[str, Any]:
    import numpy
    import onnxruntime

    sets: dict[str, Any] = {}
    for name in sorted({r["dataset"] for r in rows}):
        mine = [r for r in rows if r["dataset"] == name]
        sets[name] = {"prompts": len(mine), "source": SOURCES.get(name, ""),
                      "slm_accuracy": sum(r["slm_correct"] for r in mine) / len(mine),
                      "strong_accuracy": sum(bool(r["strong_correct"]) for r in mine) / len(mine)}
    quantize = model_dir / "quantize.json"
    recipe = json.loads(quantize.read_text()) if quantize.exists() else None
    if recipe is not None and "source" in recipe:
        recipe["source"] = Path(recipe["source"]).name  # not this machine's paths
    path = provenance_path(out)
    runs = earlier_runs(out)
    runs.append({"command": " ".join(["pointsman", *sys.argv[1:]]), "seconds": round(seconds, 1),
                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()})
    provenance = {
        "model": model_dir.name, "model_sha256": model_checksum(model_dir), "quantize": recipe,
        "engine": {"name": engine.model_name, "decoding": "greedy", "batch": batch, "threads": threads},
        "versions": {"onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
                     "python": platform.python_version()},
        "machine": machine(), "sets": sets, "runs": runs,
    }
    path.write_text(json.dumps(provenance, indent=1) + "\n")
    return provenance
