"""Which offset is safe to commit when messages finish out of order (concurrent processing)."""

from __future__ import annotations

from dataclasses import dataclass, field

TP = tuple[str, int]


@dataclass
class _Partition:
    in_flight: set[int] = field(default_factory=set)
    next_offset: int = -1  # one past the highest offset started
    committed: int = -1


class OffsetTracker:
    """Commit position per partition = the lowest offset still in flight, or one past the highest
    started when none is: a crash then replays exactly the unfinished messages (and perhaps some
    finished after them, which downstream dedup absorbs), never skipping one."""

    def __init__(self) -> None:
        self._partitions: dict[TP, _Partition] = {}

    def started(self, tp: TP, offset: int) -> None:
        part = self._partitions.setdefault(tp, _Partition())
        part.in_flight.add(offset)
        part.next_offset = max(part.next_offset, offset + 1)

    def finished(self, tp: TP, offset: int) -> None:
        part = self._partitions.get(tp)
        if part is not None:
            part.in_flight.discard(offset)

    @property
    def in_flight(self) -> int:
        return sum(len(p.in_flight) for p in self._partitions.values())

    def in_flight_of(self, topic: str) -> int:
        return sum(len(p.in_flight) for (t, _), p in self._partitions.items() if t == topic)

    def to_commit(self, only: set[TP] | None = None) -> dict[TP, int]:
        """Positions that moved since the last call (marked as committed)."""
        out = {}
        for tp, part in self._partitions.items():
            if only is not None and tp not in only:
                continue
            position = min(part.in_flight) if part.in_flight else part.next_offset
            if position > part.committed:
                out[tp] = part.committed = position
        return out

    def forget(self, tps: set[TP]) -> None:
        for tp in tps:
            self._partitions.pop(tp, None)
