"""One run of a backfill job: send the rows not handled yet, at the rate and within the budget
given, and follow their answers until all are in.

The job's state goes to the jobs topic (keyed by its name, compacted) after every delivered
chunk: rows before `next_row` were sent, skipped or dead-lettered, so the same command run again
starts there. A row whose query id has an answer already is skipped, not sent; one that was sent
just before an interruption and is sent again collapses on its id (the router does not answer an
id twice: pipeline/decide.py). A row that is not a valid query goes to the dead-letter topic with
its row number and the reason, and is not sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from infra.kafka_io import Outgoing, OutputProducer
from infra.query_server import Reader
from pipeline.backfill.pacing import RateLimit, Window
from pipeline.backfill.rows import parse_line, query_bytes
from pipeline.backfill.sources import Source, SourceRow
from pipeline.backfill.tally import JobTally
from pipeline.cache_feed import ResultsFeed
from pipeline.produce import unsent_letter
from topics.codec import decode, encode
from topics.errors import InvalidMessage
from topics.limits import MAX_MESSAGE_BYTES
from topics.names import Topics
from topics.schemas import JobState, JobStatus

RESULTS_LOOKBACK_S = 900.0  # answers produced before the run and not yet stored are read back
CHECKPOINT_EVERY_S = 1.0
STALL_WARNING_S = 60.0


class JobConflict(Exception):
    """The job name belongs to another source."""


@dataclass(frozen=True)
class JobSettings:
    name: str
    rate: float | None = None  # queries per second; None: as fast as the window allows
    budget_usd: float | None = None
    window: int = 1000  # queries in flight (sent, not answered) at most
    wait: bool = True  # follow the answers until every sent query has one
    chunk: int = 200  # rows per delivery (and per checkpoint, at the most)
    cache: bool = True  # False: every query answered afresh (a re-run under a new model)


@dataclass
class RunOutcome:
    state: JobState
    answered: int
    errors: int
    spent_usd: float
    waiting: int = 0  # sent and still unanswered when the command returned
    # this run's own part of state.sent, skipped and invalid (the state counts every run)
    sent_now: int = 0
    skipped_now: int = 0
    invalid_now: int = 0


def read_state(bootstrap: str, topic: str, name: str, timeout_s: float = 30.0) -> JobState | None:
    """The job's latest state on the jobs topic, or None: every partition read to its end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "pointsman-jobs-read-unused",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        partitions = list(consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        if not ends:
            return None
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        latest: JobState | None = None
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        ends.pop(message.partition(), None)
                    continue
                if message.key() == name.encode():
                    try:
                        state = decode(message.value(), JobState)
                    except InvalidMessage:
                        continue
                    if latest is None or state.updated_at >= latest.updated_at:
                        latest = state
                if message.offset() + 1 >= ends.get(message.partition(), 0):
                    ends.pop(message.partition(), None)
        return latest
    finally:
        consumer.close()


