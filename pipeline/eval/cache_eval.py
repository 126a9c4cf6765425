"""`pointsman eval cache`: precision, recall and hit rate of the semantic cache on labelled pairs.

For every pair the cached question a and the new question b are scored by the static stage, by
MiniLM and by the guards; the sweep shows each threshold's precision / hit rate (recall on
same-answer pairs). Then the real SemanticCache answers the b's in three set-ups:
  pairwise     each pair alone in its own tenant (the sweep's decision, end to end)
  shared       every a of a dataset in one tenant: top-k retrieval among hundreds of distractors
  cross-tenant every a under tenant A, every b asked by tenant B: must give zero hits
No threshold is fitted on these pairs: the settings are SemanticSettings' defaults. fow's questions
are also reported by half: the guards were designed on the even half, the odd half is held out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from pipeline.eval.datasets import Pair, contradish_pairs, fow_half, fow_pairs, have
from pipeline.semantic.cache import SemanticCache, SemanticEntry, SemanticKey, SemanticSettings
from pipeline.semantic.embedders import Embedder, OnnxEmbedder, StaticEmbedder, minilm_available
from pipeline.semantic.guards import first_conflict, spelling_variant
from pipeline.semantic.index import limit_blas_threads

THRESHOLDS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def _pr(hit: np.ndarray, same: np.ndarray) -> dict[str, float]:
    tp = int((hit & same).sum())
    return {"precision": tp / max(int(hit.sum()), 1), "hit_rate": tp / max(int(same.sum()), 1),
            "false_hits": int((hit & ~same).sum()), "hits": int(hit.sum())}


def _cos(e: Embedder, pairs: list[Pair]) -> np.ndarray:
    return (e.embed([p.a for p in pairs]) * e.embed([p.b for p in pairs])).sum(axis=1)


def sweep(pairs: list[Pair], fast: Embedder, verifier: Embedder | None,
          settings: SemanticSettings) -> list[dict[str, Any]]:
    same = np.array([p.same for p in pairs])
    guard = np.array([first_conflict(p.a, p.b) is None and p.context_a == p.context_b for p in pairs])
    typo = guard & np.array([spelling_variant(p.a, p.b) for p in pairs])  # hits whatever the cosine
    s_fast = _cos(fast, pairs)
    s_ver = _cos(verifier, pairs) if verifier is not None else None
    rows = []
    for t in THRESHOLDS:
        row: dict[str, Any] = {"threshold": t, "static_raw": _pr(s_fast >= t, same),
                               "static_guarded": _pr(((s_fast >= t) & guard) | typo, same)}
        if s_ver is not None:
            row["minilm_raw"] = _pr(s_ver >= t, same)
            two = (s_fast >= settings.fast_accept) | ((s_fast >= settings.fast_reject) & (s_ver >= t))
            row["two_stage_guarded"] = _pr((two & guard) | typo, same)
        rows.append(row)
    return rows


def _groups(pairs: list[Pair]) -> Callable[[str], str]:
    """Union-find over same-answer pairs: two texts share an answer iff they share a root."""
    parent: dict[str, str] = {}

    def root(t: str) -> str:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    for p in pairs:
        if p.same and not p.context_a and not p.context_b:
            parent[root(p.a)] = root(p.b)
    return root


def _entry(tenant: str, p: Pair, i: int) -> SemanticEntry:
    return SemanticEntry(SemanticKey(tenant, p.a, p.context_a), f"answer {i}", "eval", f"q{i}", 0.0)


def live(pairs: list[Pair], fast: Embedder, verifier: Embedder | None,
         settings: SemanticSettings, mode: str) -> dict[str, Any]:
    cache = SemanticCache(fast, verifier, settings)
    def tenant_a(i: int) -> str:
        return {"pairwise": f"t{i}", "shared": "acme", "cross-tenant": "A"}[mode]
    cache.put_batch([_entry(tenant_a(i), p, i) for i, p in enumerate(pairs)], now=1.0)
    asker = {"pairwise": None, "shared": "acme", "cross-tenant": "B"}[mode]
    keys = [SemanticKey(asker or f"t{i}", p.b, p.context_b) for i, p in enumerate(pairs)]
    started = time.perf_counter()
    found = []
    for start in range(0, len(keys), 32):  # the router's micro-batches
        found += cache.lookup_batch(keys[start:start + 32], now=2.0)
    ms = (time.perf_counter() - started) * 1000 / max(len(keys), 1)
    same = np.array([p.same for p in pairs])
    hit = np.array([f.entry is not None for f in found])
    out = _pr(hit, same)
    if mode == "shared":  # right only if the entry found means the same as b (same-answer groups)
        group = _groups(pairs)
        right = np.array([f.entry is not None and group(f.entry.key.text) == group(p.b)
                          for f, p in zip(found, pairs, strict=True)])
        out = {"precision": int((hit & right).sum()) / max(int(hit.sum()), 1),
               "hit_rate": int((hit & right & same).sum()) / max(int(same.sum()), 1),
               "false_hits": int((hit & ~right).sum()), "hits": int(hit.sum())}
    out.update(mode=mode, ms_per_lookup=ms, verifier_calls=cache.stats["verifier_calls"])
    return out


def by_category(pairs: list[Pair], fast: Embedder, verifier: Embedder | None,
                settings: SemanticSettings) -> dict[str, dict[str, float]]:
    cache = SemanticCache(fast, verifier, settings)
    cache.put_batch([_entry(f"t{i}", p, i) for i, p in enumerate(pairs)], now=1.0)
    found = cache.lookup_batch([SemanticKey(f"t{i}", p.b, p.context_b) for i, p in enumerate(pairs)], 2.0)
    out: dict[str, dict[str, float]] = {}
    for p, f in zip(pairs, found, strict=True):
        row = out.setdefault(p.category, {"pairs": 0, "hits": 0, "same": p.same})
        row["pairs"] += 1
        row["hits"] += f.entry is not None
    return out


def run_eval_cache(console: Console, *, as_json: bool = False, verifier: bool = True,
                   settings: SemanticSettings | None = None) -> int:
    limit_blas_threads(1)  # as the router runs: one BLAS thread per process
    settings = settings or SemanticSettings()
    datasets: dict[str, list[Pair]] = {}
    if have("fow_cache"):
        fow = fow_pairs()
        questions = [p for p in fow if not p.category.startswith("chat_")]
        datasets["fow-questions"] = questions
        for half in ("even", "odd"):  # even: the guards were designed on it; odd: held out
            datasets[f"fow-questions-{half}"] = [p for p in questions if fow_half(p) == half]
        datasets["fow-chats"] = [p for p in fow if p.category.startswith("chat_")]
    if have("contradish"):
        datasets["contradish"] = contradish_pairs()
    if not datasets:
        console.print("no labelled pairs: pip install fow-cache contradish")
        return 1
    fast = StaticEmbedder()
    ver = OnnxEmbedder() if verifier and minilm_available() else None
    plain = {k: v for k, v in settings.__dict__.items() if k != "tenant_thresholds"}
    report: dict[str, Any] = {"settings": plain, "verifier": ver is not None, "datasets": {}}
    for name, pairs in datasets.items():
        report["datasets"][name] = {
            "pairs": len(pairs), "same": sum(p.same for p in pairs),
            "sweep": sweep(pairs, fast, ver, settings),
            "live": [live(pairs, fast, ver, settings, m) for m in ("pairwise", "shared", "cross-tenant")],
            "categories": by_category(pairs, fast, ver, settings),
        }
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        render(report, console)
    live_rows = [r for d in report["datasets"].values() for r in d["live"]]
    return 0 if sum(r["hits"] for r in live_rows if r["mode"] == "cross-tenant") == 0 else 2


def render(report: dict[str, Any], console: Console) -> None:
    for name, d in report["datasets"].items():
        table = Table(title=f"{name}: {d['pairs']} pairs, {d['same']} same-answer — precision / hit rate")
        cols = [c for c in ("static_raw", "static_guarded", "minilm_raw", "two_stage_guarded")
                if c in d["sweep"][0]]
        table.add_column("threshold")
        for c in cols:
            table.add_column(c)
        for row in d["sweep"]:
            table.add_row(f"{row['threshold']:.2f}", *(
                f"{row[c]['precision']:.3f} / {row[c]['hit_rate']:.3f}" for c in cols))
        console.print(table)
        for r in d["live"]:
            console.print(f"  live {r['mode']:>12}: precision {r['precision']:.3f}, "
                          f"hit rate {r['hit_rate']:.3f}, false hits {r['false_hits']}, hits {r['hits']}, "
                          f"{r['ms_per_lookup']:.2f} ms/lookup")
        cats = ", ".join(f"{c} {v['hits']}/{v['pairs']}" for c, v in d["categories"].items())
        console.print(f"  hits by category: {cats}")
