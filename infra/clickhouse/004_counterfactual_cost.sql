-- Savings in every row. Each result carries what the all-LLM path would have cost for the same
-- query (the configured LLM's price for its prompt and an estimated answer: workers/pricing.py),
-- and how much of its cost_usd went to the SLM (all of it on route slm; on an escalated row the
-- SLM attempt that came before the LLM call, which cost_usd now includes).
--
-- Added in place: ADD COLUMN changes metadata only, so rows already stored keep everything and
-- read 0 for the new columns (unknown: they predate the counterfactual). The per-minute rollup
-- gains the counterfactual too; MODIFY QUERY swaps the view's query atomically, so no insert
-- slips past the rollup meanwhile (003 had to drop and recreate it). Rerunnable from the top:
-- every statement is a no-op the second time.
ALTER TABLE pointsman.results
    ADD COLUMN IF NOT EXISTS all_llm_cost_usd Float64 DEFAULT 0 AFTER cost_usd;

ALTER TABLE pointsman.results
    ADD COLUMN IF NOT EXISTS slm_cost_usd Float64 DEFAULT 0 AFTER all_llm_cost_usd;

ALTER TABLE pointsman.results_per_minute
    ADD COLUMN IF NOT EXISTS all_llm_cost_usd AggregateFunction(sum, Float64) AFTER cost_usd;

ALTER TABLE pointsman.results_per_minute_mv MODIFY QUERY
SELECT
    toStartOfMinute(submitted_at) AS minute,
    tenant,
    route,
    countState() AS queries,
    sumState(cost_usd) AS cost_usd,
    sumState(all_llm_cost_usd) AS all_llm_cost_usd,
    sumState(toUInt64(prompt_tokens + completion_tokens)) AS tokens,
    quantilesState(0.5, 0.95, 0.99)(total_ms) AS total_ms
FROM pointsman.results
GROUP BY minute, tenant, route;