class JobRun:
    def __init__(self, bootstrap: str, topics: Topics, settings: JobSettings, source: Source,
                 open_reader: Callable[[], Reader], console: Console,
                 clock: Callable[[], float] = time.time) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.settings = settings
        self.source = source
        self.open_reader = open_reader
        self.console = console
        self.clock = clock
        self.producer = OutputProducer(bootstrap)
        self.tally = JobTally(settings.name)
        self.pending: set[str] = set()  # sent by this run, not answered yet

    # -- state --------------------------------------------------------------------------------

    def _starting_state(self) -> JobState:
        now = self.clock()
        previous = read_state(self.bootstrap, self.topics.jobs, self.settings.name)
        if previous is None:
            return JobState(name=self.settings.name, source=self.source.description,
                            status="running", total=self.source.total, next_row=0,
                            budget_usd=self.settings.budget_usd, rate=self.settings.rate,
                            started_at=now, updated_at=now)
        if previous.source != self.source.description:
            raise JobConflict(f"job {self.settings.name!r} reads {previous.source!r}, not "
                              f"{self.source.description!r}: give this source another --job name")
        if previous.total != self.source.total:
            self.console.print(f"[yellow]warning:[/] {self.source.description} had "
                               f"{previous.total} rows and has {self.source.total} now; rows "
                               f"{previous.next_row + 1} on are sent, earlier ones were handled")
        return JobState(name=previous.name, source=previous.source, status="running",
                        total=self.source.total, next_row=previous.next_row, sent=previous.sent,
                        skipped=previous.skipped, invalid=previous.invalid,
                        budget_usd=self.settings.budget_usd, rate=self.settings.rate,
                        started_at=previous.started_at, updated_at=now)

    def _save(self, state: JobState, status: JobStatus | None = None) -> JobState:
        state.updated_at = self.clock()
        if status is not None:
            state.status = status
        self.producer.send([Outgoing(self.topics.jobs, state.name.encode(), encode(state))])
        self.producer.deliver()
        return state

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        state = self._starting_state()
        before = (state.sent, state.skipped, state.invalid)
        reader = self.open_reader()
        try:
            self.tally.seed(reader)
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()  # an embedded database is not held while the job runs: the sink needs it
        feed = ResultsFeed(self.bootstrap, self.topics.results, self.tally.learn,
                           lookback_s=RESULTS_LOOKBACK_S)
        feed.start()
        feed.caught_up.wait(30)
        try:
            with self._progress() as progress:
                state = self._send_all(state, progress)
                if self.settings.wait:
                    self._follow(progress)
        except KeyboardInterrupt:
            if state.status == "running":  # stopped while sending (not while following answers)
                self._save(state, "paused")
            raise
        finally:
            feed.stop()
        self._prune()
        return RunOutcome(state, self.tally.answered, self.tally.errors, self.tally.spent_usd,
                          len(self.pending), state.sent - before[0],
                          state.skipped - before[1], state.invalid - before[2])

    def _send_all(self, state: JobState, progress: _Bars) -> JobState:
        window = Window(self.settings.window, self.settings.budget_usd)
        rate = RateLimit(self.settings.rate)
        self._save(state)
        chunk: list[Outgoing] = []
        chunk_ids: list[str] = []
        handled_through = state.next_row
        last_save = time.monotonic()

        def deliver() -> None:
            nonlocal chunk, chunk_ids, last_save
            if chunk:
                self.producer.send(chunk)
                self.producer.deliver()
                self.pending.update(chunk_ids)
                chunk, chunk_ids = [], []
            state.next_row = handled_through
            if time.monotonic() - last_save >= CHECKPOINT_EVERY_S:
                self._save(state)
                last_save = time.monotonic()
            # answers in since the last delivery free their slots; per chunk, not per row
            self._prune()
            progress.update(state, self.tally, len(self.pending))

        for row in self.source.rows():
            if row.number <= state.next_row:
                continue  # handled by an earlier run
            while True:
                if window.exhausted(self.tally.spent_usd):
                    deliver()
                    return self._save(state, "budget")
                room = window.room(in_flight=len(self.pending) + len(chunk_ids),
                                   spent_usd=self.tally.spent_usd, answered=self.tally.answered)
                wait = rate.wait_s(self.clock())
                if room > 0 and wait == 0:
                    break
                deliver()  # what is ready goes now, not after the wait
                time.sleep(min(wait, 0.1) if wait else 0.05)
            out = self._outgoing(row, state)
            handled_through = row.number
            if out is not None:
                query_id, message = out
                chunk.append(message)
                if message.topic == self.topics.backfill:
                    chunk_ids.append(query_id)
                    rate.sent(self.clock())
            if len(chunk) >= self.settings.chunk:
                deliver()
        deliver()
        return self._save(state, "done")

    def _outgoing(self, row: SourceRow, state: JobState) -> tuple[str, Outgoing] | None:
        """The row's message (a query, or its dead letter); None when its id is answered."""
        name = self.settings.name
        try:
            if len(row.raw) > MAX_MESSAGE_BYTES:
                raise InvalidMessage(f"{len(row.raw)} bytes, over the {MAX_MESSAGE_BYTES} byte "
                                     "message limit")
            fields = row.fields if row.fields is not None else parse_line(row.raw)
            query_id, raw = query_bytes(fields, job=name, number=row.number, now=self.clock(),
                                        mapped=row.mapped, cache=self.settings.cache)
        except InvalidMessage as exc:
            state.invalid += 1
            return "", self._dead_letter(row, exc.reason)
        if self.tally.has(query_id):
            state.skipped += 1
            return None
        state.sent += 1
        return query_id, Outgoing(self.topics.backfill, query_id.encode(), raw)

    def _dead_letter(self, row: SourceRow, reason: str) -> Outgoing:
        name = self.settings.name
        return unsent_letter(
            row.raw, f"backfill job {name}: {self.source.description} row {row.number}: {reason}; "
            "not sent", key=f"{name}:{row.number}", number=row.number, topic=self.topics.backfill,
            deadletter=self.topics.deadletter)

    def _prune(self) -> None:
        self.pending = {i for i in self.pending if not self.tally.has(i)}

    def _follow(self, progress: _Bars) -> None:
        answered, since = self.tally.answered, time.monotonic()
        warned = False
        while True:
            self._prune()
            progress.update(None, self.tally, len(self.pending))
            if not self.pending:
                return
            if self.tally.answered != answered:
                answered, since, warned = self.tally.answered, time.monotonic(), False
            elif not warned and time.monotonic() - since > STALL_WARNING_S:
                # the roles may be down, or a query failed before it had a result: say so, keep going
                self.console.print(
                    f"[yellow]no answer for {STALL_WARNING_S:.0f} s with {len(self.pending)} "
                    "queries out: are the pipeline's roles running? Ctrl-C stops waiting; "
                    f"`pointsman backfill status {self.settings.name}` follows them later[/yellow]")
                warned = True
            time.sleep(0.2)

    def _progress(self) -> _Bars:
        return _Bars(self.console, self.source.total, self.settings.budget_usd)


class _Bars:
    """Two bars: rows handled (sent, skipped or dead-lettered) and answers in, with rate and ETA."""

    def __init__(self, console: Console, total: int, budget_usd: float | None) -> None:
        columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn(), TextColumn("{task.fields[note]}"))
        self.progress = Progress(*columns, console=console, transient=False)
        self.budget_usd = budget_usd
        self.rows: TaskID = self.progress.add_task("rows", total=total, rate="", note="")
        self.answers: TaskID = self.progress.add_task("answered", total=total, rate="", note="")
        self.invalid = 0

    def __enter__(self) -> _Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, state: JobState | None, tally: JobTally, in_flight: int) -> None:
        if state is not None:
            self.invalid = state.invalid
            self.progress.update(self.rows, completed=state.next_row, note=f"{in_flight} in flight")
        total = self.progress.tasks[self.rows].total or 0
        spend = f"${tally.spent_usd:.4f}" + (f" of ${self.budget_usd:g}" if self.budget_usd else "")
        errors = f", {tally.errors} errors" if tally.errors else ""
        self.progress.update(self.answers, completed=tally.answered,
                             total=max(total - self.invalid, tally.answered), note=spend + errors)
        for task_id in (self.rows, self.answers):
            task = self.progress.tasks[task_id]
            speed = task.finished_speed or task.speed
            self.progress.update(task_id, rate=f"{speed:.1f}/s" if speed else "")
