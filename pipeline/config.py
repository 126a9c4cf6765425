"""All settings in one frozen object, read from the environment by the CLI only."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from infra.kafka import LocalKafkaConfig
from infra.query_server import PASSWORD_FILE_NAME, SqlEndpointSettings
from pipeline.policy import PolicyOptions
from pipeline.router import RouterSettings
from pipeline.semantic.learned import FILE_NAME as THRESHOLDS_FILE_NAME
from pipeline.sink import SinkSettings
from topics.errors import ConfigError
from topics.names import Topics
from workers.llm_client import LlmSettings
from workers.llm_worker import LlmWorkerSettings
from workers.pricing import PriceTable
from workers.shadow import ShadowSettings
from workers.slm_worker import SlmWorkerSettings
from workers.upstreams import Upstream, counterfactual_pricing, load_upstreams

DEFAULT_MODEL = "smollm2-135m-instruct-int8"

ENV_DOC = {
    "POINTSMAN_KAFKA_BOOTSTRAP": "Kafka bootstrap servers (default 127.0.0.1:9092; `up` runs the "
    "local broker on this port)",
    "POINTSMAN_TOPIC_PREFIX": "prefix for every topic and consumer group (default empty)",
    "POINTSMAN_PARTITIONS": "partitions per topic when created (default 6)",
    "POINTSMAN_REPLICATION_FACTOR": "replicas per topic when created (default 1, one local broker; "
    "3 on a cluster)",
    "POINTSMAN_MIN_INSYNC_REPLICAS": "min.insync.replicas of each topic created: replicas that "
    "must have a write before it is acknowledged (default 1; 2 with a factor of 3)",
    "POINTSMAN_DATA_DIR": "broker data, embedded ClickHouse, models (default ~/.local/share/pointsman)",
    "POINTSMAN_CLICKHOUSE_DSN": "chdb:///dir (embedded, default <data dir>/clickhouse) or "
    "http(s)://user:pass@host:8123",
    "POINTSMAN_SQL_LISTEN": "host:port of the sink's read-only ClickHouse HTTP endpoint over the "
    "embedded database (default 127.0.0.1:8123; 0 takes a free port; a taken port falls back to a "
    "free one with a warning)",
    "POINTSMAN_SQL_PASSWORD": "password of user pointsman on that endpoint (never logged; default: "
    "one generated into <data dir>/sql_password, mode 0600, shown by pointsman status)",
    "POINTSMAN_ANSWER_RETENTION_DAYS": "days answers and dead-letter bodies are kept after the row is "
    "written (0 = forever; applied when the sink starts; default 90)",
    "POINTSMAN_MAX_QUERY_BYTES": "largest raw query message the router accepts, metadata included; "
    "a larger one is dead-lettered with a truncated copy (default 262144)",
    "POINTSMAN_ANSWERED_LOOKBACK_S": "how far back the SLM and LLM workers read the results topic "
    "(and remember), so a backlog or replay never re-infers an answered query (default 3600)",
    "POINTSMAN_SLM_MODEL": "SLM model directory (default <data dir>/models/" + DEFAULT_MODEL + ")",
    "POINTSMAN_SLM_THREADS": "onnxruntime threads per SLM worker (default 2)",
    "POINTSMAN_SLM_ESCALATE_BELOW": "SLM confidence under which a query goes to the LLM (default 0.4)",
    "POINTSMAN_SLM_BATCH": "most queries one SLM micro-batch takes from what is pending (default 16)",
    "POINTSMAN_SLM_BATCH_WAIT_MS": "longest wait to fill an SLM micro-batch (default 50)",
    "POINTSMAN_SLM_BACKFILL_BATCH": "most backfill requests in one SLM micro-batch while live traffic "
    "is about: a live request waits for at most one such batch (default 4)",
    "POINTSMAN_SLM_BACKFILL_YIELD_MS": "the SLM worker runs backfill batches only when no live request "
    "came within this window (default 500)",
    "POINTSMAN_SLM_BACKFILL_CALM_S": "once live traffic has been away this long, SLM backfill batches "
    "grow to the full batch size (default 30)",
    "POINTSMAN_LLM_BACKFILL_RESERVE": "upstream slots the LLM worker keeps free for live requests "
    "while a backfill runs: backfill calls start only in the room live calls leave, minus this "
    "(default 2)",
    "POINTSMAN_LLM_BASE_URL": "OpenAI-compatible base URL, e.g. https://api.openai.com/v1 "
    "(default: a local stand-in serving the SLM)",
    "POINTSMAN_LLM_API_KEY": "API key for the LLM upstream (never logged or stored)",
    "POINTSMAN_LLM_MODEL": "model name sent upstream (default gpt-4o-mini)",
    "POINTSMAN_LLM_UPSTREAMS_FILE": "TOML file: several upstreams in fallback order, limits, prices "
    "(see workers/upstreams.py); overrides the three above",
    "POINTSMAN_LLM_TIMEOUT_S": "timeout for a whole upstream call, connect to last byte (default 30)",
    "POINTSMAN_LLM_MAX_RESPONSE_BYTES": "largest upstream response body read; a larger one becomes an "
    "error result (default 1048576)",
    "POINTSMAN_LLM_STOP_GRACE_S": "on stop, seconds open LLM calls get to finish before they are "
    "cancelled and replayed on restart (default 5)",
    "POINTSMAN_LLM_RETRIES": "retries after the first attempt, across upstreams (default 3)",
    "POINTSMAN_LLM_CONCURRENCY": "upstream calls at once per LLM worker (default 16)",
    "POINTSMAN_ROUTING_POLICY": "baseline-length (default), learned, always-slm, always-llm, or a "
    "sticky A/B split such as ab:baseline-length=0.5,learned=0.5",
    "POINTSMAN_SLM_SHARE": "learned policy: target share of traffic to the SLM (default 0.8)",
    "POINTSMAN_ROUTING_THRESHOLD": "learned policy: a fixed difficulty threshold instead of the share",
    "POINTSMAN_QUALITY_TARGET": "learned policy: keep this share of all-LLM quality by the labelled "
    "outcomes, e.g. 0.95 (per-head thresholds; the SLM share follows; overrides POINTSMAN_SLM_SHARE)",
    "POINTSMAN_ROUTER_MODEL": "learned policy: routing model file, reloaded when it changes; "
    "`pointsman train router` writes it (default <data dir>/router.npz, else the shipped model)",
    "POINTSMAN_TENANT_ROUTES": "per-tenant overrides, e.g. vip=llm,batch=slm,cheap=0.9 (own threshold)",
    "POINTSMAN_AB_SALT": "salt of the A/B split (a new salt reshuffles users; default ab1)",
    "POINTSMAN_SHADOW_RATE": "share (0-1) of SLM answers and semantic-cache hits also sent to the LLM "
    "as a shadow and judged into pointsman.evaluations; never served (default 0)",
    "POINTSMAN_JUDGE": "auto (default): exact for letters, numbers and short answers, else embedding "
    "similarity; llm: free text scored by an LLM rubric through the upstreams (shadow cost)",
    "POINTSMAN_JUDGE_EMBEDDER": "embedder for free-text agreement: static (default), minilm or hashing",
    "POINTSMAN_SHADOW_CONCURRENCY": "shadow calls at once per LLM worker, only in slots live calls "
    "leave idle (default 2)",
    "POINTSMAN_SEMANTIC_CACHE": "on (default) or off",
    "POINTSMAN_SEMANTIC_VERIFIER": "minilm (default: MiniLM checks uncertain matches) or none",
    "POINTSMAN_SEMANTIC_THRESHOLD": "cosine for a semantic hit (default 0.85)",
    "POINTSMAN_SEMANTIC_TENANT_THRESHOLDS": "per-tenant thresholds, e.g. acme=0.9,globex=0.95",
    "POINTSMAN_SEMANTIC_THRESHOLDS_FILE": "per-tenant thresholds learned by `pointsman train semantic`, "
    "reloaded when the file changes; the static ones win (default <data dir>/semantic_thresholds.json)",
    "POINTSMAN_SEMANTIC_EXPLORE_RATE": "share (0-1) of the semantic cache's near misses judged by a "
    "shadow, never served: the evidence to lower a threshold with (costs LLM calls; default 0)",
    "POINTSMAN_SEMANTIC_EXPLORE_BAND": "how far under a tenant's threshold a near miss may be (default 0.05)",
}


@dataclass(frozen=True)
class Config:
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    partitions: int = 6
    replication_factor: int = 1
    min_insync_replicas: int = 1
    data_dir: Path = Path(".pointsman")
    dsn: str = ""
    answer_retention_days: int = 90
    sql_listen: str = "127.0.0.1:8123"
    sql_password: str = field(default="", repr=False)
    max_query_bytes: int = 256 * 1024
    answered_lookback_s: float = 3600.0
    slm_model: Path = Path()
    slm_threads: int = 2
    slm_escalate_below: float = 0.4
    slm_batch: int = 16
    slm_batch_wait_ms: float = 50.0
    slm_backfill_batch: int = 4
    slm_backfill_yield_ms: float = 500.0
    slm_backfill_calm_s: float = 30.0
    llm_backfill_reserve: int = 2
    llm_base_url: str = ""  # empty: the llm role serves a local stand-in
    llm_api_key: str = field(default="", repr=False)
    llm_model: str = "gpt-4o-mini"
    llm_upstreams_file: str = ""
    llm_timeout_s: float = 30.0
    llm_retries: int = 3
    llm_concurrency: int = 16
    llm_max_response_bytes: int = 1 << 20
    llm_stop_grace_s: float = 5.0
    policy: str = "baseline-length"
    slm_share: float = 0.8
    routing_threshold: float | None = None
    quality_target: float | None = None
    router_model: Path = Path()
    tenant_routes: str = ""
    ab_salt: str = "ab1"
    shadow_rate: float = 0.0
    judge: str = "auto"
    judge_embedder: str = "static"
    shadow_concurrency: int = 2
    semantic: bool = True
    semantic_verifier: bool = True
    semantic_threshold: float = 0.85
    semantic_tenant_thresholds: str = ""
    semantic_thresholds_file: Path = Path()  # Path(): none watched (from_env: in the data dir)
    semantic_explore_rate: float = 0.0
    semantic_explore_band: float = 0.05

    def __post_init__(self) -> None:
        from pipeline.eval.judge import JUDGE_MODES

        if not 0.0 <= self.shadow_rate <= 1.0:
            raise ConfigError(f"POINTSMAN_SHADOW_RATE must be in [0, 1], got {self.shadow_rate}")
        if not 0.0 <= self.semantic_explore_rate <= 1.0:
            raise ConfigError(f"POINTSMAN_SEMANTIC_EXPLORE_RATE must be in [0, 1], got "
                              f"{self.semantic_explore_rate}")
        if not 0.0 <= self.semantic_explore_band < 1.0:
            raise ConfigError(f"POINTSMAN_SEMANTIC_EXPLORE_BAND must be in [0, 1), got "
                              f"{self.semantic_explore_band}")
        if self.judge not in JUDGE_MODES:
            raise ConfigError(f"POINTSMAN_JUDGE must be one of {', '.join(JUDGE_MODES)}, got {self.judge!r}")
        if self.quality_target is not None and not 0.0 < self.quality_target <= 1.0:
            raise ConfigError(f"POINTSMAN_QUALITY_TARGET must be in (0, 1], got {self.quality_target}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        data_dir = Path(env.get("POINTSMAN_DATA_DIR", "~/.local/share/pointsman")).expanduser()
        data_dir = data_dir.resolve()
        return cls(
            bootstrap=env.get("POINTSMAN_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            topic_prefix=env.get("POINTSMAN_TOPIC_PREFIX", ""),
            partitions=int(env.get("POINTSMAN_PARTITIONS", "6")),
            replication_factor=int(env.get("POINTSMAN_REPLICATION_FACTOR", "1")),
            min_insync_replicas=int(env.get("POINTSMAN_MIN_INSYNC_REPLICAS", "1")),
            data_dir=data_dir,
            dsn=env.get("POINTSMAN_CLICKHOUSE_DSN", f"chdb://{data_dir / 'clickhouse'}"),
            answered_lookback_s=float(env.get("POINTSMAN_ANSWERED_LOOKBACK_S", "3600")),
            max_query_bytes=int(env.get("POINTSMAN_MAX_QUERY_BYTES", str(256 * 1024))),
            answer_retention_days=int(env.get("POINTSMAN_ANSWER_RETENTION_DAYS", "90")),
            sql_listen=env.get("POINTSMAN_SQL_LISTEN", "127.0.0.1:8123"),
            sql_password=env.get("POINTSMAN_SQL_PASSWORD", ""),
            slm_model=Path(env.get("POINTSMAN_SLM_MODEL", data_dir / "models" / DEFAULT_MODEL)),
            slm_threads=int(env.get("POINTSMAN_SLM_THREADS", "2")),
            slm_escalate_below=float(env.get("POINTSMAN_SLM_ESCALATE_BELOW", "0.4")),
            slm_batch=int(env.get("POINTSMAN_SLM_BATCH", "16")),
            slm_batch_wait_ms=float(env.get("POINTSMAN_SLM_BATCH_WAIT_MS", "50")),
            slm_backfill_batch=int(env.get("POINTSMAN_SLM_BACKFILL_BATCH", "4")),
            slm_backfill_yield_ms=float(env.get("POINTSMAN_SLM_BACKFILL_YIELD_MS", "500")),
            slm_backfill_calm_s=float(env.get("POINTSMAN_SLM_BACKFILL_CALM_S", "30")),
            llm_backfill_reserve=int(env.get("POINTSMAN_LLM_BACKFILL_RESERVE", "2")),
            llm_base_url=env.get("POINTSMAN_LLM_BASE_URL", ""),
            llm_api_key=env.get("POINTSMAN_LLM_API_KEY", ""),
            llm_model=env.get("POINTSMAN_LLM_MODEL", "gpt-4o-mini"),
            llm_upstreams_file=env.get("POINTSMAN_LLM_UPSTREAMS_FILE", ""),
            llm_timeout_s=float(env.get("POINTSMAN_LLM_TIMEOUT_S", "30")),
            llm_retries=int(env.get("POINTSMAN_LLM_RETRIES", "3")),
            llm_concurrency=int(env.get("POINTSMAN_LLM_CONCURRENCY", "16")),
            llm_max_response_bytes=int(env.get("POINTSMAN_LLM_MAX_RESPONSE_BYTES", str(1 << 20))),
            llm_stop_grace_s=float(env.get("POINTSMAN_LLM_STOP_GRACE_S", "5")),
            policy=env.get("POINTSMAN_ROUTING_POLICY", "baseline-length"),
            slm_share=float(env.get("POINTSMAN_SLM_SHARE", "0.8")),
            routing_threshold=(float(env["POINTSMAN_ROUTING_THRESHOLD"])
                               if env.get("POINTSMAN_ROUTING_THRESHOLD") else None),
            quality_target=(float(env["POINTSMAN_QUALITY_TARGET"])
                            if env.get("POINTSMAN_QUALITY_TARGET") else None),
            router_model=Path(env.get("POINTSMAN_ROUTER_MODEL", data_dir / "router.npz")).expanduser(),
            tenant_routes=env.get("POINTSMAN_TENANT_ROUTES", ""),
            ab_salt=env.get("POINTSMAN_AB_SALT", "ab1"),
            shadow_rate=float(env.get("POINTSMAN_SHADOW_RATE", "0")),
            judge=env.get("POINTSMAN_JUDGE", "auto"),
            judge_embedder=env.get("POINTSMAN_JUDGE_EMBEDDER", "static"),
            shadow_concurrency=int(env.get("POINTSMAN_SHADOW_CONCURRENCY", "2")),
            semantic=env.get("POINTSMAN_SEMANTIC_CACHE", "on") != "off",
            semantic_verifier=env.get("POINTSMAN_SEMANTIC_VERIFIER", "minilm") != "none",
            semantic_threshold=float(env.get("POINTSMAN_SEMANTIC_THRESHOLD", "0.85")),
            semantic_tenant_thresholds=env.get("POINTSMAN_SEMANTIC_TENANT_THRESHOLDS", ""),
            semantic_thresholds_file=Path(env.get("POINTSMAN_SEMANTIC_THRESHOLDS_FILE")
                                          or data_dir / THRESHOLDS_FILE_NAME).expanduser(),
            semantic_explore_rate=float(env.get("POINTSMAN_SEMANTIC_EXPLORE_RATE", "0")),
            semantic_explore_band=float(env.get("POINTSMAN_SEMANTIC_EXPLORE_BAND", "0.05")),
        )

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix, self.replication_factor, self.min_insync_replicas)

    def secrets(self) -> list[str]:
        """The secrets this configuration holds itself: the API key and the DSN's password (every
        upstream's key registers when the chat client is built: workers/llm_client.py). They are
        redacted from all output (topics/redact.py)."""
        password = urlsplit(self.dsn).password if "://" in self.dsn else None
        return [s for s in (self.llm_api_key, password, self.sql_password) if s]

    def sql_endpoint(self) -> SqlEndpointSettings:
        return SqlEndpointSettings(listen=self.sql_listen, password=self.sql_password,
                                   password_file=self.data_dir / PASSWORD_FILE_NAME)

    def group(self, role: str) -> str:
        return f"{self.topic_prefix}pointsman-{role}"

    def kafka(self) -> LocalKafkaConfig:
        port = int(self.bootstrap.rsplit(":", 1)[1])
        return LocalKafkaConfig(home=self.data_dir / "kafka", port=port, controller_port=port + 1)

    def router(self) -> RouterSettings:
        options = PolicyOptions(slm_share=self.slm_share, threshold=self.routing_threshold,
                                tenant_routes=self.tenant_routes, ab_salt=self.ab_salt,
                                quality_target=self.quality_target, model_file=str(self.router_model))
        return RouterSettings(
            self.bootstrap, self.topics, self.policy, policy_options=options,
            app_id=self.group("router"), semantic=self.semantic,
            semantic_verifier=self.semantic_verifier, semantic_threshold=self.semantic_threshold,
            semantic_tenant_thresholds=self.semantic_tenant_thresholds,
            semantic_thresholds_file="" if self.semantic_thresholds_file == Path()
            else str(self.semantic_thresholds_file),
            semantic_explore_rate=self.semantic_explore_rate,
            semantic_explore_band=self.semantic_explore_band,
            max_query_bytes=self.max_query_bytes, shadow_rate=self.shadow_rate,
        )

    def slm(self) -> SlmWorkerSettings:
        """The SLM prices its answers' all-LLM counterfactual as the LLM track's first upstream."""
        model, overrides = (counterfactual_pricing(Path(self.llm_upstreams_file))
                            if self.llm_upstreams_file else (self.llm_model, {}))
        prices = PriceTable()
        prices.prices.update(overrides)
        return SlmWorkerSettings(
            self.bootstrap, self.topics, self.slm_model, threads=self.slm_threads,
            llm_model=model, prices=prices, shadow_rate=self.shadow_rate,
            escalate_below=self.slm_escalate_below, group=self.group("slm"),
            batch_size=self.slm_batch, batch_wait_s=self.slm_batch_wait_ms / 1000,
            answered_lookback_s=self.answered_lookback_s,
            backfill_batch=self.slm_backfill_batch,
            backfill_yield_s=self.slm_backfill_yield_ms / 1000,
            backfill_calm_s=self.slm_backfill_calm_s,
        )

    def llm(self, base_url: str | None = None) -> LlmWorkerSettings:
        """Upstreams from POINTSMAN_LLM_UPSTREAMS_FILE, else the one from base URL/model/key."""
        prices = PriceTable()
        if self.llm_upstreams_file:
            upstreams, overrides = load_upstreams(Path(self.llm_upstreams_file))
            prices.prices.update(overrides)
        else:
            upstreams = [Upstream("default", base_url or self.llm_base_url, self.llm_model,
                                  api_key=self.llm_api_key, timeout_s=self.llm_timeout_s)]
        llm = LlmSettings(upstreams=tuple(upstreams), retries=self.llm_retries,
                          max_concurrency=self.llm_concurrency,
                          max_response_bytes=self.llm_max_response_bytes)
        shadow = ShadowSettings(concurrency=self.shadow_concurrency, judge=self.judge,
                                judge_embedder=self.judge_embedder)
        return LlmWorkerSettings(self.bootstrap, self.topics, llm, prices=prices,
                                 group=self.group("llm"), stop_grace_s=self.llm_stop_grace_s,
                                 answered_lookback_s=self.answered_lookback_s, shadow=shadow,
                                 backfill_reserve=self.llm_backfill_reserve)

    def sink(self) -> SinkSettings:
        return SinkSettings(self.bootstrap, self.topics, self.dsn, group=self.group("sink"),
                            answer_retention_days=self.answer_retention_days)
