"""docker-compose.yml cannot be run here (no Docker engine), so check it against the code: the
roles' commands and settings, the broker's listeners, secrets, healthchecks, pinned images, the
Dockerfile, and Grafana's provisioning, whose dashboard queries run on a real embedded ClickHouse."""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from infra.clickhouse import Database, connect, migrate
from pipeline.cli import _parser
from pipeline.config import ENV_DOC, Config
from pipeline.health import ROLES

ROOT = Path(__file__).parents[2]
RAW = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SECRETS = ("CLICKHOUSE_PASSWORD", "GRAFANA_CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
           "POINTSMAN_LLM_API_KEY", "POINTSMAN_SQL_PASSWORD")
# what a user's .env must add to .env.example: the required passwords
USER_SECRETS = {"CLICKHOUSE_PASSWORD": "ch-secret", "GRAFANA_CLICKHOUSE_PASSWORD": "gr-secret",
                "GRAFANA_ADMIN_PASSWORD": "admin-secret"}
# set by docker-compose.yml itself, not from .env
FIXED = {"POINTSMAN_DATA_DIR", "POINTSMAN_CLICKHOUSE_DSN"}

_VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?:(:?)([-?])((?:[^{}]|\{[^{}]*\})*))?\}|(\w+))")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation: ${V}, ${V:-default}, ${V-default}, ${V:?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(5)
        colon, kind, word = match.group(2), match.group(3), match.group(4)
        present = name in env and (not colon or env[name] != "")
        if kind == "-":
            return env[name] if present else interpolate(word, env)
        if kind == "?" and not present:
            raise KeyError(f"compose refuses to start: {name}: {word}")
        return env.get(name, "")

    return _VARIABLE.sub(one, value)


def dotenv(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {k: v for k, v in pairs}


ENV_EXAMPLE = dotenv(ROOT / ".env.example")
COMPOSE = interpolate(RAW, {**ENV_EXAMPLE, **USER_SECRETS})
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
POINTSMAN_SERVICES = [name for name, s in SERVICES.items() if s.get("build")]
ROLE_SERVICES = [name for name, s in SERVICES.items() if s.get("command", [""])[0] == "run"]


@pytest.mark.parametrize("name", POINTSMAN_SERVICES)
def test_every_role_command_parses_with_the_real_cli(name: str) -> None:
    _parser().parse_args(SERVICES[name]["command"])


def test_every_role_runs_once_and_env_names_are_real_settings() -> None:
    roles = {tuple(s["command"]) for s in SERVICES.values() if s.get("build")}
    assert {("run", r) for r in ("router", "slm", "llm", "sink")} <= roles
    for name in POINTSMAN_SERVICES:
        for key in SERVICES[name].get("environment", {}):
            assert key in ENV_DOC, f"{name}: {key} is not a documented setting"


def test_broker_and_database_match_the_settings_the_roles_get() -> None:
    env = SERVICES["router"]["environment"]
    kafka = SERVICES["kafka"]["environment"]
    assert f"PLAINTEXT://{env['POINTSMAN_KAFKA_BOOTSTRAP']}" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    password = SERVICES["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"]
    assert password == USER_SECRETS["CLICKHOUSE_PASSWORD"]
    assert env["POINTSMAN_CLICKHOUSE_DSN"] == f"http://default:{password}@clickhouse:8123"


def _listeners(value: str) -> dict[str, str]:
    return dict(item.split("://", 1) for item in value.split(","))


def test_kafka_has_a_host_listener_published_on_localhost_only() -> None:
    kafka = SERVICES["kafka"]["environment"]
    listeners = _listeners(kafka["KAFKA_LISTENERS"])
    advertised = _listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":", 1) for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    host_port = advertised["EXTERNAL"]
    assert host_port == "localhost:9094"
    assert listeners["EXTERNAL"].rsplit(":", 1)[1] == "9094"  # bound inside the container
    assert protocols["EXTERNAL"] == "PLAINTEXT"
    assert "127.0.0.1:9094:9094" in SERVICES["kafka"]["ports"]
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT"  # brokers never use the host's
    assert set(advertised) <= set(listeners) and set(listeners) <= set(protocols)


