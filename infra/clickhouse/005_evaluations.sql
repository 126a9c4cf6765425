-- Shadow evaluations: a served answer (SLM or semantic cache) judged against a fresh answer of
-- the LLM track, which the user never saw. One row per query and served route; a replay of the
-- evaluations topic (or a shadow call made twice) collapses on the sort key, read with FINAL.
-- Partitioned by the query's submission time, like results, so a late replay lands in the same
-- partition as the first row and still replaces it. Bodies obey the answer retention (the TTL
-- here is the default; infra.clickhouse.apply_retention applies the setting).
CREATE TABLE IF NOT EXISTS pointsman.evaluations
(
    query_id                 String,
    tenant                   LowCardinality(String),
    route                    LowCardinality(String),
    judge                    LowCardinality(String),
    score                    Float32,
    fingerprint              String,
    served_model             LowCardinality(String),
    shadow_model             LowCardinality(String),
    served_cost_usd          Float64,
    shadow_cost_usd          Float64,
    judge_cost_usd           Float64,
    shadow_prompt_tokens     UInt32,
    shadow_completion_tokens UInt32,
    confidence               Nullable(Float32),
    similarity               Nullable(Float32),
    source_query_id          String DEFAULT '',
    question                 String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 90 DAY,
    served_answer            String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 90 DAY,
    shadow_answer            String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 90 DAY,
    submitted_at             DateTime64(3, 'UTC'),
    evaluated_at             DateTime64(3, 'UTC'),
    inserted_at              DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(evaluated_at)
PARTITION BY toYYYYMM(submitted_at)
ORDER BY (tenant, route, toDate(submitted_at), query_id, fingerprint);
