"""The results table's columns computed by the engine from the result messages themselves.

The embedded sink hands ClickHouse each batch of `results` messages as they came off Kafka
(JSONEachRow) and this `SELECT` maps their fields onto `RESULT_COLUMNS`, so no row is built and
serialised in Python: that Python (about 30 µs a row) was what held ingest at 11-16k rows/s
while the engine alone stores 84-116k (BENCHMARKS.md, "Sink ingest"). The sink still decodes
every message with the contract's decoder and checks the ranges first (pipeline/sink.py), so
what reaches the engine is valid; the casts here are `accurateCast`, so a value that slipped
through is refused, not wrapped, and the sink isolates it as before.

`result_row` (pipeline/sink.py) is the same mapping in Python, used with a ClickHouse server;
tests/integration/test_sink_json.py holds the two to storing identical rows.
"""

from __future__ import annotations

import msgspec

from topics.schemas import Query, Result


def _default(struct: type[msgspec.Struct], name: str) -> object:
    field = next(f for f in msgspec.structs.fields(struct) if f.name == name)
    return field.default


# The two fields whose contract default is not the type's zero: JSON omits a default
# (omit_defaults), and the engine would read the zero. tests/unit/test_sink_json.py fails
# when a field gains such a default without a line here.
LANE_DEFAULT = _default(Result, "lane")
MAX_TOKENS_DEFAULT = _default(Query, "max_tokens")
NON_ZERO_DEFAULTS = {("Result", "lane"), ("Query", "max_tokens")}

# Wide types: the Python check has the last word on ranges, the casts below are a backstop.
# Costs are read as decimals from their JSON text (the float's shortest repr), never through a
# float, then rounded to the column's nine places.
STRUCTURE = ", ".join([
    "query_id String", "tenant String", "route String", "answer String", "model String",
    "prompt_tokens Int64", "completion_tokens Int64", "cost_usd Decimal(38, 18)",
    "confidence Nullable(Float64)", "similarity Nullable(Float64)", "error Nullable(String)",
    "fingerprint String", "route_reason String", "submitted_at Float64", "completed_at Float64",
    "timings Tuple(queued_ms Float64, routed_ms Float64, wait_ms Float64, inference_ms Float64, "
    "total_ms Float64)",
    # messages as their JSON text; metadata values that are not strings as their JSON text too
    "query Tuple(text Nullable(String), messages Nullable(String), max_tokens Nullable(Int64), "
    "temperature Float64, metadata Map(String, Nullable(String)))",
    "all_llm_cost_usd Decimal(38, 18)", "slm_cost_usd Decimal(38, 18)", "lane String", "job String",
    "policy String", "score Nullable(Float64)", "threshold Nullable(Float64)", "upstream String",
    "attempts Int64",
    "trail Array(Tuple(track String, model String, upstream String, outcome String))",
])


def _usd(field: str) -> str:
    return f"accurateCast(round({field}, 9), 'Decimal(18, 9)')"


def _time(field: str) -> str:
    # the nearest millisecond, as result_row's `_ms` (round half to even on the same product)
    return f"fromUnixTimestamp64Milli(toInt64(round({field} * 1000)), 'UTC')"


_ASKED = "(isNotNull(query.text) OR isNotNull(query.messages))"  # a result without a question: ''
# in RESULT_COLUMNS order
SELECT = ", ".join([
    "query_id", "tenant", "route", "model", "answer", "ifNull(error, '')",
    "accurateCast(prompt_tokens, 'UInt32')", "accurateCast(completion_tokens, 'UInt32')",
    _usd("cost_usd"), "confidence", "similarity", "fingerprint", "route_reason",
    _time("submitted_at"), _time("completed_at"),
    "timings.queued_ms", "timings.routed_ms", "timings.wait_ms", "timings.inference_ms",
    "timings.total_ms", _usd("all_llm_cost_usd"), _usd("slm_cost_usd"),
    f"if(lane = '', '{LANE_DEFAULT}', lane)", "job",
    "ifNull(query.text, '')",
    "if(ifNull(query.messages, '[]') = '[]', '', query.messages)",  # none or [] : ''
    f"accurateCast(if({_ASKED}, ifNull(query.max_tokens, {MAX_TOKENS_DEFAULT}), 0), 'UInt32')",
    "query.temperature",
    "mapApply((k, v) -> (k, ifNull(v, 'null')), query.metadata)",
    "policy", "score", "threshold", "upstream",
    "accurateCast(least(attempts, 65535), 'UInt16')", "trail",
])

# how JSONEachRow reads the fields above: JSON arrays, objects, numbers and booleans into a
# String as their text (messages, metadata values); nothing skipped silently. One parsing
# thread: parallel parsing of a sink batch cost a quarter more CPU a row and was no faster
# (BENCHMARKS.md, "Sink ingest"), and the sink's other core is preparing the next batch.
SETTINGS: dict[str, int] = {
    "input_format_parallel_parsing": 0,
    "input_format_json_read_arrays_as_strings": 1,
    "input_format_json_read_objects_as_strings": 1,
    "input_format_json_read_numbers_as_strings": 1,
    "input_format_json_read_bools_as_strings": 1,
    "input_format_allow_errors_num": 0,
    "input_format_allow_errors_ratio": 0,
}
