-- Bodies are kept for a time counted from when the row was written, not from when the query was
-- submitted: a backfill of years-old history keeps its answers and its true submission time.
-- 90 days is the default; the retention setting is applied after migrations
-- (infra.clickhouse.apply_retention). Rerunnable: restating the same TTL changes nothing.
ALTER TABLE pointsman.results
    MODIFY COLUMN answer String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 90 DAY;
ALTER TABLE pointsman.dead_letters
    MODIFY COLUMN raw String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 90 DAY;
