"""LLM upstreams in fallback order, and where their API keys come from.

One upstream comes from POINTSMAN_LLM_BASE_URL / _MODEL / _API_KEY. Several come from a TOML
file (POINTSMAN_LLM_UPSTREAMS_FILE), tried in file order:

    [[upstream]]
    name = "openai"
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"      # or api_key_file = "/run/secrets/openai"
    requests_per_minute = 500           # 0 = unlimited
    tokens_per_minute = 200000
    timeout_s = 30

    [prices]                            # USD per 1M tokens: [prompt, completion]
    "gpt-4o-mini" = [0.15, 0.60]

Keys are read once, held in memory only, and never appear in a repr, a log line or a result:
the chat client registers each with topics.redact (workers/llm_client.py).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topics.errors import ConfigError


@dataclass(frozen=True)
class Upstream:
    name: str
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    timeout_s: float = 30.0


def resolve_key(entry: Mapping[str, object], env: Mapping[str, str]) -> str:
    if "api_key" in entry:
        raise ConfigError("put API keys in api_key_env or api_key_file, not in the upstreams file")
    if name := entry.get("api_key_env"):
        if str(name) not in env:
            raise ConfigError(f"upstream {entry.get('name')!r}: environment variable {name} is not set")
        return env[str(name)].strip()
    if path := entry.get("api_key_file"):
        try:
            return Path(str(path)).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"upstream {entry.get('name')!r}: cannot read api_key_file: {exc}") from None
    return ""


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read upstreams file {path}: {exc}") from None


def _prices(data: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    table = data.get("prices", {})
    if not isinstance(table, Mapping):
        raise ConfigError("[prices] must be a table of model = [prompt, completion]")
    return {str(k): (float(v[0]), float(v[1])) for k, v in table.items()}


def counterfactual_pricing(path: Path) -> tuple[str, dict[str, tuple[float, float]]]:
    """The first upstream's model and the price overrides, without touching any API key: what
    the SLM worker prices its answers' all-LLM counterfactual with (it holds no keys)."""
    data = _read(path)
    entries = data.get("upstream", [])
    if not entries or "model" not in entries[0]:
        raise ConfigError(f"{path}: no [[upstream]] entry with a model")
    return str(entries[0]["model"]), _prices(data)


def load_upstreams(path: Path, env: Mapping[str, str] = os.environ
                   ) -> tuple[list[Upstream], dict[str, tuple[float, float]]]:
    """Upstreams (in order) and the price table overrides from a TOML file."""
    data = _read(path)
    entries = data.get("upstream", [])
    if not entries:
        raise ConfigError(f"{path}: no [[upstream]] entries")
    upstreams = []
    for i, entry in enumerate(entries):
        try:
            upstreams.append(Upstream(
                name=str(entry.get("name", f"upstream-{i}")), base_url=str(entry["base_url"]),
                model=str(entry["model"]), api_key=resolve_key(entry, env),
                requests_per_minute=float(entry.get("requests_per_minute", 0)),
                tokens_per_minute=float(entry.get("tokens_per_minute", 0)),
                timeout_s=float(entry.get("timeout_s", 30)),
            ))
        except KeyError as exc:
            raise ConfigError(f"{path}: upstream {i} lacks {exc}") from None
    return upstreams, _prices(data)
