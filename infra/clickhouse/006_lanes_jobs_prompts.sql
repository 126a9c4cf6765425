-- Backfill jobs and the question asked, in every row. `lane` says whether the query came live or
-- from a backfill, `job` names the backfill job (empty for live traffic). The prompt is kept as
-- sent: `prompt` holds a text query's text, `messages` a chat query's messages as JSON; with
-- `max_tokens`, `temperature` and `metadata` a stored query can be sent again as it was (`pointsman
-- backfill --from-sql`). Prompts obey the answer retention (the TTL here is the default;
-- infra.clickhouse.apply_retention applies the setting).
--
-- Added in place: ADD COLUMN changes metadata only, so rows already stored keep everything and
-- read the defaults (lane live, no job, no prompt: they predate it). Rerunnable from the top.
ALTER TABLE pointsman.results
    ADD COLUMN IF NOT EXISTS lane LowCardinality(String) DEFAULT 'live' AFTER route;

ALTER TABLE pointsman.results
    ADD COLUMN IF NOT EXISTS job LowCardinality(String) DEFAULT '' AFTER lane;

ALTER TABLE pointsman.results
    ADD COLUMN IF NOT EXISTS prompt String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 90 DAY AFTER model;

ALTER TABLE pointsman.results
    ADD COLUMN IF NOT EXISTS messages String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 90 DAY AFTER prompt;

ALTER TABLE pointsman.results
    ADD COLUMN IF NOT EXISTS max_tokens UInt32 DEFAULT 0 AFTER messages;

ALTER TABLE pointsman.results
    ADD COLUMN IF NOT EXISTS temperature Float32 DEFAULT 0 AFTER max_tokens;

ALTER TABLE pointsman.results
    ADD COLUMN IF NOT EXISTS metadata Map(String, String) AFTER temperature;

-- One row per backfill job, its latest state (the jobs topic, compacted, keyed by name).
CREATE TABLE IF NOT EXISTS pointsman.jobs
(
    name            String,
    source          String,
    status          LowCardinality(String),
    total           UInt64,
    next_row        UInt64,
    sent            UInt64,
    skipped         UInt64,
    invalid         UInt64,
    budget_usd      Nullable(Float64),
    rate            Nullable(Float64),
    started_at      DateTime64(3, 'UTC'),
    updated_at      DateTime64(3, 'UTC'),
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;
