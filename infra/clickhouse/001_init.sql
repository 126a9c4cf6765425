-- One row per query outcome. ReplacingMergeTree on the sort key (tenant, day, query_id) keeps one
-- row per query id when the results topic is replayed; read with FINAL for exact counts.
CREATE TABLE IF NOT EXISTS pointsman.results
(
    query_id          String,
    tenant            LowCardinality(String),
    route             LowCardinality(String),
    model             LowCardinality(String),
    answer            String CODEC(ZSTD(3)) TTL toDateTime(submitted_at) + INTERVAL 90 DAY,
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
ORDER BY (tenant, toDate(submitted_at), query_id);

-- Dead letters keyed by where they came from (topic:partition:offset, or the query id for a
-- worker failure), so replays do not duplicate them either.
CREATE TABLE IF NOT EXISTS pointsman.dead_letters
(
    letter_id     String,
    source_topic  LowCardinality(String),
    partition     Int32,
    offset        Int64,
    reason        String,
    raw           String CODEC(ZSTD(3)) TTL toDateTime(failed_at) + INTERVAL 90 DAY,
    key           String DEFAULT '',
    query_id      String DEFAULT '',
    tenant        LowCardinality(String) DEFAULT '',
    failed_at     DateTime64(3, 'UTC'),
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(failed_at)
ORDER BY (source_topic, letter_id);

-- Per-minute rollup by route, kept up by a materialized view at insert time. It counts every
-- insert, so after a replay it can over-count; `pointsman report` reads results FINAL instead.
CREATE TABLE IF NOT EXISTS pointsman.results_per_minute
(
    minute        DateTime('UTC'),
    tenant        LowCardinality(String),
    route         LowCardinality(String),
    queries       AggregateFunction(count),
    cost_usd      AggregateFunction(sum, Float64),
    tokens        AggregateFunction(sum, UInt64),
    total_ms      AggregateFunction(quantiles(0.5, 0.95, 0.99), Float32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, route, minute);

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
