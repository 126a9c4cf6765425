"""ClickHouse sink: results, dead letters and shadow evaluations from Kafka into pointsman.*
tables, in batches.

A batch is inserted, then its offsets are committed. No row can hold the others:
- a message that cannot be decoded or made into a row (a submitted_at of 1e20, a token count
  below 0 or beyond UInt32: check_result names the field) is stored as a dead letter with the
  reason, never a crash;
- an insert that ClickHouse refuses, or its client cannot serialise, is split in halves until
  each refused row stands alone: the good rows land and each refused one is stored in
  pointsman.dead_letters with the raw message and the error;
- only when the database itself is in trouble (the error says so, or a `SELECT 1` probe fails
  too) is the batch retried whole, with backoff, and consumption waits: rows are never dropped.
A dead letter the sink writes for a refused row holds only values that cannot be refused (text
made valid, numbers in range, the Kafka timestamp as its time), so nothing loops.

Layout: the tables keep their monthly partitions (results by submission time, letters by failure
time), which prunes analytics over history by month. Each insert is grouped by partition into
chunks of at most MAX_PARTITIONS_PER_INSERT months, well under ClickHouse's
max_partitions_per_insert_block (100), so a backfill spanning years goes in a few blocks.

Replays, whole-batch retries and the halves of a split are absorbed by the ReplacingMergeTree
keys (results: tenant, day, query id, fingerprint; letters: topic and letter id; evaluations:
tenant, route, day, query id, fingerprint), so a row
inserted twice never double counts when read FINAL (even twice in one insert: the inserts leave
that to FINAL and the merges too, INSERT_SETTINGS). A split re-sends only rows whose insert was
refused. A refused client insert stores nothing (the client makes a block it cannot serialise
fail whole); a refused engine-mapped one may have stored the blocks parsed before the bad row,
and their rows, sent again in the halves, collapse like any replay.

Rows: on the embedded engine the results go in as the messages themselves and the engine maps
them to columns (pipeline/sink_json.py: no Python row building or serialising, the bulk of the
sink's time); on a server, as rows made by `result_row`. Both store the same values.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any, NoReturn, TypeVar

import msgspec
import xxhash
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from infra.clickhouse import DEFAULT_RETENTION_DAYS, Database, RowsRefused, apply_retention
from pipeline import sink_json
from topics.codec import decode, raw_text
from topics.errors import InvalidMessage, RetryableError
from topics.limits import printable
from topics.names import Topics
from topics.schemas import DeadLetter, Evaluation, JobState, Query, Result
from workers.loop import LoopSettings, StopFlag, run_overlapped_loop

log = logging.getLogger(__name__)

RESULTS_TABLE = "pointsman.results"
LETTERS_TABLE = "pointsman.dead_letters"
RESULT_COLUMNS = [
    "query_id", "tenant", "route", "model", "answer", "error", "prompt_tokens",
    "completion_tokens", "cost_usd", "confidence", "similarity", "fingerprint", "route_reason",
    "submitted_at", "completed_at", "queued_ms", "routed_ms", "wait_ms", "inference_ms", "total_ms",
    "all_llm_cost_usd", "slm_cost_usd",  # 004_counterfactual_cost.sql
    "lane", "job", "prompt", "messages", "max_tokens", "temperature", "metadata",  # 006
    "policy", "score", "threshold", "upstream", "attempts", "trail",  # 008
]
DEAD_LETTER_COLUMNS = [
    "letter_id", "source_topic", "partition", "offset", "reason", "raw", "key", "query_id",
    "tenant", "failed_at",
]
EVALUATIONS_TABLE = "pointsman.evaluations"
EVALUATION_COLUMNS = [
    "query_id", "tenant", "route", "judge", "score", "fingerprint", "served_model", "shadow_model",
    "served_cost_usd", "shadow_cost_usd", "judge_cost_usd", "shadow_prompt_tokens",
    "shadow_completion_tokens", "confidence", "similarity", "source_query_id", "question",
    "served_answer", "shadow_answer", "submitted_at", "evaluated_at",
]
JOBS_TABLE = "pointsman.jobs"
JOB_COLUMNS = ["name", "source", "status", "total", "next_row", "sent", "skipped", "invalid",
               "budget_usd", "rate", "started_at", "updated_at"]
EVALUATED_SUBMITTED_AT = EVALUATION_COLUMNS.index("submitted_at")  # the evaluations' partition key
FAILED_AT = DEAD_LETTER_COLUMNS.index("failed_at")  # the letters' partition key
MAX_PARTITIONS_PER_INSERT = 50
# The engine's settings for the sink's inserts. optimize_on_insert=0: a ReplacingMergeTree insert
# does not collapse rows repeated inside its own block (a fifth of the engine's time per row,
# `pointsman bench sink`); such a repeat is then collapsed by FINAL and the merges, as a repeat
# across batches (a replay) always was, and every reader reads FINAL.
INSERT_SETTINGS: dict[str, Any] = {"optimize_on_insert": 0}
# what turning a decoded message into a row can raise: datetime.fromtimestamp(1e20) and the like
ROW_ERRORS = (ValueError, OverflowError, OSError, TypeError)

T = TypeVar("T")


@dataclass(frozen=True)
class SinkSettings:
    bootstrap: str
    topics: Topics
    dsn: str
    # an insert has a fixed cost (a part per month touched, a round trip, a temp file for the
    # embedded engine): 20000 rows an insert took about half the CPU per row of 5000 (`pointsman
    # bench sink`), for ~26 MB of messages in memory at 1.3 kB each
    batch_size: int = 20_000
    batch_wait_s: float = 0.5
    group: str = "pointsman-sink"
    # days answers and dead-letter bodies are kept after the row was written; 0 keeps them forever
    answer_retention_days: int = DEFAULT_RETENTION_DAYS


# -- pure logic: partition chunks and isolating refused rows --------------------------------------

def by_partition(rows: Sequence[T], month: Callable[[T], int], most: int) -> list[list[T]]:
    """`rows` grouped into chunks that each span at most `most` monthly partitions."""
    if not rows:
        return []
    if len(set(map(month, rows))) <= most:
        return [list(rows)]  # the usual batch: one insert, no regrouping row by row
    groups: dict[int, list[T]] = {}
    for row in rows:
        groups.setdefault(month(row), []).append(row)
    chunks: list[list[T]] = []
    for i, m in enumerate(sorted(groups)):
        if i % most == 0:
            chunks.append([])
        chunks[-1].extend(groups[m])
    return chunks


def insert_isolating(rows: list[T], insert: Callable[[list[T]], None]) -> list[tuple[T, str]]:
    """Insert `rows`; an insert that is refused is split in halves until each refused row stands
    alone. Returns the refused rows with the reason; RetryableError passes through."""
    if not rows:
        return []
    try:
        insert(rows)
        return []
    except RowsRefused as exc:
        if len(rows) == 1:
            return [(rows[0], exc.reason)]
    middle = len(rows) // 2
    return insert_isolating(rows[:middle], insert) + insert_isolating(rows[middle:], insert)


# -- rows -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Origin:
    """Where a row came from: enough to store it as a dead letter if it cannot be stored."""

    topic: str
    partition: int
    offset: int
    raw: bytes | None
    key: bytes | None
    timestamp_ms: int | None
    query_id: str = ""
    tenant: str = ""

    @staticmethod
    def of(message: Message, query_id: str = "", tenant: str = "") -> Origin:
        kind, ts = message.timestamp()
        return Origin(message.topic(), message.partition(), message.offset(), message.value(),
                      message.key(), None if kind == TIMESTAMP_NOT_AVAILABLE else ts,
                      query_id, tenant)


# not frozen: a frozen dataclass sets each field through object.__setattr__, which made a row
# cost 1.6 µs to make instead of 0.4, for every message
@dataclass(slots=True)
class Row:
    values: list[Any] | bytes  # the column values, or the message itself for the engine to map
    month: int  # YYYYMM: the monthly partition the row lands in
    # where it came from, kept as the message: an Origin is built only for a row that cannot be
    # stored (building one per row was a tenth of the sink's time)
    source: Message | Origin
    query_id: str = ""
    tenant: str = ""

    @property
    def origin(self) -> Origin:
        if isinstance(self.source, Origin):
            return self.source
        return Origin.of(self.source, self.query_id, self.tenant)


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)  # positional: the keyword cost half again (0.7/1.1 µs)


def _month(at: datetime) -> int:
    return at.year * 100 + at.month


MAX_ATTEMPTS = 2**16 - 1  # results.attempts is UInt16: more calls than that read as the most
UINT32_MAX = 2**32 - 1  # the token counts and max_tokens are UInt32
MAX_USD = 1e9  # the cost columns are Decimal(18, 9): under a billion dollars
NANO_USD = Decimal("1e-9")


# the times a datetime holds (years 1 to 9999): a result's times are checked against these
# instead of made into datetimes, a third of the check's time
FIRST_TS = datetime(1, 1, 1, tzinfo=UTC).timestamp()
END_TS = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()
DAY_S = 86_400


@lru_cache(maxsize=4096)
def _day_month(day: int) -> int:
    """YYYYMM of a day since the epoch: most rows of a batch share a few days."""
    return _month(_time(day * DAY_S))


def check_result(r: Result) -> int:
    """Raise ValueError, naming the field, for a value the results table cannot hold, so the
    row is a dead letter with a reason a person can act on (NaN fails the comparisons too).
    Returns the row's partition: the month of submitted_at. (One comparison chain per kind:
    this runs for every result.)"""
    if not (FIRST_TS <= r.submitted_at <= END_TS and FIRST_TS <= r.completed_at <= END_TS):
        _refuse({"submitted_at": r.submitted_at, "completed_at": r.completed_at},
                lambda v: FIRST_TS <= v <= END_TS, "years 1 to 9999")
    max_tokens = r.query.max_tokens if r.query is not None else 0
    if not (0 <= r.prompt_tokens <= UINT32_MAX and 0 <= r.completion_tokens <= UINT32_MAX
            and 0 <= max_tokens <= UINT32_MAX):
        _refuse({"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                 "max_tokens": max_tokens}, lambda v: 0 <= v <= UINT32_MAX, f"0 to {UINT32_MAX}")
    if r.attempts < 0:
        raise ValueError(f"attempts {r.attempts} is out of range (0 or more)")
    if not (-MAX_USD < r.cost_usd < MAX_USD and -MAX_USD < r.all_llm_cost_usd < MAX_USD
            and -MAX_USD < r.slm_cost_usd < MAX_USD):
        _refuse_usd({"cost_usd": r.cost_usd, "all_llm_cost_usd": r.all_llm_cost_usd,
                     "slm_cost_usd": r.slm_cost_usd})
    return _day_month(int(r.submitted_at // DAY_S))


def _refuse(values: dict[str, float], fits: Callable[[float], bool], allowed: str) -> NoReturn:
    name, value = next((n, v) for n, v in values.items() if not fits(v))
    raise ValueError(f"{name} {value} is out of range ({allowed})")


def _refuse_usd(costs: dict[str, float]) -> NoReturn:
    """For costs of which one does not fit a Decimal(18, 9) column."""
    _refuse(costs, lambda v: -MAX_USD < v < MAX_USD, "under a billion dollars")


def usd(amount: float) -> Decimal:
    """A cost for a Decimal(18, 9) column: the float's shortest decimal, rounded half away from
    zero to nine places, as the engine rounds it (pipeline/sink_json.py). The client would cut
    the repr after nine places: 0.0003 computed as 0.000299999… would store 0.000299999."""
    return Decimal(repr(amount)).quantize(NANO_USD, ROUND_HALF_UP)


def _ms(ts: float) -> int:
    """A DateTime64(3) as ticks: the nearest millisecond (half to even, as the engine's round)."""
    return round(ts * 1000)


def result_row(r: Result) -> list[Any]:
    t = r.timings
    return [
        r.query_id, r.tenant, r.route, r.model, r.answer, r.error or "", r.prompt_tokens,
        r.completion_tokens, usd(r.cost_usd), r.confidence, r.similarity, r.fingerprint,
        r.route_reason, _ms(r.submitted_at), _ms(r.completed_at), t.queued_ms, t.routed_ms,
        t.wait_ms, t.inference_ms, t.total_ms, usd(r.all_llm_cost_usd), usd(r.slm_cost_usd),
        r.lane, r.job, *prompt_values(r.query),
        r.policy, r.score, r.threshold, r.upstream, min(r.attempts, MAX_ATTEMPTS),
        [(s.track, s.model, s.upstream, s.outcome) for s in r.trail],
    ]


_json = msgspec.json.Encoder().encode


def prompt_values(query: Query | None) -> list[Any]:
    """prompt, messages, max_tokens, temperature and metadata of the question a result answers
    (metadata values that are not strings are stored as their JSON)."""
    if query is None:
        return ["", "", 0, 0.0, {}]
    messages = _json(query.messages).decode() if query.messages else ""
    metadata = {str(k): v if type(v) is str else _json(v).decode()
                for k, v in query.metadata.items()}
    return [query.text or "", messages, query.max_tokens, query.temperature, metadata]


def evaluation_row(e: Evaluation) -> list[Any]:
    # a score outside [0, 1] (or NaN) is a judge's bug; stored clamped, so the mean stays a mean
    score = min(1.0, max(0.0, e.score)) if e.score == e.score else 0.0
    costs = {"served_cost_usd": e.served_cost_usd, "shadow_cost_usd": e.shadow_cost_usd,
             "judge_cost_usd": e.judge_cost_usd}
    if not all(-MAX_USD < v < MAX_USD for v in costs.values()):
        _refuse_usd(costs)
    return [
        e.query_id, e.tenant, e.route, e.judge, score, e.fingerprint, e.served_model,
        e.shadow_model, *map(usd, costs.values()),
        e.shadow_prompt_tokens, e.shadow_completion_tokens, e.confidence, e.similarity,
        e.source_query_id, e.question, e.served_answer, e.shadow_answer,
        _time(e.submitted_at or e.evaluated_at), _time(e.evaluated_at),
    ]


def job_row(j: JobState) -> list[Any]:
    return [j.name, j.source, j.status, j.total, j.next_row, j.sent, j.skipped, j.invalid,
            j.budget_usd, j.rate, _time(j.started_at), _time(j.updated_at)]


def letter_id(d: DeadLetter) -> str:
    """Where the letter came from: a message's topic:partition:offset; else (a failed query, or a
    line `produce --file` could not send) its tenant, id and a hash of its text, so two tenants'
    (or two texts') failures under one id are two letters, and a replay is the same letter."""
    if d.offset >= 0 and d.partition >= 0:
        return f"{d.source_topic}:{d.partition}:{d.offset}"
    text_hash = xxhash.xxh3_64_hexdigest(d.raw.encode("utf-8", "surrogatepass"))
    return f"{d.source_topic}:{d.tenant or ''}:{d.query_id or ''}:{text_hash}"


def dead_letter_row(d: DeadLetter) -> list[Any]:
    return [
        letter_id(d), d.source_topic, d.partition, d.offset, d.reason, d.raw, d.key or "",
        d.query_id or "", d.tenant or "", _time(d.failed_at),
    ]


def _clamp(value: int, bits: int) -> int:
    return max(-(2 ** (bits - 1)), min(value, 2 ** (bits - 1) - 1))


_LATEST_MS = 4_102_444_800_000  # 2100-01-01: inside every DateTime type's range


def fallback_letter(origin: Origin, reason: str) -> Row:
    """The dead letter for a message that could not be stored; built from values that cannot be
    refused. Its time is the message's Kafka timestamp, so a replay is the same row."""
    ms = origin.timestamp_ms
    failed_at = (datetime.fromtimestamp(ms / 1000, tz=UTC) if ms is not None and 0 <= ms < _LATEST_MS
                 else datetime.now(tz=UTC))
    topic = printable(origin.topic, 1000)
    values = [
        f"{topic}:{origin.partition}:{origin.offset}", topic, _clamp(origin.partition, 32),
        _clamp(origin.offset, 64), printable(reason, 4000), raw_text(origin.raw),
        raw_text(origin.key),
        printable(origin.query_id, 1000), printable(origin.tenant, 1000), failed_at,
    ]
    return Row(values, _month(failed_at), origin)


# -- the writer -----------------------------------------------------------------------------------

class _GcPauses:
    """Pauses of the cyclic garbage collector that nest across threads: a batch is prepared
    while the one before is stored, and the collector comes back only when neither runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.was_enabled = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self.lock:
            if self.active == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1
                if self.active == 0 and self.was_enabled:
                    gc.enable()


_gc_pauses = _GcPauses()


def gc_paused() -> AbstractContextManager[None]:
    """No cyclic garbage collection inside: a batch allocates a few objects per field of every
    message, all of them kept to the end of the batch, so the collector ran again and again over
    the growing batch and took half the sink's time. Decoded messages and rows hold no cycles;
    what the other threads leave meanwhile is collected once the batch is done."""
    return _gc_pauses.paused()


@dataclass
class Prepared:
    """A batch made into rows, ready to store; storing it again (a retry) stores the same."""

    results: list[Row]
    letters: list[Row]
    evaluations: list[Row]
    jobs: list[Row]
    unstored: list[tuple[Origin, str]]  # messages no row could be made of, with the reason


class SinkWriter:
    """`prepare` makes a batch into rows (Python only: decode, checks); `store` inserts them
    (mostly the engine, which releases the GIL), so the sink's loop prepares the next batch
    while one is stored (workers/loop.py run_overlapped_loop). Calling it does both."""

    def __init__(self, database: Database, topics: Topics) -> None:
        self.database = database
        self.topics = topics
        self.rows_written = 0
        self.dead_lettered = 0
        self.engine_parses = database.embedded

    def __call__(self, batch: list[Message]) -> None:
        self.store(self.prepare(batch))

    def prepare(self, batch: list[Message]) -> Prepared:
        with gc_paused():
            return self._prepare(batch)

    def store(self, prepared: Prepared) -> None:
        with gc_paused():
            self._store_batch(prepared)

    def _prepare(self, batch: list[Message]) -> Prepared:
        results: list[Row] = []
        letters: list[Row] = []
        evaluations: list[Row] = []
        jobs: list[Row] = []
        unstored: list[tuple[Origin, str]] = []
        # the names once, not three f-strings per message (Topics builds them on each access)
        deadletter, jobs_topic = self.topics.deadletter, self.topics.jobs
        evaluations_topic = self.topics.evaluations
        for message in batch:
            topic = message.topic()
            query_id = tenant = ""  # known once decoded: a row that fails after is kept with them
            try:
                if topic == deadletter:
                    d = decode(message.value(), DeadLetter)
                    query_id, tenant = d.query_id or "", d.tenant or ""
                    values = dead_letter_row(d)
                    letters.append(Row(values, _month(values[FAILED_AT]), message, query_id, tenant))
                elif topic == jobs_topic:
                    values = job_row(decode(message.value(), JobState))
                    jobs.append(Row(values, 0, message))  # unpartitioned: one row per job
                elif topic == evaluations_topic:
                    e = decode(message.value(), Evaluation)
                    query_id, tenant = e.query_id, e.tenant
                    values = evaluation_row(e)
                    evaluations.append(Row(values, _month(values[EVALUATED_SUBMITTED_AT]), message,
                                           query_id, tenant))
                else:
                    value = message.value()
                    r = decode(value, Result)
                    query_id, tenant = r.query_id, r.tenant
                    month = check_result(r)
                    # the embedded engine makes the row from the message itself (sink_json)
                    results.append(Row(value if self.engine_parses else result_row(r), month,
                                       message, query_id, tenant))
            except InvalidMessage as exc:
                # only our code writes these topics, so this is a bug or a foreign producer
                unstored.append((Origin.of(message, query_id, tenant),
                                 f"sink: undecodable: {exc.reason}"))
            except ROW_ERRORS as exc:
                unstored.append((Origin.of(message, query_id, tenant),
                                 f"sink: cannot make a row: {exc}"))
        return Prepared(results, letters, evaluations, jobs, unstored)

    def _store_batch(self, prepared: Prepared) -> None:
        results, letters = prepared.results, prepared.letters
        evaluations, jobs = prepared.evaluations, prepared.jobs
        unstored = list(prepared.unstored)  # a retry starts from the batch as prepared
        stored = len(results) + len(letters) + len(evaluations) + len(jobs)
        for table, rows, columns in ((RESULTS_TABLE, results, RESULT_COLUMNS),
                                     (LETTERS_TABLE, letters, DEAD_LETTER_COLUMNS),
                                     (EVALUATIONS_TABLE, evaluations, EVALUATION_COLUMNS),
                                     (JOBS_TABLE, jobs, JOB_COLUMNS)):
            for row, reason in self._store_table(table, rows, columns):
                stored -= 1
                unstored.append((row.origin, f"sink: ClickHouse refused the row: {reason}"))
        fallbacks = [fallback_letter(origin, reason) for origin, reason in unstored]
        for origin, reason in unstored:
            log.error("sink kept %s:%d:%d as a dead letter: %s",
                      origin.topic, origin.partition, origin.offset, reason[:500])
        for chunk in by_partition(fallbacks, lambda row: row.month, MAX_PARTITIONS_PER_INSERT):
            try:
                self._insert(LETTERS_TABLE, DEAD_LETTER_COLUMNS, chunk)
            except RowsRefused as exc:  # cannot happen by construction; if it does, keep the batch
                raise RetryableError(f"ClickHouse refused a sink dead letter: {exc.reason}") from None
        self.rows_written += stored + len(fallbacks)
        self.dead_lettered += len(fallbacks)

    def _store_table(self, table: str, rows: list[Row], columns: list[str]) -> list[tuple[Row, str]]:
        """Insert rows partition-chunk by chunk; return those refused, with the reason."""
        refused: list[tuple[Row, str]] = []
        for chunk in by_partition(rows, lambda row: row.month, MAX_PARTITIONS_PER_INSERT):
            refused += insert_isolating(chunk, lambda part: self._insert(table, columns, part))
        return refused

    def _insert(self, table: str, columns: list[str], rows: list[Row]) -> None:
        if table == RESULTS_TABLE and self.engine_parses:
            insert_result_messages(self.database, table,
                                   [row.values for row in rows])  # type: ignore[arg-type]  # bytes here
        else:
            self.database.insert(table, [row.values for row in rows], columns, INSERT_SETTINGS)


def insert_result_messages(database: Database, table: str, messages: Sequence[bytes]) -> None:
    """Result messages, as they came off Kafka, into a results table: the engine maps them to
    the columns (pipeline/sink_json.py). Raises as Database.insert does."""
    database.insert_json(table, RESULT_COLUMNS, sink_json.SELECT, sink_json.STRUCTURE,
                         b"\n".join(messages), {**INSERT_SETTINGS, **sink_json.SETTINGS})


def run_sink(settings: SinkSettings, database: Database, stop: StopFlag) -> None:
    changed = apply_retention(database, settings.answer_retention_days)
    if changed:
        log.info("retention of %s set to %d days (0: forever)", ", ".join(changed),
                 settings.answer_retention_days)
    loop = LoopSettings(
        settings.bootstrap, settings.group,
        (settings.topics.results, settings.topics.deadletter, settings.topics.evaluations,
         settings.topics.jobs),
        settings.batch_size, settings.batch_wait_s,
    )
    writer = SinkWriter(database, settings.topics)
    run_overlapped_loop(loop, writer.prepare, writer.store, stop)
