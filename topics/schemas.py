"""Message schemas: the contract every stage reads and writes.

Structs are msgspec: decoding validates types in one fast pass, encoding is compact JSON.
Times are Unix epoch seconds (float); durations are milliseconds.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Route = Literal["slm", "llm", "cache", "coalesced", "semantic_cache", "escalated"]
Track = Literal["slm", "llm"]
# what a shadow judges: a served answer (slm, semantic_cache), or a semantic-cache candidate just
# under its tenant's threshold that was NOT served (exploration: the user got a fresh answer)
JudgedRoute = Literal[Route, "semantic_near_miss"]
# live: the queries topic, answered first; backfill: the backfill topic, answered in the room
# live traffic leaves (router, route topics and workers alike)
Lane = Literal["live", "backfill"]
LANES: tuple[str, ...] = ("live", "backfill")
ROUTES: tuple[str, ...] = ("slm", "llm", "cache", "coalesced", "semantic_cache", "escalated")


class ChatMessage(msgspec.Struct, frozen=True):
    role: str
    content: str


class Query(msgspec.Struct, frozen=True, omit_defaults=True):
    """What users produce to the queries topic. `text` or `messages`, not both required."""

    id: str | None = None
    tenant: str = "default"
    text: str | None = None
    messages: list[ChatMessage] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    metadata: dict[str, Any] = {}
    submitted_at: float | None = None
    deadline_s: float | None = None  # answer within this many seconds of submitted_at, or fail
    job: str | None = None  # the backfill job it belongs to (`pointsman backfill --job`)
    # False: answered afresh, never from a cache or an earlier answer to the same question (a
    # re-run under a new model or policy); copies in flight together still share one answer
    cache: bool = True

    def chat(self) -> list[ChatMessage]:
        """The query as chat messages, whichever form it arrived in."""
        if self.messages:
            return list(self.messages)
        return [ChatMessage(role="user", content=self.text or "")]


class Timings(msgspec.Struct, omit_defaults=True):
    """Per-stage latency in ms. Each stage fills its own field."""

    queued_ms: float = 0.0  # submitted -> router picked it up
    routed_ms: float = 0.0  # time spent inside the router
    wait_ms: float = 0.0  # router sent it -> a worker picked it up
    inference_ms: float = 0.0  # model or upstream call
    total_ms: float = 0.0  # submitted -> result produced


class ShadowOf(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a shadow request is the shadow of: the answer the user was served, so the LLM worker
    can judge its own fresh answer against it (see topics/shadow.py)."""

    route: JudgedRoute  # how the served answer was made: slm or semantic_cache (or a near miss)
    answer: str
    model: str = ""
    cost_usd: float = 0.0
    confidence: float | None = None  # the SLM's, for an slm answer
    similarity: float | None = None  # the match's, for a semantic-cache hit
    source_query_id: str = ""  # the cached answer's own query, for a semantic-cache hit


ANSWERED = "answered"  # the outcome of the step that answered
MAX_OUTCOME_CHARS = 300  # a step's outcome is cut to this: the trail stays small


class Step(msgspec.Struct, frozen=True, omit_defaults=True):
    """One try on the way to an answer, in order: the SLM that escalated, each upstream call.

    `outcome` is why the next step came ("low confidence 0.31 < 0.50", "openai answered 503"),
    or "answered" on the step that answered; redacted before it leaves a worker."""

    track: Track
    model: str = ""
    upstream: str = ""  # the upstream's configured name (never its URL or key); "" for the SLM
    outcome: str = ""


class RouteRequest(msgspec.Struct, frozen=True):
    """Router -> worker: a validated query with its fingerprint and why it was routed.

    A request with `shadow_of` is a shadow call: the LLM worker answers it only to judge the
    answer already served; it never becomes a Result."""

    query: Query
    query_id: str
    fingerprint: str
    track: Track
    reason: str
    submitted_at: float
    routed_at: float
    timings: Timings
    escalation: str | None = None  # set when the SLM handed this query to the LLM track
    # False: the SLM answers itself whatever its confidence (a tenant forced to the SLM, so an
    # all-SLM measurement gets the SLM's own answers)
    escalate: bool = True
    # what the SLM attempt before an escalation cost (its share of the micro-batch): the LLM
    # worker adds it to the escalated result's cost_usd, since that attempt was paid for too
    prior_cost_usd: float = 0.0
    shadow_of: ShadowOf | None = None
    lane: Lane = "live"
    # when the pipeline took the query in, the origin of its latencies: submitted_at for live
    # traffic; for a backfill, whose submitted_at is history, the time the job sent it
    accepted_at: float = 0.0
    # the routing decision (pipeline/policy.py Decision): which policy, the score it computed and
    # the threshold it compared with (None where it compared none: a fixed or forced track)
    policy: str = ""
    score: float | None = None
    threshold: float | None = None
    trail: tuple[Step, ...] = ()  # the tries before this request: the SLM's, on an escalation

    @property
    def started_at(self) -> float:
        return self.accepted_at or self.submitted_at


