-- What an analyst asks of a row, as columns: the routing decision (`policy`, the `score` it
-- computed, the `threshold` it compared with; empty / NULL where no policy decided: cache hits),
-- the `upstream` that answered (its configured name, never its URL or key) and the `attempts`
-- (upstream calls) the row made, and the `trail`: every try on the way to the answer, in order,
-- with why the next came (the SLM that escalated, each upstream call of a failover).
-- Costs become Decimal(18, 9) US dollars, so sums carry no float noise; latencies stay in
-- milliseconds, named so (`*_ms`), now Float64: a Float32 read back as 12.300000190734863.
--
-- Types cannot change in place without ClickHouse's own casts, which truncate (0.000299999…
-- would read 0.000299999) and print a Float32's error digits, so the table is rebuilt as 003 did:
-- a copy of `results` made with its own DDL (its TTLs as the retention setting left them), retyped
-- and widened while empty, filled from `results` with exact conversions (a cost through its
-- shortest decimal, rounded to nine places; a latency through its Float32's shortest decimal),
-- swapped in atomically, the old one dropped. A cost Decimal(18, 9) cannot hold (NaN, infinite,
-- over a billion dollars) reads 0. Old rows read '' / NULL / 0 / [] in the new columns: unknown.
-- The per-minute rollup is derived data: dropped and recreated over the new table, its sums
-- Decimal too.
--
-- Rerunnable from the top after a crash at any step: whichever table is named `results` then
-- holds every row, and the copy starts afresh from it (the conversions are exact on either type;
-- no row is written between a crash and the rerun, which runs before the sink consumes).
DROP TABLE IF EXISTS pointsman.results_rebuild SYNC;

CREATE TABLE pointsman.results_rebuild AS pointsman.results;

ALTER TABLE pointsman.results_rebuild
    MODIFY COLUMN cost_usd Decimal(18, 9) COMMENT 'US dollars: everything this answer cost',
    MODIFY COLUMN all_llm_cost_usd Decimal(18, 9) DEFAULT 0
        COMMENT 'US dollars: what the configured LLM would have charged (0: unknown)',
    MODIFY COLUMN slm_cost_usd Decimal(18, 9) DEFAULT 0
        COMMENT 'US dollars: the part of cost_usd spent on the SLM',
    MODIFY COLUMN queued_ms Float64 COMMENT 'milliseconds: taken in -> the router picked it up',
    MODIFY COLUMN routed_ms Float64 COMMENT 'milliseconds: inside the router',
    MODIFY COLUMN wait_ms Float64 COMMENT 'milliseconds: the router sent it -> a worker picked it up',
    MODIFY COLUMN inference_ms Float64 COMMENT 'milliseconds: the model or upstream call',
    MODIFY COLUMN total_ms Float64 COMMENT 'milliseconds: taken in -> the result produced';

ALTER TABLE pointsman.results_rebuild
    ADD COLUMN IF NOT EXISTS policy LowCardinality(String) DEFAULT '' AFTER route_reason,
    ADD COLUMN IF NOT EXISTS score Nullable(Float64) AFTER policy,
    ADD COLUMN IF NOT EXISTS threshold Nullable(Float64) AFTER score,
    ADD COLUMN IF NOT EXISTS upstream LowCardinality(String) DEFAULT '' AFTER threshold,
    ADD COLUMN IF NOT EXISTS attempts UInt16 DEFAULT 0 AFTER upstream,
    ADD COLUMN IF NOT EXISTS trail Array(Tuple(track LowCardinality(String), model LowCardinality(String),
        upstream LowCardinality(String), outcome String)) CODEC(ZSTD(3)) AFTER attempts;

INSERT INTO pointsman.results_rebuild
    (query_id, tenant, route, lane, job, model, prompt, messages, max_tokens, temperature, metadata,
     answer, error, prompt_tokens, completion_tokens, cost_usd, all_llm_cost_usd, slm_cost_usd,
     confidence, similarity, fingerprint, route_reason, submitted_at, completed_at, queued_ms,
     routed_ms, wait_ms, inference_ms, total_ms, inserted_at)
SELECT query_id, tenant, route, lane, job, model, prompt, messages, max_tokens, temperature, metadata,
       answer, error, prompt_tokens, completion_tokens,
       ifNull(accurateCastOrNull(round(toDecimal128OrNull(toString(cost_usd), 18), 9), 'Decimal(18, 9)'), 0),
       ifNull(accurateCastOrNull(round(toDecimal128OrNull(toString(all_llm_cost_usd), 18), 9), 'Decimal(18, 9)'), 0),
       ifNull(accurateCastOrNull(round(toDecimal128OrNull(toString(slm_cost_usd), 18), 9), 'Decimal(18, 9)'), 0),
       confidence, similarity, fingerprint, route_reason, submitted_at, completed_at,
       toFloat64(toString(queued_ms)), toFloat64(toString(routed_ms)), toFloat64(toString(wait_ms)),
       toFloat64(toString(inference_ms)), toFloat64(toString(total_ms)), inserted_at
FROM pointsman.results
SETTINGS max_partitions_per_insert_block = 0;

DROP VIEW IF EXISTS pointsman.results_per_minute_mv SYNC;

EXCHANGE TABLES pointsman.results AND pointsman.results_rebuild;

DROP TABLE pointsman.results_rebuild SYNC;

DROP TABLE IF EXISTS pointsman.results_per_minute SYNC;

CREATE TABLE pointsman.results_per_minute
(
    minute            DateTime('UTC'),
    tenant            LowCardinality(String),
    route             LowCardinality(String),
    queries           UInt64,
    errors            UInt64,
    tokens            UInt64,
    cost_usd          Decimal(38, 9),
    all_llm_cost_usd  Decimal(38, 9),
    p50_ms            Float64,
    p95_ms            Float64,
    p99_ms            Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, route, minute);

CREATE MATERIALIZED VIEW pointsman.results_per_minute_mv
REFRESH EVERY 1 MINUTE TO pointsman.results_per_minute AS
SELECT
    toStartOfMinute(submitted_at) AS minute,
    tenant,
    route,
    count() AS queries,
    countIf(error != '') AS errors,
    sum(toUInt64(prompt_tokens + completion_tokens)) AS tokens,
    sum(cost_usd) AS cost_usd,
    sum(all_llm_cost_usd) AS all_llm_cost_usd,
    quantile(0.5)(total_ms) AS p50_ms,
    quantile(0.95)(total_ms) AS p95_ms,
    quantile(0.99)(total_ms) AS p99_ms
FROM pointsman.results FINAL
GROUP BY minute, tenant, route;