@pytest.mark.parametrize("name", POINTSMAN_SERVICES)
def test_every_setting_passes_through(name: str) -> None:
    if name == "models":  # one-shot: only prepares the model into the volume
        return
    assert set(SERVICES[name]["environment"]) == set(ENV_DOC)


def test_compose_defaults_are_the_codes_defaults() -> None:
    """With an .env that holds only the passwords, the roles get exactly the defaults the code
    has, except where compose names its own broker, database and data dir."""
    env = interpolate(RAW, USER_SECRETS)["services"]["router"]["environment"]
    expected = Config.from_env({"POINTSMAN_DATA_DIR": "/data", "POINTSMAN_KAFKA_BOOTSTRAP": "kafka:9092",
                                "POINTSMAN_CLICKHOUSE_DSN": env["POINTSMAN_CLICKHOUSE_DSN"]})
    assert Config.from_env(env) == expected
    assert Config.from_env(SERVICES["router"]["environment"]) == expected  # .env.example: the same


def test_env_example_lists_every_setting_with_a_doc_line_and_no_secret() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    names = {line.split("=", 1)[0]: i for i, line in enumerate(lines) if re.match(r"^\w+=", line)}
    assert set(ENV_DOC) - FIXED <= set(names)
    assert set(SECRETS) <= set(names)
    for name, i in names.items():
        assert lines[i - 1].startswith("# "), f"{name} has no doc line"
    for secret in SECRETS:
        assert ENV_EXAMPLE[secret] == "", f"{secret} has a value in .env.example"


@pytest.mark.parametrize("secret", SECRETS)
def test_secrets_come_from_env_and_are_never_written_in_compose(secret: str) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(rf"\$\{{{secret}:?-[^}}]", text), f"{secret} has a default"
    resolved = interpolate(RAW, {**USER_SECRETS, secret: "sentinel-1f3a"})
    assert "sentinel-1f3a" in json.dumps(resolved), f"{secret} is not read from the environment"
    for value in USER_SECRETS.values():
        assert value not in text
    if secret in USER_SECRETS:  # required: compose refuses to start without it
        with pytest.raises(KeyError, match=secret):
            interpolate(RAW, {k: v for k, v in USER_SECRETS.items() if k != secret})


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if n != "models" and "profiles" not in s])
def test_every_long_running_service_has_a_healthcheck(name: str) -> None:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


@pytest.mark.parametrize("name", ROLE_SERVICES)
def test_role_healthcheck_checks_that_role(name: str) -> None:
    role = SERVICES[name]["command"][1]
    assert role in ROLES
    assert SERVICES[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "pipeline.health", role]


def _pinned(image: str) -> bool:
    return bool(re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image))