class Result(msgspec.Struct, omit_defaults=True):
    query_id: str
    tenant: str
    route: Route
    answer: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0  # everything this answer cost: an escalated one includes the SLM try
    confidence: float | None = None
    similarity: float | None = None
    error: str | None = None
    fingerprint: str = ""
    route_reason: str = ""
    submitted_at: float = 0.0
    completed_at: float = 0.0
    timings: Timings = msgspec.field(default_factory=Timings)
    # the question answered, so every router can fill its semantic cache from the results stream
    query: Query | None = None
    # What this query would have cost with no Pointsman in front: every query sent to the
    # configured LLM (workers/pricing.py all_llm_cost). 0.0 only where no tokens are known (a
    # failed call). Cache, semantic-cache and coalesced rows carry their source answer's figure.
    all_llm_cost_usd: float = 0.0
    slm_cost_usd: float = 0.0  # the part of cost_usd spent on the SLM (all of it on route slm)
    lane: Lane = "live"
    job: str = ""  # the backfill job's name, from the query
    # the routing decision, from the route request; "" / None where no policy decided (cache hits)
    policy: str = ""
    score: float | None = None
    threshold: float | None = None
    upstream: str = ""  # the upstream that answered (its configured name); "" off the LLM track
    attempts: int = 0  # upstream calls this row made (0: none of its own, as on coalesced rows)
    trail: tuple[Step, ...] = ()  # every try on the way to the answer, in order


class Evaluation(msgspec.Struct, omit_defaults=True):
    """LLM worker -> evaluations topic: a served answer judged against a shadow LLM answer.

    `score` is agreement in [0, 1]; `judge` says how it was measured (exact, embedding:<name>,
    llm). `shadow_cost_usd` is what the shadow cost, its judge call included: it is never part of
    the serving cost."""

    query_id: str
    tenant: str
    route: JudgedRoute  # the served route: slm or semantic_cache; semantic_near_miss: not served
    judge: str
    score: float
    fingerprint: str = ""
    served_model: str = ""
    shadow_model: str = ""
    served_cost_usd: float = 0.0
    shadow_cost_usd: float = 0.0
    judge_cost_usd: float = 0.0  # the LLM judge's call, already inside shadow_cost_usd
    shadow_prompt_tokens: int = 0
    shadow_completion_tokens: int = 0
    confidence: float | None = None
    similarity: float | None = None
    source_query_id: str = ""
    question: str = ""
    served_answer: str = ""
    shadow_answer: str = ""
    submitted_at: float = 0.0
    evaluated_at: float = 0.0


class DeadLetter(msgspec.Struct, omit_defaults=True):
    """A message that broke the contract (or failed for good), kept with the reason."""

    reason: str
    raw: str
    source_topic: str
    partition: int = -1
    offset: int = -1
    key: str | None = None
    query_id: str | None = None
    tenant: str | None = None
    failed_at: float = 0.0


JobStatus = Literal["running", "paused", "budget", "done"]


class JobState(msgspec.Struct, omit_defaults=True):
    """A backfill job's state, on the jobs topic keyed by its name (compacted: the latest wins).

    Rows before `next_row` were sent (or skipped as answered, or dead-lettered as invalid): a run
    of the same job starts there. `status` is how its last run ended, or `running`."""

    name: str
    source: str  # what it reads: a file path, or the SQL of --from-sql
    status: JobStatus
    total: int  # rows in the source
    next_row: int  # 0-based: the first row not yet handled
    sent: int = 0
    skipped: int = 0  # answered already when the run reached them
    invalid: int = 0  # dead-lettered with their row number
    budget_usd: float | None = None
    rate: float | None = None  # queries per second the run was limited to
    started_at: float = 0.0
    updated_at: float = 0.0
