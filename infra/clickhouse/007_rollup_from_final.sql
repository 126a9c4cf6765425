-- The per-minute rollup, right under replay. Until now a materialized view added every insert
-- into AggregatingMergeTree states, so replaying the results topic (a rewound sink, a batch redone
-- after a crash) counted those rows twice there, while results FINAL counted them once. Insert-
-- time aggregation cannot tell a replayed row from a new one, so the rollup is now computed from
-- results FINAL itself: a refreshable materialized view recomputes it every minute and swaps it in
-- atomically. A replay changes results' raw rows, never FINAL, so it never changes the rollup;
-- and history that predates the rollup is in it too. The price: the rollup is up to a minute
-- behind, and each refresh is one aggregation over results FINAL (cheap to tens of millions of
-- rows; past that, query results FINAL for the recent window directly).
--
-- The old rollup is derived data: dropped and rebuilt from results, nothing is lost. Rerunnable:
-- a rerun drops and recreates the same two objects.
DROP VIEW IF EXISTS pointsman.results_per_minute_mv SYNC;

DROP TABLE IF EXISTS pointsman.results_per_minute SYNC;

CREATE TABLE pointsman.results_per_minute
(
    minute            DateTime('UTC'),
    tenant            LowCardinality(String),
    route             LowCardinality(String),
    queries           UInt64,
    errors            UInt64,
    tokens            UInt64,
    cost_usd          Float64,
    all_llm_cost_usd  Float64,
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
