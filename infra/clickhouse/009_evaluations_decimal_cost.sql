-- The evaluations' costs become Decimal(18, 9) US dollars, as results' did in 008, so an
-- analyst's sums carry no float noise. Rebuilt the same way, for the same reason (ClickHouse's
-- own casts truncate): a copy made with the table's own DDL (its TTLs as the retention setting
-- left them), retyped while empty, filled with exact conversions (a cost through its shortest
-- decimal, rounded to nine places; one Decimal(18, 9) cannot hold reads 0), swapped in
-- atomically, the old one dropped. Rerunnable from the top after a crash at any step: whichever
-- table is named `evaluations` then holds every row.
DROP TABLE IF EXISTS pointsman.evaluations_rebuild SYNC;

CREATE TABLE pointsman.evaluations_rebuild AS pointsman.evaluations;

ALTER TABLE pointsman.evaluations_rebuild
    MODIFY COLUMN served_cost_usd Decimal(18, 9) COMMENT 'US dollars: what the served answer cost',
    MODIFY COLUMN shadow_cost_usd Decimal(18, 9)
        COMMENT 'US dollars: the shadow call and its judge, never part of the serving cost',
    MODIFY COLUMN judge_cost_usd Decimal(18, 9)
        COMMENT 'US dollars: the LLM judge''s call, already inside shadow_cost_usd';

INSERT INTO pointsman.evaluations_rebuild
    (query_id, tenant, route, judge, score, fingerprint, served_model, shadow_model,
     served_cost_usd, shadow_cost_usd, judge_cost_usd, shadow_prompt_tokens,
     shadow_completion_tokens, confidence, similarity, source_query_id, question, served_answer,
     shadow_answer, submitted_at, evaluated_at, inserted_at)
SELECT query_id, tenant, route, judge, score, fingerprint, served_model, shadow_model,
       ifNull(accurateCastOrNull(round(toDecimal128OrNull(toString(served_cost_usd), 18), 9), 'Decimal(18, 9)'), 0),
       ifNull(accurateCastOrNull(round(toDecimal128OrNull(toString(shadow_cost_usd), 18), 9), 'Decimal(18, 9)'), 0),
       ifNull(accurateCastOrNull(round(toDecimal128OrNull(toString(judge_cost_usd), 18), 9), 'Decimal(18, 9)'), 0),
       shadow_prompt_tokens, shadow_completion_tokens, confidence, similarity, source_query_id,
       question, served_answer, shadow_answer, submitted_at, evaluated_at, inserted_at
FROM pointsman.evaluations
SETTINGS max_partitions_per_insert_block = 0;

EXCHANGE TABLES pointsman.evaluations AND pointsman.evaluations_rebuild;

DROP TABLE pointsman.evaluations_rebuild SYNC;
