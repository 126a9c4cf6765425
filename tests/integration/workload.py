"""Synthetic workloads: valid queries with duplicates across two tenants, non-ASCII text, and
every malformed kind, written as JSONL lines exactly as a user would produce them."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

MALFORMED = [
    b"not json at all",
    b'{"tenant": "acme"}',
    b'{"tenant": "acme", "text": "   "}',
    b'{"tenant": "acme", "text": 42}',
    b'{"tenant": "no spaces allowed", "text": "hello"}',
    b'{"tenant": "acme", "text": "hi", "max_tokens": "many"}',
    b"[1, 2, 3]",
    b'{"text": "\xff\xfe broken utf-8"}',
    json.dumps({"tenant": "acme", "text": "x" * 40_000}).encode(),
]
TEXTS = ["What is {n} plus {m}?", "Name a colour number {n}.", "¿Cuánto es {n} por {m}?",
         "{n} と {m} を足すと？", "Summarise item {n} in {m} words.", "Ünïcödé test {n}/{m}"]


@dataclass
class Workload:
    lines: list[bytes]
    valid_ids: set[str]
    malformed: int
    duplicates: int


def make_workload(size: int, *, seed: int = 0, run: str = "w", long_every: int = 10) -> Workload:
    rng = random.Random(seed)
    lines, ids, duplicates = [], set(), 0
    uniques: list[dict] = []
    for i in range(size):
        if uniques and rng.random() < 0.3:  # a repeat of an earlier query, with a new id
            query = dict(rng.choice(uniques))
            if rng.random() < 0.5:
                query["text"] = "  " + query["text"].upper()  # same fingerprint after normalising
            duplicates += 1
        else:
            text = rng.choice(TEXTS).format(n=i, m=rng.randrange(100))
            if i % long_every == 0:
                text = text + " Explain in detail." + " with context" * 40  # long: llm track
            query = {"tenant": rng.choice(["acme", "globex"]), "text": text, "max_tokens": 8}
            uniques.append(query)
        query = {**query, "id": f"{run}-{i}"}
        ids.add(query["id"])
        lines.append(json.dumps(query, ensure_ascii=False).encode())
    malformed = 0
    for bad in MALFORMED:
        lines.insert(rng.randrange(len(lines)), bad)
        malformed += 1
    return Workload(lines, ids, malformed, duplicates)
