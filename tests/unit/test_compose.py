"""docker-compose.yml cannot be run here (no Docker engine), so check it against the code."""

from pathlib import Path

import pytest
import yaml

from pipeline.cli import _parser
from pipeline.config import ENV_DOC

COMPOSE = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
POINTSMAN_SERVICES = [name for name, s in COMPOSE["services"].items() if s.get("build")]


@pytest.mark.parametrize("name", POINTSMAN_SERVICES)
def test_every_role_command_parses_with_the_real_cli(name: str) -> None:
    _parser().parse_args(COMPOSE["services"][name]["command"])


def test_every_role_runs_once_and_env_names_are_real_settings() -> None:
    roles = {tuple(s["command"]) for s in COMPOSE["services"].values() if s.get("build")}
    assert {("run", r) for r in ("router", "slm", "llm", "sink")} <= roles
    for name in POINTSMAN_SERVICES:
        for key in COMPOSE["services"][name].get("environment", {}):
            assert key in ENV_DOC, f"{name}: {key} is not a documented setting"


def test_broker_and_database_match_the_settings_the_roles_get() -> None:
    env = COMPOSE["services"]["router"]["environment"]
    kafka = COMPOSE["services"]["kafka"]["environment"]
    assert kafka["KAFKA_ADVERTISED_LISTENERS"].endswith(env["POINTSMAN_KAFKA_BOOTSTRAP"])
    password = COMPOSE["services"]["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"]
    assert f":{password}@clickhouse:8123" in env["POINTSMAN_CLICKHOUSE_DSN"]
