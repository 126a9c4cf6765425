"""`pointsman bench sink`'s raw phase against the real embedded engine: the client's insert, the
engine's mapping of the messages and the engine alone store exactly the same rows (a comparison
of speed is only fair between inserts that store the same thing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.clickhouse import Database, connect, migrate
from pipeline.bench_sink import (
    ENGINE_DATABASE,
    RAW_DATABASE,
    RAW_JSON_DATABASE,
    bench_raw,
    result_messages,
)
from pipeline.sink import RESULT_COLUMNS, result_row
from topics.codec import encode

pytestmark = pytest.mark.integration


def test_every_raw_path_stores_the_same_rows(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client)
        database = Database(client)
        results = result_messages(300, now=1_790_000_000.0)
        report = bench_raw(database, [result_row(r) for r in results], [encode(r) for r in results])
        assert {path: row["rows"] for path, row in report.items()} == {
            "raw": 300, "raw_json": 300, "engine_only": 300}
        every = f"SELECT {', '.join(RESULT_COLUMNS)} FROM {{}}.results ORDER BY query_id"
        stored = database.query(every.format(RAW_DATABASE))[1]
        assert len(stored) == 300
        assert database.query(every.format(RAW_JSON_DATABASE))[1] == stored
        assert database.query(every.format(ENGINE_DATABASE))[1] == stored
        # Nullable, Map and DateTime64 values as the results carried them
        first = dict(zip(RESULT_COLUMNS, stored[0], strict=True))
        source = next(r for r in results if r.query_id == first["query_id"])
        assert first["confidence"] == pytest.approx(source.confidence, abs=1e-6) if (
            source.confidence is not None) else first["confidence"] is None
        assert first["metadata"]["priority"] == str(source.query.metadata["priority"])  # type: ignore[union-attr]
        assert abs(first["submitted_at"].timestamp() - source.submitted_at) < 0.001
    finally:
        client.close()
