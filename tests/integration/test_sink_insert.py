"""How the sink inserts, against the real embedded engine: a result repeated inside one batch is
left to FINAL and the merges (INSERT_SETTINGS, the engine's cheaper insert), and FINAL still
keeps one row per key, the latest answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.clickhouse import Database, connect, migrate
from pipeline.sink import SinkWriter
from tests.integration.test_sink_poison import TOPICS, messages, result

pytestmark = pytest.mark.integration


def test_a_repeat_inside_one_batch_is_left_to_final_which_keeps_the_latest(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client)
        database = Database(client)
        first = result("q1", answer="first", completed_at=1.7e9 + 1)
        again = result("q1", answer="again", completed_at=1.7e9 + 2)  # a re-answer, later
        SinkWriter(database, TOPICS)(messages([first, result("q2"), again, first]))
        # stored as sent: the insert did not collapse its own block (optimize_on_insert=0)
        assert database.query("SELECT count() FROM pointsman.results")[1] == [(4,)]
        assert database.query("SELECT query_id, answer FROM pointsman.results FINAL "
                              "ORDER BY query_id")[1] == [("q1", "again"), ("q2", "answer q2")]
    finally:
        client.close()
