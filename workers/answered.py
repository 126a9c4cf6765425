"""What the results topic says is already answered, so a worker never pays for it twice.

RecentAnswers (coalesce.py) remembers this process's own answers for two minutes; a backlog
deeper than that, a replay after a crash, or partitions moved to a fresh worker by a rebalance
all bring back requests that were answered long ago. This index is fed from the results topic
itself (every partition, from a lookback: pipeline/cache_feed.py ResultsFeed, wired by the app
in pipeline/roles.py), so it knows every answer any worker produced, and survives restarts.

Two questions, two rules:
- `has_result(query_id, fingerprint)`: this very query (this id with this content; the
  fingerprint covers the tenant too) already has a result on the topic. The worker skips it:
  commits, sends nothing (the result is durable already, and the sink keeps one row per query).
  Another tenant's or another text's query under the same id is a query of its own.
- `answer_for(fingerprint)`: the same question was answered for another query id. The worker
  answers it as `coalesced` from that answer, without inference.
Failed results teach neither: a query whose answer was an error deserves another try.

Pure (no Kafka): `learn` takes decoded Results; thread-safe, because the feed runs in a thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from topics.schemas import Result
from workers.answers import Answer

# the routes that ran a model for this fingerprint (the router's exact cache learns the same ones:
# a cache or semantic-cache answer belongs to another fingerprint's question)
ANSWERING_ROUTES = frozenset({"slm", "llm", "escalated"})


class AnsweredIndex:
    def __init__(self, *, ttl_s: float = 3600.0, max_query_ids: int = 200_000,
                 max_answers: int = 50_000, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.max_query_ids = max_query_ids
        self.max_answers = max_answers
        self.clock = clock
        self._lock = threading.Lock()
        self._queries: OrderedDict[tuple[str, str], float] = OrderedDict()  # (id, fp) -> completed_at
        self._answers: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self.learned = 0

    def learn(self, results: Iterable[Result]) -> None:
        with self._lock:
            for result in results:
                if result.error:
                    continue
                self.learned += 1
                at = result.completed_at or self.clock()
                _put(self._queries, (result.query_id, result.fingerprint), at, self.max_query_ids)
                if result.route in ANSWERING_ROUTES and result.fingerprint:
                    # the step that answered, not the tries of the query it answered first
                    answer = Answer(result.answer, result.model, confidence=result.confidence,
                                    all_llm_cost_usd=result.all_llm_cost_usd,
                                    upstream=result.upstream, trail=result.trail[-1:])
                    _put(self._answers, result.fingerprint, (at, answer), self.max_answers)

    def has_result(self, query_id: str, fingerprint: str) -> bool:
        with self._lock:
            at = self._queries.get((query_id, fingerprint))
            return at is not None and self.clock() - at <= self.ttl_s

    def answer_for(self, fingerprint: str) -> Answer | None:
        with self._lock:
            item = self._answers.get(fingerprint)
            if item is None or self.clock() - item[0] > self.ttl_s:
                return None
            return item[1]


def _put(items: OrderedDict, key: object, value: object, bound: int) -> None:
    items[key] = value
    items.move_to_end(key)
    while len(items) > bound:
        items.popitem(last=False)  # the oldest learned goes first
