"""Shared test setup: one real Kafka broker per test run (started by the project's own infra
code, only when a test needs it); each pipeline test gets its own topic prefix (so its own
topics and consumer groups), its own embedded ClickHouse, and role processes run by the CLI.

hypothesis is imported up front, with every internal module it imports lazily (its optimiser,
first needed deep inside a test): CPython 3.11.7 can raise a spurious "AST constructor recursion
depth mismatch" SystemError when pytest's assertion rewriter first compiles one of them late in a
session that has run background threads (CPython gh-106905).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import kafka
from tests.harness import TEST_PORT, Pipeline, free_port_pair, pipeline_env
from topics.admin import ensure_topics
from topics.errors import InfraError
from topics.names import Topics


def _import_hypothesis_internals() -> None:
    import contextlib
    import importlib
    import pkgutil

    import hypothesis.internal

    for module in pkgutil.walk_packages(hypothesis.internal.__path__, "hypothesis.internal."):
        with contextlib.suppress(ImportError):  # an optional extra's dependency: never used here
            importlib.import_module(module.name)


_import_hypothesis_internals()


# the longest module (the demo prepares the real model from scratch: minutes) goes first, so with
# the suite spread over two workers (pytest-xdist, by module) it never runs last, alone
FIRST_MODULES = ("tests/integration/test_cli.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long soak/load runs (`slow`) run only with POINTSMAN_SLOW=1; CI runs everything else."""
    items.sort(key=lambda item: not item.nodeid.startswith(FIRST_MODULES))  # stable: order kept
    if os.environ.get("POINTSMAN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set POINTSMAN_SLOW=1 to run soak/load tests")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def broker_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka.LocalKafkaConfig]:
    # two xdist workers may draw the same free pair at the same moment: the one that finds it
    # taken draws again (a port pinned by POINTSMAN_TEST_KAFKA_PORT is not redrawn)
    home = tmp_path_factory.mktemp("kafka")
    port = TEST_PORT
    for attempt in range(5):
        cfg = kafka.LocalKafkaConfig(home=home, port=port, controller_port=port + 1)
        try:
            kafka.start(cfg)
            break
        except InfraError as exc:
            if "already in use" not in str(exc) or attempt == 4 or os.environ.get(
                    "POINTSMAN_TEST_KAFKA_PORT"):
                raise
            port = free_port_pair()
    yield cfg
    kafka.stop(cfg)


@pytest.fixture(scope="session")
def broker(broker_config: kafka.LocalKafkaConfig) -> str:
    return broker_config.bootstrap


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.slm.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture()
def pipeline(broker: str, tiny_model: Path, tmp_path: Path) -> Iterator[Pipeline]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    ensure_topics(broker, topics.specs(partitions=3))
    running = Pipeline.for_test(pipeline_env(broker, prefix, tmp_path, tiny_model), topics, tmp_path)
    yield running
    running.close()
