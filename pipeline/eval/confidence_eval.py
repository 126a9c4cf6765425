"""`pointsman eval confidence`: how well the SLM's confidence predicts that its answer is right.

Reads our SLM's outcome labels (pipeline/routing/data/slm_labels.jsonl.gz, `pointsman label slm`)
and scores two confidences side by side, per dataset and overall:
  raw       the engine's exp(mean log-prob of the generated tokens), as recorded
  improved  workers.slm.confidence.assess on the recorded row: the same function, on the same
            question text, answer, finish reason and budget, that the SLM worker's gate uses
For each: AUC for predicting a right answer (rank-based, ties count half), a reliability table
(confidence bins: count, mean confidence, accuracy), and escalation at the configured threshold:
precision = share of escalated answers that were wrong, recall = share of wrong answers escalated.
Also how many answers each rule flagged and how many of those were right.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from pipeline.eval.label_slm import LABELS_FILE, labelled_prompt, read_labels
from pipeline.eval.metrics import auc
from workers.slm.confidence import REASONS, Assessment, assess

BINS = np.linspace(0.0, 1.0, 11)


def auc_interval(scores: np.ndarray, positives: np.ndarray, rounds: int = 300,
                 seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of the AUC (answers resampled): with few right answers it is wide."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        i = rng.integers(0, len(scores), len(scores))
        if (value := auc(scores[i], positives[i])) is not None:
            values.append(value)
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def reliability(conf: np.ndarray, right: np.ndarray) -> list[dict[str, Any]]:
    """Per confidence bin [0, .1), ..., [.9, 1]: count, mean confidence, accuracy."""
    index = np.clip(np.digitize(conf, BINS[1:-1]), 0, len(BINS) - 2)
    rows = []
    for b in range(len(BINS) - 1):
        mask = index == b
        n = int(mask.sum())
        rows.append({"bin": f"{BINS[b]:.1f}-{BINS[b + 1]:.1f}", "count": n,
                     "mean_confidence": float(conf[mask].mean()) if n else None,
                     "accuracy": float(right[mask].mean()) if n else None})
    return rows


def escalation(conf: np.ndarray, right: np.ndarray, threshold: float) -> dict[str, Any]:
    escalated = conf < threshold
    wrong = ~right
    n_esc, n_wrong = int(escalated.sum()), int(wrong.sum())
    caught = int((escalated & wrong).sum())
    return {"threshold": threshold, "escalated": n_esc, "escalated_share": n_esc / len(conf),
            "precision": caught / n_esc if n_esc else None, "recall": caught / n_wrong if n_wrong else None,
            "kept_accuracy": float(right[~escalated].mean()) if n_esc < len(conf) else None}


def assess_row(row: dict[str, Any]) -> Assessment:
    """The worker's assessment of a labelled answer: the question as it was sent, same budget."""
    prompt = labelled_prompt(row)
    return assess(prompt.text, row["slm_answer"], raw_confidence=row["confidence"],
                  finish_reason=row.get("finish_reason", "stop"), max_tokens=prompt.max_tokens)


def summarise(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    right = np.array([bool(r["slm_correct"]) for r in rows])
    judged = [assess_row(r) for r in rows]
    confidences = {"raw": np.array([j.raw for j in judged]),
                   "improved": np.array([j.confidence for j in judged])}
    out: dict[str, Any] = {"answers": len(rows), "right": int(right.sum()), "accuracy": float(right.mean())}
    for name, conf in confidences.items():
        out[name] = {"auc": auc(conf, right), "auc_ci": auc_interval(conf, right),
                     "reliability": reliability(conf, right),
                     "escalation": escalation(conf, right, threshold)}
    rules = {}
    for flag in REASONS:
        hit = np.array([flag in j.flags for j in judged])
        rules[flag] = {"flagged": int(hit.sum()), "right": int((hit & right).sum()),
                       "accuracy": float(right[hit].mean()) if hit.any() else None}
    out["rules"] = rules
    return out


def evaluate(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    sets = {name: summarise([r for r in rows if r["dataset"] == name], threshold)
            for name in sorted({r["dataset"] for r in rows})}
    return {"rows": len(rows), "threshold": threshold, "sets": sets,
            "overall": summarise(rows, threshold) if rows else None}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The labels, read while `pointsman label slm` may still be appending: a gzip member cut short
    at the end is left out instead of failing the read."""
    try:
        return read_labels(path)
    except (EOFError, OSError, zlib.error, ValueError):
        rows = []
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        rows.append(json.loads(line))
        except (EOFError, OSError, zlib.error, ValueError):
            pass  # the member being written; everything before it is in rows
        return rows


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def run_eval_confidence(console: Console, *, as_json: bool = False, threshold: float = 0.4,
                        path: Path = LABELS_FILE) -> int:
    rows = read_rows(path)
    if not rows:
        console.print(f"no SLM labels in {path}: run `pointsman label slm` first")
        return 1
    report = evaluate(rows, threshold)
    report["labels"] = str(path)
    if as_json:
        print(json.dumps(report, indent=1))
        return 0
    parts = {**report["sets"], "overall": report["overall"]}
    summary = Table(title=f"SLM confidence vs correctness ({len(rows)} labelled answers, "
                          f"escalate below {threshold:.2f})")
    for col in ("set", "answers", "accuracy", "confidence", "AUC", "AUC 95% CI", "escalated", "precision",
                "recall", "kept accuracy"):
        summary.add_column(col)
    for name, part in parts.items():
        for kind in ("raw", "improved"):
            esc = part[kind]["escalation"]
            ci = part[kind]["auc_ci"]
            summary.add_row(name, str(part["answers"]), f"{_pct(part['accuracy'])} ({part['right']})", kind,
                            _num(part[kind]["auc"]), f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "",
                            _pct(esc["escalated_share"]), _pct(esc["precision"]), _pct(esc["recall"]),
                            _pct(esc["kept_accuracy"]))
    console.print(summary)
    bins = Table(title="Reliability (overall): count / mean confidence / accuracy per bin")
    bins.add_column("bin")
    for kind in ("raw", "improved"):
        bins.add_column(f"{kind} n")
        bins.add_column(f"{kind} conf")
        bins.add_column(f"{kind} acc")
    overall = report["overall"]
    pairs = zip(overall["raw"]["reliability"], overall["improved"]["reliability"], strict=True)
    for raw_bin, new_bin in pairs:
        cells = [raw_bin["bin"]]
        for b in (raw_bin, new_bin):
            cells += [str(b["count"]), _num(b["mean_confidence"]), _pct(b["accuracy"])]
        bins.add_row(*cells)
    console.print(bins)
    rules = Table(title="Rules: answers flagged and how many of them were right")
    for col in ("rule", "reason", *parts):
        rules.add_column(col)
    for flag, reason in REASONS.items():
        cells = []
        for part in parts.values():
            r = part["rules"][flag]
            cells.append(f"{r['flagged']} ({_pct(r['accuracy'])} right)" if r["flagged"] else "0")
        rules.add_row(flag, reason, *cells)
    console.print(rules)
    return 0
