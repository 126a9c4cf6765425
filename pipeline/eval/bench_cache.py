"""`pointsman bench cache`: semantic-cache lookup latency (embedding included) at 10k-1M entries.

One tenant holds every entry (the worst case: one index). Entries are made from a pool of 20k
template questions plus filler words, embedded once; larger caches reuse pool vectors with a
little noise, so filling 1M entries takes seconds, not an hour of embedding. Queries mix
repeats with small rewordings (hits), rewordings in the grey band (the verifier's work) and
unseen questions (misses). Per query: static embedding + top-k search + guards (+ MiniLM in the
grey band). Also timed: the learned routing decision beyond the embedding.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from pipeline.routing.policy import LearnedPolicy
from pipeline.routing.scorer import DifficultyScorer
from pipeline.semantic.cache import SemanticCache, SemanticEntry, SemanticKey, SemanticSettings
from pipeline.semantic.embedders import OnnxEmbedder, StaticEmbedder, minilm_available
from pipeline.semantic.index import limit_blas_threads
from topics.schemas import Query

_ASK = ("How do I", "Can I", "What is the best way to", "Is it possible to", "Where can I", "Who can help me")
_VERB = ("cancel", "renew", "upgrade", "change", "report", "book", "pay for", "track", "return", "transfer",
         "share", "export", "reset", "freeze", "claim", "update", "close", "open", "check", "order")
_THING = ("my subscription", "a parking permit", "the broadband plan", "my passport", "a council tax bill",
          "the gym membership", "a repeat prescription", "my pension", "the energy tariff", "my tenancy",
          "a delivery", "my invoice", "the savings account", "a flight booking", "my insurance policy",
          "the phone contract", "a school place", "my driving licence", "a bin collection", "the mortgage")
_TAIL = ("online", "by phone", "in the app", "at the branch", "for my partner", "this week", "abroad",
         "without fees", "as a student", "after moving house", "for a business", "on the website",
         "before the deadline", "with a voucher", "for my parents", "at short notice", "", "quickly",
         "for free", "from overseas", "in person", "by post", "with a card", "on a weekend", "securely",
         "as a landlord", "for a child", "with no account", "early", "late")
_FILLER = ("please", "thanks", "just", "so", "ok", "hi", "hey", "kindly", "um", "uh")


def pool(n: int = 20_000, seed: int = 0) -> list[str]:
    combos = itertools.product(_ASK, _VERB, _THING, _TAIL)
    texts = [f"{a} {v} {t} {tail}".strip() + "?" for a, v, t, tail in combos]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def fill(cache: SemanticCache, size: int, texts: list[str], vecs: np.ndarray, seed: int = 0,
         tenant: str = "bench", max_tokens: int = 256) -> float:
    rng = np.random.default_rng(seed)
    fillers = list(itertools.product(_FILLER, _FILLER))
    started = time.perf_counter()
    for start in range(0, size, 10_000):
        n = min(10_000, size - start)
        idx = np.arange(start, start + n)
        base = vecs[idx % len(texts)] + 0.03 * rng.standard_normal((n, vecs.shape[1])).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        text = [f"{texts[i % len(texts)]} {' '.join(fillers[i // len(texts)])}" for i in idx]
        entries = [SemanticEntry(SemanticKey(tenant, t, max_tokens=max_tokens), "cached answer", "bench",
                                 f"q{i}", 0.0) for t, i in zip(text, idx, strict=True)]
        cache.put_batch(entries, now=0.0, vectors=base)
    return time.perf_counter() - started


def queries(texts: list[str], n: int, seed: int = 1) -> list[SemanticKey]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = texts[rng.randrange(len(texts))]
        kind = i % 3
        if kind == 0:
            q = t.lower().rstrip("?")  # a near repeat: static hit
        elif kind == 1:
            q = t.replace("How do I", "What do I need to do to").replace("Can I", "Am I able to")  # grey band
        else:
            q = f"{rng.choice(_ASK)} {rng.choice(_VERB)} {rng.choice(_THING)} {rng.choice(_TAIL)} " \
                f"{rng.randrange(10**6)}?"  # unseen and a number: a miss
        out.append(SemanticKey("bench", q))
    return out


def _time(cache: SemanticCache, keys: list[SemanticKey], batch: int) -> dict[str, float]:
    per_query: list[float] = []
    hits = 0
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        t0 = time.perf_counter()
        found = cache.lookup_batch(chunk, now=1.0)
        per_query.append((time.perf_counter() - t0) * 1000 / len(chunk))  # amortised over the batch
        hits += sum(f.entry is not None for f in found)
    arr = np.array(per_query)
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "hit_rate": hits / len(keys)}


def core_throughput(static: StaticEmbedder, verifier: Any, n: int = 20_000) -> list[dict[str, Any]]:
    """RouterCore.route_batch alone vs. + the semantic lookup of its exact-cache misses (batches of 32).

    An emulation until RouterCore calls the cache itself: the same workload as `bench router`'s
    core row, a cache pre-filled with 100k entries per tenant, lookups timed on top.
    """
    from pipeline.bench import workload
    from pipeline.decide import Incoming, RouterCore
    from pipeline.exact_cache import ExactCache
    from pipeline.policy import make_policy
    from pipeline.semantic.cache import key_for
    from pipeline.validate import validate
    from topics.errors import InvalidMessage
    from topics.names import Topics

    lines = workload(n)
    keys = []
    for i, line in enumerate(lines):
        with contextlib.suppress(InvalidMessage):  # the 1% malformed ones are dead-lettered, not looked up
            keys.append(key_for(validate(line, origin=f"q:0:{i}", timestamp=0.0)))
    texts = pool()
    cache = SemanticCache(static, None, SemanticSettings(max_entries=200_000))
    vecs = static.embed(texts)
    for tenant in ("acme", "globex"):
        fill(cache, 100_000, texts, vecs, tenant=tenant, max_tokens=64)
    rows = []
    for label, ver in (("semantic off", None), ("semantic on, static only", None),
                       ("semantic on, static + MiniLM grey band", verifier)):
        if label.endswith("band") and ver is None:
            continue
        cache.verifier = ver
        core = RouterCore(Topics(), make_policy("baseline-length"), ExactCache())
        batch = [Incoming("queries", 0, i, time.time(), None, v) for i, v in enumerate(lines)]
        started = time.perf_counter()
        for i in range(0, len(batch), 2000):
            core.route_batch(batch[i:i + 2000], time.time())
        if label != "semantic off":
            for i in range(0, len(keys), 32):
                cache.lookup_batch(keys[i:i + 32], now=1.0)
        rows.append({"run": label, "messages": n, "per_s": n / (time.perf_counter() - started)})
    return rows


def run_bench_cache(console: Console, *, sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000),
                    as_json: bool = False, n_queries: int = 1500) -> int:
    limit_blas_threads(1)  # as the router runs: one BLAS thread per process
    static = StaticEmbedder()
    verifier = OnnxEmbedder(threads=1) if minilm_available() else None
    texts = pool()
    vecs = static.embed(texts)
    keys = queries(texts, n_queries)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        cache = SemanticCache(static, verifier, SemanticSettings(max_entries=size))
        seconds = fill(cache, size, texts, vecs)
        for stage, ver in (("static only", None), ("static + MiniLM grey band", verifier)):
            if stage != "static only" and ver is None:
                continue
            cache.verifier = ver
            for batch in (1, 32):
                rows.append({"entries": size, "stage": stage, "batch": batch, "fill_s": seconds,
                             **_time(cache, keys, batch)})
    policy = LearnedPolicy(DifficultyScorer(static), slm_share=0.8)
    qs = [Query(text=k.text) for k in keys[:500]]
    qvecs = static.embed([q.text or "" for q in qs])
    t0 = time.perf_counter()
    for q, v in zip(qs, qvecs, strict=True):
        policy.decide(q, v)
    decision_ms = (time.perf_counter() - t0) * 1000 / len(qs)
    t0 = time.perf_counter()
    static.embed([q.text or "" for q in qs])
    embed_ms = (time.perf_counter() - t0) * 1000 / len(qs)
    core = core_throughput(static, verifier)
    report = {"lookups": rows, "core_throughput": core, "routing_decision_ms_beyond_embedding": decision_ms,
              "static_embedding_ms_per_query_batched": embed_ms,
              "load_average": os.getloadavg()}  # p99s are only as quiet as the machine was
    if as_json:
        print(json.dumps(report, indent=1))
        return 0
    table = Table(title="Semantic cache lookup latency per query (embedding + search + guards), one thread")
    for col in ("entries", "stage", "batch", "p50 ms", "p99 ms", "hit rate", "fill s"):
        table.add_column(col)
    for r in rows:
        table.add_row(f"{r['entries']:,}", r["stage"], str(r["batch"]), f"{r['p50_ms']:.3f}",
                      f"{r['p99_ms']:.3f}", f"{r['hit_rate']:.2f}", f"{r['fill_s']:.1f}")
    console.print(table)
    for r in core:
        console.print(f"RouterCore {r['run']}: {r['per_s']:,.0f} messages/s ({r['messages']:,} messages)")
    console.print(f"learned routing decision beyond the embedding: {decision_ms:.3f} ms/query; "
                  f"static embedding: {embed_ms:.3f} ms/query; load average {os.getloadavg()}")
    return 0
