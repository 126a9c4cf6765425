"""A job's answers as they come back: what is answered, failed and spent, per query id.

Seeded from ClickHouse (what earlier runs of the job got) and kept current from the results
topic (pipeline/cache_feed.py's ResultsFeed, read from a little before the run started), so the
progress and the budget follow answers the moment workers produce them, not when the sink has
stored them. A query id counts once however many times its result is read: ClickHouse and the
topic overlap, and a replayed result is the same answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from clickhouse_connect.driver.binding import format_str

from infra.query_server import Reader
from topics.errors import PointsmanError
from topics.schemas import Result


@dataclass(frozen=True)
class Answer:
    cost_usd: float
    error: bool


class JobTally:
    def __init__(self, job: str) -> None:
        self.job = job
        self._answers: dict[str, Answer] = {}
        self._spent = 0.0
        self._errors = 0
        self._lock = threading.Lock()

    def _put(self, query_id: str, answer: Answer) -> None:
        """Record (or replace) one answer and keep the sums current; the lock is held."""
        old = self._answers.get(query_id)
        if old is not None:
            self._spent -= old.cost_usd
            self._errors -= old.error
        self._answers[query_id] = answer
        self._spent += answer.cost_usd
        self._errors += answer.error

    def seed(self, reader: Reader) -> None:
        """What ClickHouse holds for the job already."""
        try:
            _, rows = reader.query(
                "SELECT query_id, cost_usd, error != '' FROM pointsman.results FINAL "
                f"WHERE job = {format_str(self.job)}")
        except PointsmanError as exc:
            if "UNKNOWN_DATABASE" not in str(exc) and "UNKNOWN_TABLE" not in str(exc):
                raise
            return  # no sink has made the database yet: nothing is answered
        with self._lock:
            for query_id, cost, error in rows:
                if str(query_id) not in self._answers:  # the topic's copy is as new or newer
                    self._put(str(query_id), Answer(float(cost), bool(error)))

    def learn(self, results: list[Result]) -> None:
        """The ResultsFeed callback: the job's results among all of them."""
        mine = [r for r in results if r.job == self.job]
        if not mine:
            return
        with self._lock:
            for r in mine:
                self._put(r.query_id, Answer(r.cost_usd, r.error is not None))

    def has(self, query_id: str) -> bool:
        with self._lock:
            return query_id in self._answers

    @property
    def answered(self) -> int:
        with self._lock:
            return len(self._answers)

    @property
    def errors(self) -> int:
        return self._errors

    @property
    def spent_usd(self) -> float:
        return max(self._spent, 0.0)
