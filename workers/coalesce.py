"""Worker-side coalescing: identical queries (same fingerprint) share one inference.

The router keys route requests by fingerprint, so every copy of a query lands on the same
partition and therefore the same worker. Within a batch, copies are grouped; across batches a
short-lived memory of recent answers catches copies that arrive just after the first finished,
before the router's cache has learned the answer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from topics.schemas import RouteRequest

A = TypeVar("A")


@dataclass
class Group:
    leader: RouteRequest
    followers: list[RouteRequest]


def group_by_fingerprint(requests: list[RouteRequest]) -> list[Group]:
    groups: dict[str, Group] = {}
    for request in requests:
        group = groups.get(request.fingerprint)
        if group is None:
            groups[request.fingerprint] = Group(request, [])
        elif request.query_id != group.leader.query_id:
            group.followers.append(request)  # a replayed copy of the leader itself is dropped
    return list(groups.values())


class RecentAnswers(Generic[A]):
    """fingerprint -> answer for a short window, bounded."""

    def __init__(self, *, ttl_s: float = 120.0, max_entries: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, A]] = OrderedDict()

    def get(self, fingerprint: str, now: float) -> A | None:
        item = self._items.get(fingerprint)
        if item is None or now - item[0] > self.ttl_s:
            return None
        return item[1]

    def put(self, fingerprint: str, answer: A, now: float) -> None:
        self._items[fingerprint] = (now, answer)
        self._items.move_to_end(fingerprint)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
