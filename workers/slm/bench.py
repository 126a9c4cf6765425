"""`pointsman bench slm`: fp32 vs int8, batch 1/8/32, side by side in one process.

Per (precision, batch): decode tokens/s (steps only), per-step latency p50/p99, time to
first token (the prefill), and greedy agreement with fp32. Agreement is TEACHER-FORCED:
fp32 decodes greedily (EOS ignored, fixed length); int8 is then fed exactly those tokens
and we count the positions where its own argmax equals fp32's token. Forcing keeps one
early disagreement from derailing every later position, and gives both precisions
identical work, so their speeds compare directly. Runs alternate fp32/int8 per batch so
a noisy neighbour hurts both alike; read the ratios.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infra.machine import cpu_model, int8_isa
from workers.slm.engine import SlmEngine

# A fixed prompt set: short chat questions of mixed kind and length (tokens 20-60 each
# once the chat template is applied).
BENCH_PROMPTS = """\
What is the capital of France?
Explain photosynthesis in two sentences.
Write a haiku about the sea.
How do I reverse a list in Python?
Give three tips for better sleep.
What is the difference between a virus and a bacterium?
Summarise the plot of Romeo and Juliet.
Why is the sky blue?
Translate 'good morning' into Spanish and German.
What causes the seasons on Earth?
Suggest a name for a coffee shop near a library.
How does a refrigerator keep food cold?
List the planets of the solar system in order.
What is 17 multiplied by 23?
Write a short thank-you note to a colleague who helped me move.
What are the main benefits of regular exercise?
Explain what a hash table is to a beginner.
Who wrote Pride and Prejudice, and when?
Describe a rainbow to someone who has never seen one.
Give me a simple recipe for pancakes.
What is the boiling point of water at sea level in Fahrenheit?
How can I save money on groceries?
What does a compiler do?
Write one sentence encouraging a student before an exam.
Why do cats purr?
What is machine learning, in plain words?
Name three famous paintings and their painters.
How do vaccines train the immune system?
What should I pack for a weekend hiking trip?
Explain the rules of tic-tac-toe.
What is the tallest mountain in the world and how tall is it?
Give two arguments for and two against working from home."""


def bench_prompts() -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": line}] for line in BENCH_PROMPTS.splitlines()]


@dataclass
class Row:
    model: str
    precision: str
    batch: int
    tokens_per_s: float  # decoded tokens per second of decode steps (prefill excluded)
    p50_ms: float  # one decode step for the whole batch
    p99_ms: float
    ttft_ms: float  # median prefill time (prompt in, first token out)
    agreement: float  # teacher-forced greedy top-1 agreement with fp32 (fp32: 1.0)
    new_tokens: int
    prompts: int
    threads: int


def _measure(
    engine: SlmEngine, batch: int, encoded: list[list[int]], new_tokens: int, forced: list[list[int]] | None
) -> tuple[list[list[int]], list[list[int]], list[float], list[float]]:
    """Decode `encoded` in chunks of `batch`; tokens, argmax picks, prefill and step times."""
    tokens: list[list[int]] = []
    picks: list[list[int]] = []
    prefill: list[float] = []
    steps: list[float] = []
    for lo in range(0, len(encoded), batch):
        chunk = encoded[lo : lo + batch]
        out = engine.decode_ids(
            chunk,
            [new_tokens] * len(chunk),
            forced=forced[lo : lo + batch] if forced is not None else None,
            ignore_eos=True,
        )
        tokens += out.tokens
        picks += out.argmax
        prefill.append(out.prefill_s)
        steps += out.step_s
    return tokens, picks, prefill, steps


def measure(
    engines: dict[str, SlmEngine], batches: Sequence[int], *, new_tokens: int, threads: int
) -> list[Row]:
    prompts = bench_prompts()
    rows: list[Row] = []
    for batch in batches:
        # every batch size decodes the same prompts (all of them at least once), so the
        # agreement figures compare and one odd prompt cannot decide a result
        n = max(batch, len(prompts))
        encoded = [engines["fp32"].encode(prompts[i % len(prompts)]) for i in range(n)]
        reference: list[list[int]] | None = None
        results: dict[str, Row] = {}
        for precision in ("fp32", "int8"):  # fp32 first: its tokens are the reference
            forced = None if precision == "fp32" else reference
            tokens, picks, prefill, steps = _measure(engines[precision], batch, encoded, new_tokens, forced)
            if precision == "fp32":
                reference, agreement = tokens, 1.0
            else:
                agreement = float(np.mean(np.array(picks) == np.array(reference)))
            decoded = (new_tokens - 1) * n  # the first token of each row comes from prefill
            results[precision] = Row(
                model=engines[precision].model_name,
                precision=precision,
                batch=batch,
                tokens_per_s=round(decoded / sum(steps), 1),
                p50_ms=round(float(np.percentile(steps, 50)) * 1e3, 2),
                p99_ms=round(float(np.percentile(steps, 99)) * 1e3, 2),
                ttft_ms=round(float(np.median(prefill)) * 1e3, 1),
                agreement=round(agreement, 4),
                new_tokens=new_tokens,
                prompts=n,
                threads=threads,
            )
        rows += [results["fp32"], results["int8"]]
    return rows


def machine() -> str:
    cpu = cpu_model()
    import onnxruntime

    versions = f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}"
    return f"{cpu} ({int8_isa()}), {os.cpu_count()} CPUs, {versions}"


def summary(rows: list[Row]) -> list[str]:
    by = {(r.precision, r.batch): r for r in rows}
    lines = []
    for batch in sorted({r.batch for r in rows}):
        fp, q = by[("fp32", batch)], by[("int8", batch)]
        lines.append(
            f"batch {batch}: int8/fp32 throughput {q.tokens_per_s / fp.tokens_per_s:.2f}x, "
            f"agreement {q.agreement:.1%}"
        )
    batches = [r.batch for r in rows] or [0]
    lo, hi = min(batches), max(batches)
    if lo != hi:
        for precision in ("fp32", "int8"):
            ratio = by[(precision, hi)].tokens_per_s / by[(precision, lo)].tokens_per_s
            lines.append(f"{precision}: batch {hi} / batch {lo} throughput {ratio:.2f}x")
    return lines


def run_bench_slm(
    model_dir_int8: Path,
    model_dir_fp32: Path,
    *,
    batches: Sequence[int] = (1, 8, 32),
    new_tokens: int = 32,
    threads: int = 2,
    as_json: bool = False,
    console: Any = None,
) -> int:
    """Benchmark both models side by side; print a table (or a JSON array). Exit code."""
    from rich.table import Table

    from workers.slm.prepare import SMOLLM2_NAME, model_dir_name, prepare_smollm2

    say = console.print if console is not None and not as_json else (lambda *a, **k: None)
    dirs = {"int8": Path(model_dir_int8), "fp32": Path(model_dir_fp32)}
    for precision, path in dirs.items():
        if not (path / "model.onnx").is_file() and path.name.startswith(SMOLLM2_NAME):
            say(f"preparing {path.name} (once)…")
            dirs[precision] = prepare_smollm2(path.parent, quantize=precision == "int8")
            if dirs[precision].name != model_dir_name(precision == "int8"):
                return 2
    started = time.monotonic()
    engines = {p: SlmEngine(d, threads=threads) for p, d in dirs.items()}
    rows = measure(engines, batches, new_tokens=new_tokens, threads=threads)
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        return 0
    table = Table(title=f"SLM decode, {new_tokens} new tokens per prompt, {threads} threads")
    columns = ("model", "precision", "batch", "tokens/s", "step p50 ms", "step p99 ms", "TTFT ms", "agree")
    for col in columns:
        table.add_column(col, justify="left" if col in ("model", "precision") else "right")
    for r in rows:
        table.add_row(
            r.model, r.precision, str(r.batch), f"{r.tokens_per_s:.1f}", f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}", f"{r.ttft_ms:.0f}", f"{r.agreement:.1%}",
        )
    say(table)
    for line in summary(rows):
        say(line)
    say(f"machine: {machine()}; {time.monotonic() - started:.0f}s")
    return 0
