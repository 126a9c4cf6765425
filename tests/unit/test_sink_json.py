"""The engine-side mapping (pipeline/sink_json.py) keeps up with the contract: every field of a
result is read, and every default JSON leaves out that is not the engine's zero is mapped."""

from __future__ import annotations

import msgspec

from pipeline import sink_json
from topics.schemas import Query, Result, Step, Timings

ZEROS = (0, 0.0, "", None, (), False)
# the question's fields the results table keeps (prompt_values); the rest are the router's
QUERY_FIELDS = {"text", "messages", "max_tokens", "temperature", "metadata"}


def _non_zero_defaults(struct: type[msgspec.Struct], only: set[str] | None = None) -> set[tuple[str, str]]:
    found = set()
    for field in msgspec.structs.fields(struct):
        if only is not None and field.name not in only:
            continue
        empty = field.default is msgspec.NODEFAULT or field.default_factory is not msgspec.NODEFAULT
        if not empty and field.default not in ZEROS and field.default != {}:
            found.add((struct.__name__, field.name))
    return found


def test_every_default_the_engine_would_read_as_zero_is_mapped() -> None:
    defaults = (_non_zero_defaults(Result) | _non_zero_defaults(Query, QUERY_FIELDS)
                | _non_zero_defaults(Timings) | _non_zero_defaults(Step))
    assert defaults == sink_json.NON_ZERO_DEFAULTS
    assert f"'{sink_json.LANE_DEFAULT}'" in sink_json.SELECT
    assert str(sink_json.MAX_TOKENS_DEFAULT) in sink_json.SELECT


def _top_level_names(structure: str) -> set[str]:
    names, depth, start = set(), 0, 0
    for i, char in enumerate(structure + ","):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            names.add(structure[start:i].split()[0])
            start = i + 1
    return names


def test_every_result_field_is_read() -> None:
    assert _top_level_names(sink_json.STRUCTURE) == {f.name for f in msgspec.structs.fields(Result)}