def test_images_are_pinned_by_version() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        if service.get("build"):
            assert image.startswith("pointsman:"), name  # ours, built here
        else:
            assert _pinned(image), f"{name}: {image} floats"
    base = re.search(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert base and _pinned(base.group(1))
    plugins = SERVICES["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    assert re.fullmatch(r"grafana-clickhouse-datasource \d+\.\d+\.\d+", plugins)


def test_published_ports_are_on_localhost_only() -> None:
    ports = [(name, p) for name, s in SERVICES.items() for p in s.get("ports", [])]
    assert {name for name, _ in ports} >= {"kafka", "clickhouse", "grafana"}
    for name, port in ports:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines()  # type: ignore[misc]
            if line.strip() and not line.startswith("#")]


def test_dockerfile_runs_as_a_user_and_installs_dependencies_before_the_code() -> None:
    steps = _instructions()
    users = [arg.strip() for op, arg in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as root"
    kinds = [op for op, _ in steps]
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    deps = next(i for i, (op, arg) in enumerate(steps) if op == "RUN" and "-c constraints.txt" in arg)
    code = next(i for i, (op, arg) in enumerate(steps) if op == "COPY" and arg.startswith("pipeline"))
    copies_before = [arg.split()[:-1] for op, arg in steps[:deps] if op == "COPY"]
    assert copies_before == [["pyproject.toml", "constraints.txt"]]  # only these bust the cache
    assert deps < code
    assert any(op == "RUN" and "--no-deps ." in arg for op, arg in steps[code:])


def test_constraints_pin_every_runtime_dependency_and_no_test_tool() -> None:
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    key = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in pins.items()}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in map(Requirement, pyproject["dependencies"]):
        version = key.get(re.sub(r"[-_.]+", "-", dep.name).lower())
        assert version is not None, f"{dep.name} is not pinned"
        assert dep.specifier.contains(version), f"{dep.name}=={version} breaks {dep.specifier}"
    for tool in map(Requirement, pyproject["optional-dependencies"]["test"]):
        assert tool.name.lower() not in key or tool.name.lower() in ("pyyaml",), tool.name


# --- Grafana ---------------------------------------------------------------------------------

GRAFANA = ROOT / "infra" / "grafana"
DATASOURCE = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
DASHBOARD = json.loads((GRAFANA / "dashboards" / "pointsman.json").read_text())


def _mounts(service: str) -> dict[str, str]:
    """container path -> host path (relative to the repository root) of a service's bind mounts."""
    pairs = (v.split(":")[:2] for v in SERVICES[service]["volumes"])
    return {target: source for source, target in pairs if source.startswith("./")}


def test_grafana_data_source_reads_the_compose_server_as_the_read_only_user() -> None:
    (source,) = DATASOURCE["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    data = source["jsonData"]
    assert data["host"] == "clickhouse" and data["protocol"] == "http"
    assert f"127.0.0.1:{data['port']}:8123" in SERVICES["clickhouse"]["ports"]
    users = ET.parse(GRAFANA / "clickhouse-users.xml").getroot()
    user = users.find(f"users/{data['username']}")
    assert user is not None, "the data source's user is not the read-only one"
    password_var = user.find("password").get("from_env")  # type: ignore[union-attr]
    assert source["secureJsonData"]["password"] == f"${password_var}"
    assert password_var in SERVICES["grafana"]["environment"]
    assert password_var in SERVICES["clickhouse"]["environment"]
    profile = users.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None and int(profile.findtext("readonly") or 0) >= 1
    assert [q.text for q in user.iterfind("grants/query")] == ["GRANT SELECT ON pointsman.*"]
    assert _mounts("clickhouse")["/etc/clickhouse-server/users.d/grafana.xml"] == \
        "./infra/grafana/clickhouse-users.xml"


def test_grafana_provisions_the_data_source_and_the_dashboard_it_uses() -> None:
    mounts = _mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == "./infra/grafana/provisioning"
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "pointsman.yaml")
                                 .read_text())["providers"]
    assert mounts[provider["options"]["path"]] == "./infra/grafana/dashboards"
    uid = DATASOURCE["datasources"][0]["uid"]
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"])


# the plugin's macros, expanded as it does (a fixed time range; one-minute buckets)
MACROS = [
    (re.compile(r"\$__timeFilter\((\w+)\)"),
     r"\1 >= toDateTime(1700000000) AND \1 <= toDateTime(4100000000)"),
    (re.compile(r"\$__timeInterval\((\w+)\)"), r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)"),
]


def expand(sql: str) -> str:
    for pattern, replacement in MACROS:
        sql = pattern.sub(replacement, sql)
    assert "$" not in sql, f"a macro the test does not know: {sql}"
    return sql


