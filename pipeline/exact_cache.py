"""Exact answer cache: fingerprint -> answer, with a TTL and an entry bound (LRU eviction)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedAnswer:
    answer: str
    model: str
    source_query_id: str
    stored_at: float
    all_llm_cost_usd: float = 0.0  # the source answer's all-LLM counterfactual: a hit's own


class ExactCache:
    def __init__(self, *, ttl_s: float = 3600.0, max_entries: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, fingerprint: str, now: float) -> CachedAnswer | None:
        entry = self._entries.get(fingerprint)
        if entry is None:
            return None
        if now - entry.stored_at > self.ttl_s:
            del self._entries[fingerprint]
            return None
        self._entries.move_to_end(fingerprint)
        return entry

    def put(self, fingerprint: str, entry: CachedAnswer) -> None:
        self._entries[fingerprint] = entry
        self._entries.move_to_end(fingerprint)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
