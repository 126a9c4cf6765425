-- Two different queries sent under one (tenant, id) keep one row each: the sort key, on which
-- ReplacingMergeTree collapses replays, gains the query's fingerprint (xxh3 over normalised
-- text, tenant, max_tokens, temperature). A replay of the same query still collapses.
--
-- ORDER BY cannot gain a column in place, so the table is rebuilt: copy into a new table, swap
-- the two atomically, drop the old one, and recreate the per-minute view (it is bound to the
-- table it was created on, not to the name). Rerunnable from the top after a crash at any step:
-- whichever table is named `results` then holds every row, and the copy starts afresh from it.
-- The answer TTL copies 002's; rows it would erase were already erased under 001's, earlier.
DROP TABLE IF EXISTS pointsman.results_rebuild SYNC;

CREATE TABLE pointsman.results_rebuild
(
    query_id          String,
    tenant            LowCardinality(String),
    route             LowCardinality(String),
    model             LowCardinality(String),
    answer            String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 90 DAY,
    error             String DEFAULT '' CODEC(ZSTD(3)),
    prompt_tokens     UInt32,
    completion_tokens UInt32,
    cost_usd          Float64,
    confidence        Nullable(Float32),
    similarity        Nullable(Float32),
    fingerprint       String,
    route_reason      String CODEC(ZSTD(3)),
    submitted_at      DateTime64(3, 'UTC'),
    completed_at      DateTime64(3, 'UTC'),
    queued_ms         Float32,
    routed_ms         Float32,
    wait_ms           Float32,
    inference_ms      Float32,
    total_ms          Float32,
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(completed_at)
PARTITION BY toYYYYMM(submitted_at)
ORDER BY (tenant, toDate(submitted_at), query_id, fingerprint);

INSERT INTO pointsman.results_rebuild
SELECT query_id, tenant, route, model, answer, error, prompt_tokens, completion_tokens, cost_usd,
       confidence, similarity, fingerprint, route_reason, submitted_at, completed_at, queued_ms,
       routed_ms, wait_ms, inference_ms, total_ms, inserted_at
FROM pointsman.results
SETTINGS max_partitions_per_insert_block = 0;

DROP VIEW IF EXISTS pointsman.results_per_minute_mv SYNC;

EXCHANGE TABLES pointsman.results AND pointsman.results_rebuild;

DROP TABLE pointsman.results_rebuild SYNC;

CREATE MATERIALIZED VIEW IF NOT EXISTS pointsman.results_per_minute_mv
TO pointsman.results_per_minute AS
SELECT
    toStartOfMinute(submitted_at) AS minute,
    tenant,
    route,
    countState() AS queries,
    sumState(cost_usd) AS cost_usd,
    sumState(toUInt64(prompt_tokens + completion_tokens)) AS tokens,
    quantilesState(0.5, 0.95, 0.99)(total_ms) AS total_ms
FROM pointsman.results
GROUP BY minute, tenant, route;
