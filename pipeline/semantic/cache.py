"""Semantic answer cache: tenant-scoped cosine top-k, guards, TTL, entry bound; cheap stage first.

A lookup (run only on exact-cache misses):
  1. the fast embedder (static, ~20 µs) embeds the query; the index of (tenant, max_tokens,
     temperature) gives `candidates` nearest entries: another tenant's entries are never searched,
     and different generation parameters never meet;
  2. expired entries, other chat contexts and guard conflicts (negation, numbers, entities,
     direction, operand order, swapped words, long shared prefix) are dropped: all pure, no model;
  3. the same words up to spelling (`acount`, `adress`): hit, whatever the cosine;
     static cosine >= fast_accept: hit; < fast_reject: miss; in between (the grey band) the
     verifier (MiniLM ONNX) embeds query and candidate in one micro-batch for the whole lookup
     batch, and its cosine must reach the tenant's threshold.
  4. a miss whose deciding cosine is within `explore_band` under the tenant's threshold carries its
     candidate as `Lookup.near`: the router may have it judged by a shadow (exploration), never
     served. Tenant thresholds may be a live mapping (pipeline/semantic/learned.py).
Entries are evicted oldest first past `max_entries` and dropped after `ttl_s`. Insertion order is
the results stream's order, so every router that replays the stream holds the same cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.fingerprint import normalise
from pipeline.semantic.embedders import Embedder
from pipeline.semantic.guards import first_conflict, spelling_variant, warm
from pipeline.semantic.index import VectorIndex
from topics.schemas import Query


@dataclass(frozen=True)
class SemanticSettings:
    threshold: float = 0.85  # verifier cosine for a hit (static cosine when there is no verifier);
    # a tenant whose own threshold exceeds fast_accept always goes through the verifier
    fast_accept: float = 0.97  # static cosine this high is a hit without the verifier
    fast_reject: float = 0.60  # static cosine below: a miss without the verifier (keeps 99% of the
    # pairs MiniLM accepts at 0.85 on the contradish dev pairs)
    candidates: int = 3
    ttl_s: float = 3600.0
    max_entries: int = 1_000_000
    max_chars: int = 4000  # longer prompts are left to the exact cache
    tenant_thresholds: Mapping[str, float] = field(default_factory=dict)
    ivf_from: int = 20_000
    nprobe: int = 8
    # exploration: a miss whose cosine is this close under the tenant's threshold carries its
    # candidate (Lookup.near), so the router can have it judged without serving it (0: off)
    explore_band: float = 0.0

    def threshold_for(self, tenant: str) -> float:
        return self.tenant_thresholds.get(tenant, self.threshold)


def parse_thresholds(spec: str) -> dict[str, float]:
    """`acme=0.9,globex=0.95` -> per-tenant similarity thresholds."""
    pairs = (item.partition("=") for item in spec.split(",") if item.strip())
    return {tenant.strip(): float(value) for tenant, _, value in pairs}


@dataclass(frozen=True, slots=True)
class SemanticKey:
    tenant: str
    text: str  # the last user message
    context: tuple[str, ...] = ()  # earlier messages, normalised: must match exactly
    max_tokens: int = 256
    temperature: float = 0.0

    @property
    def group(self) -> tuple[str, int, float]:
        return self.tenant, self.max_tokens, round(self.temperature, 3)


def key_for(query: Query) -> SemanticKey:
    chat = query.chat()
    context = tuple(f"{m.role}:{normalise(m.content)}" for m in chat[:-1])
    return SemanticKey(query.tenant, chat[-1].content, context, query.max_tokens, query.temperature)


@dataclass(frozen=True, slots=True)
class SemanticEntry:
    key: SemanticKey
    answer: str
    model: str
    source_query_id: str
    stored_at: float
    # the source answer's all-LLM counterfactual; a hit carries it (a paraphrase is priced as
    # its source: near enough, since the hit shares its answer and nearly its prompt)
    all_llm_cost_usd: float = 0.0


@dataclass(frozen=True)
class Lookup:
    entry: SemanticEntry | None  # None: a miss
    similarity: float | None  # cosine of the best candidate at the deciding stage
    stage: Literal["none", "static", "verifier"]
    reason: str  # for Result.route_reason: why it hit or missed
    near: SemanticEntry | None = None  # a miss within explore_band under the threshold: its entry


class SemanticCache:
    def __init__(self, fast: Embedder, verifier: Embedder | None = None,
                 settings: SemanticSettings | None = None) -> None:
        self.fast = fast
        self.verifier = verifier
        self.settings = settings or SemanticSettings()
        self._entries: OrderedDict[int, SemanticEntry] = OrderedDict()  # oldest first
        self._by_key: dict[SemanticKey, int] = {}
        self._indexes: dict[tuple[str, int, float], VectorIndex] = {}
        self._verified: OrderedDict[int, np.ndarray] = OrderedDict()  # entry id -> verifier vector
        self._next_id = 0
        self.stats = {"lookups": 0, "hits": 0, "verifier_calls": 0, "guard_rejects": 0}
        warm()

    def __len__(self) -> int:
        return len(self._entries)

    def put_batch(self, entries: Sequence[SemanticEntry], now: float,
                  vectors: np.ndarray | None = None) -> None:
        """Add results (a micro-batch from the results stream); `vectors`: their fast embeddings, if known."""
        ok = [i for i, e in enumerate(entries) if 0 < len(e.key.text) <= self.settings.max_chars]
        if not ok:
            return
        keep = [entries[i] for i in ok]
        vectors = self.fast.embed([e.key.text for e in keep]) if vectors is None else vectors[ok]
        for entry, vec in zip(keep, vectors, strict=True):
            old = self._by_key.pop(entry.key, None)
            if old is not None:
                self._drop(old)
            eid, self._next_id = self._next_id, self._next_id + 1
            self._entries[eid] = entry
            self._by_key[entry.key] = eid
            index = self._indexes.get(entry.key.group)
            if index is None:
                index = self._indexes[entry.key.group] = VectorIndex(
                    self.fast.dim, ivf_from=self.settings.ivf_from, nprobe=self.settings.nprobe,
                    nlist=int(np.clip(np.sqrt(self.settings.max_entries), 16, 4096)))
            index.add(eid, vec)
        self._evict(now)

    def put(self, entry: SemanticEntry, now: float) -> None:
        self.put_batch([entry], now)

    def embed(self, keys: Sequence[SemanticKey]) -> np.ndarray:
        """The fast stage's vectors of the keys' texts: compute once, pass to lookup_batch and the policy."""
        return self.fast.embed([k.text for k in keys])

    def lookup_batch(self, keys: Sequence[SemanticKey], now: float,
                     vectors: np.ndarray | None = None) -> list[Lookup]:
        """One Lookup per key; `vectors`: the keys' fast embeddings if the caller has them already."""
        s = self.settings
        out = [Lookup(None, None, "none", "semantic: no candidate")] * len(keys)
        todo = [i for i, k in enumerate(keys) if k.group in self._indexes and 0 < len(k.text) <= s.max_chars]
        self.stats["lookups"] += len(keys)
        if not todo:
            return out
        vectors = self.fast.embed([keys[i].text for i in todo]) if vectors is None else vectors[todo]
        by_group: dict[tuple[str, int, float], list[int]] = {}
        for row, i in enumerate(todo):
            by_group.setdefault(keys[i].group, []).append(row)
        near: dict[int, list[tuple[int, float]]] = {}
        for group, rows in by_group.items():  # one search per group: a GEMM while the index is flat
            for row, found in zip(rows, self._indexes[group].search_batch(vectors[rows], s.candidates),
                                  strict=True):
                near[todo[row]] = found
        grey: list[tuple[int, int, float]] = []  # (query index, entry id, static cosine)
        for i in todo:
            found = self._candidate(keys[i], near[i], now)
            if isinstance(found, str):
                out[i] = Lookup(None, None, "none", found)
                continue
            eid, sim = found
            if self._spelling_variant(keys[i], eid):
                out[i] = Lookup(self._entries[eid], sim, "static", "semantic static: same words up to "
                                f"spelling (cosine {sim:.3f}) vs {self._entries[eid].source_query_id}")
            elif self.verifier is None:
                hit = sim >= s.threshold_for(keys[i].tenant)
                out[i] = self._decide(hit, eid, sim, "static", s.threshold_for(keys[i].tenant),
                                      near=True)
            elif sim >= max(s.fast_accept, s.threshold_for(keys[i].tenant)):  # a stricter tenant waits
                out[i] = self._decide(True, eid, sim, "static", s.fast_accept)
            elif sim < s.fast_reject:
                out[i] = self._decide(False, eid, sim, "static", s.fast_reject)
            else:
                grey.append((i, eid, sim))
        if grey:
            for (i, eid, _), sim in zip(grey, self._verify(keys, grey), strict=True):
                out[i] = self._decide(sim >= s.threshold_for(keys[i].tenant), eid, sim, "verifier",
                                      s.threshold_for(keys[i].tenant), near=True)
        self.stats["hits"] += sum(o.entry is not None for o in out)
        return out

    def _candidate(self, key: SemanticKey, near: list[tuple[int, float]],
                   now: float) -> tuple[int, float] | str:
        """The nearest live entry that passes every guard, or why there is none."""
        reasons = ["semantic: no candidate"]  # the best candidate's reason is the one reported
        for eid, sim in near:
            entry = self._entries.get(eid)
            if entry is None:  # dropped as expired by an earlier query of this batch
                continue
            if now - entry.stored_at > self.settings.ttl_s:
                self._drop(eid)
                continue
            if entry.key.context != key.context:
                reasons.append("semantic: other conversation context")
                continue
            conflict = first_conflict(entry.key.text, key.text)
            if conflict is not None:
                self.stats["guard_rejects"] += 1
                reasons.append(f"semantic guard: {conflict} (cosine {sim:.3f})")
                continue
            return eid, sim
        return reasons[min(1, len(reasons) - 1)]

    def _spelling_variant(self, key: SemanticKey, eid: int) -> bool:
        """A typo'd repeat of the entry hits whatever its cosine, unless the tenant is stricter than
        the fast stage (a strict tenant always goes through its threshold)."""
        lax = self.settings.threshold_for(key.tenant) <= self.settings.fast_accept
        return lax and spelling_variant(self._entries[eid].key.text, key.text)

    def _verify(self, keys: Sequence[SemanticKey], grey: list[tuple[int, int, float]]) -> list[float]:
        assert self.verifier is not None
        missing = [eid for _, eid, _ in grey if eid not in self._verified]
        texts = [keys[i].text for i, _, _ in grey] + [self._entries[e].key.text for e in missing]
        vecs = self.verifier.embed(texts)  # one micro-batch: queries and uncached candidates
        self.stats["verifier_calls"] += 1
        for eid, vec in zip(missing, vecs[len(grey):], strict=True):
            self._verified[eid] = vec
            if len(self._verified) > 100_000:  # bounded memo of candidate vectors
                self._verified.popitem(last=False)
        return [float(q @ self._verified[eid]) if eid in self._verified else 0.0
                for q, (_, eid, _) in zip(vecs[: len(grey)], grey, strict=True)]

    def _decide(self, hit: bool, eid: int, sim: float, stage: Literal["static", "verifier"],
                bar: float, *, near: bool = False) -> Lookup:
        """`near`: `bar` is the tenant threshold, so a miss just under it is a near miss."""
        entry = self._entries[eid]
        verdict = ">=" if hit else "<"
        reason = f"semantic {stage}: cosine {sim:.3f} {verdict} {bar:.2f} vs {entry.source_query_id}"
        band = self.settings.explore_band
        is_near = near and not hit and band > 0 and sim >= bar - band
        return Lookup(entry if hit else None, sim, stage, reason, near=entry if is_near else None)

    def _drop(self, eid: int) -> None:
        entry = self._entries.pop(eid, None)
        if entry is None:
            return
        if self._by_key.get(entry.key) == eid:
            del self._by_key[entry.key]
        self._verified.pop(eid, None)
        index = self._indexes[entry.key.group]
        index.remove(eid)
        if not len(index):
            del self._indexes[entry.key.group]

    def _evict(self, now: float) -> None:
        while len(self._entries) > self.settings.max_entries:
            self._drop(next(iter(self._entries)))
        while self._entries:  # oldest first: stop at the first entry still fresh
            eid, entry = next(iter(self._entries.items()))
            if now - entry.stored_at <= self.settings.ttl_s:
                break
            self._drop(eid)