PANEL_SQL = {p["title"]: t["rawSql"] for p in DASHBOARD["panels"] for t in p["targets"]}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A migrated embedded database with a few results and dead letters in the last hour."""
    db = Database(connect(f"chdb://{tmp_path_factory.mktemp('dash') / 'clickhouse'}"))
    migrate(db.client)
    db.command("""INSERT INTO pointsman.results (query_id, tenant, route, cost_usd, all_llm_cost_usd,
        total_ms, submitted_at, completed_at) VALUES
        ('q1', 't', 'slm', 0.0001, 0.002, 120, now64(3), now64(3)),
        ('q2', 't', 'llm', 0.002, 0.002, 900, now64(3), now64(3)),
        ('q3', 't', 'cache', 0, 0.002, 3, now64(3), now64(3)),
        ('q4', 't', 'semantic_cache', 0, 0.001, 8, now64(3), now64(3))""")
    db.command("""INSERT INTO pointsman.dead_letters (letter_id, source_topic, reason, failed_at)
        VALUES ('a', 'queries', 'invalid query: no text', now64(3)),
               ('b', 'queries', 'invalid query: bad tenant', now64(3)),
               ('c', 'results', 'row refused: Code: 53', now64(3))""")
    yield db
    db.client.close()


def test_dashboard_has_the_panels_users_need() -> None:
    assert len(PANEL_SQL) == len(DASHBOARD["panels"])
    needs = {"total_ms": "latency", "all_llm_cost_usd": "counterfactual", "share": "route share",
             "semantic_cache": "cache hits", "dead_letters": "dead letters"}
    for column, what in needs.items():
        assert any(column in sql for sql in PANEL_SQL.values()), f"no panel shows {what}"


@pytest.mark.parametrize("title", list(PANEL_SQL))
def test_dashboard_query_reads_final_and_runs_on_the_schema(title: str, database: Database) -> None:
    sql = PANEL_SQL[title]
    tables = re.findall(r"FROM\s+(pointsman\.\w+)(\s+AS\s+\w+)?(\s+FINAL)?", sql)
    assert tables and all(final for _, _, final in tables), "replays double count without FINAL"
    columns, rows = database.query(expand(sql))
    assert rows, f"{title}: no rows over data in range"
    assert len(set(columns)) == len(columns)


def _rows(database: Database, title: str) -> list[dict[str, Any]]:
    columns, rows = database.query(expand(PANEL_SQL[title]))
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_dashboard_numbers_are_right_on_known_rows(database: Database) -> None:
    hits = _rows(database, "Cache hit rate")
    assert [(r["hit_rate"], r["exact"], r["semantic"]) for r in hits] == [(0.5, 0.25, 0.25)]
    shares = _rows(database, "Route share")
    assert sorted((r["route"], r["share"]) for r in shares) == [
        ("cache", 0.25), ("llm", 0.25), ("semantic_cache", 0.25), ("slm", 0.25)]
    (cost,) = _rows(database, "Cost against the all-LLM counterfactual")
    # Decimal sums: exact, no float noise
    assert cost["cost"] == Decimal("0.0021") and cost["all_llm_cost"] == Decimal("0.007")
    latency = {r["route"]: r["p50_ms"] for r in _rows(database, "Latency per route (ms)")}
    assert latency == {"cache": 3, "llm": 900, "semantic_cache": 8, "slm": 120}
    letters = {r["reason_kind"]: r["letters"] for r in _rows(database, "Dead letters by reason")}
    assert letters == {"invalid query": 2, "row refused": 1}


# the plugin's target fields (sqlds formats: 0 time series, 1 table; queryType as its editor
# writes it): a time series comes back long (time, labels..., values) and the plugin widens it
FORMATS = {"timeseries": (0, "timeSeries"), "barchart": (1, "table"), "table": (1, "table")}


@pytest.mark.parametrize("panel", DASHBOARD["panels"], ids=lambda p: p["title"])
def test_dashboard_targets_match_their_panel(panel: dict[str, Any], database: Database) -> None:
    (target,) = panel["targets"]
    assert target["editorType"] == "sql"
    assert (target["format"], target["queryType"]) == FORMATS[panel["type"]]
    columns, rows = database.query(expand(target["rawSql"]))
    if panel["type"] == "timeseries":
        assert columns[0] == "time" and isinstance(rows[0][0], datetime)
    else:
        assert all(isinstance(v, int | float) for v in rows[0][1:]), "a bar chart needs numbers"
