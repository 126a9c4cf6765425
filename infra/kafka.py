"""A local Apache Kafka broker (KRaft, broker+controller in one JVM) for dev and tests; the node
that infra/kafka_cluster.py starts N of (own JVM, home and ports each) for a local cluster.

The official jars are resolved once per version with Maven into a cache outside the repo; the
broker runs detached (own session), so it outlives the Python process that started it.

    python -m infra.kafka start|stop|status [--home DIR] [--port N]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from topics.errors import ConfigError, InfraError

log = logging.getLogger(__name__)

_ASSETS = Path(__file__).with_name("kafka")  # pom.xml, server.properties.in, log4j2.properties
_MAIN = "kafka.Kafka"
# Kafka's own KAFKA_JVM_PERFORMANCE_OPTS, plus: die on OOM rather than limp along.
_JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# Brokers this process spawned: polling the Popen reaps the child (no zombie left behind) and
# is exact where /proc is racy (cmdline reads empty while the JVM is mid-exec).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "pointsman" / "kafka"


@dataclass(frozen=True)
class LocalKafkaConfig:
    """One KRaft node. The defaults are a standalone broker; LocalKafkaCluster fills in the
    cluster fields (node id, the shared quorum and cluster id, internal-topic replication)."""

    home: Path  # server.properties, data/ (log.dirs), logs/, kafka.pid
    port: int = 9092
    controller_port: int = 9093
    version: str = "4.1.1"
    cache_dir: Path = field(default_factory=_default_cache)  # jars in cache_dir/<version>/libs
    heap: str = "768m"
    node_id: int = 1
    voters: str = ""  # controller.quorum.voters; empty: this node is the whole quorum
    replication: int = 1  # of the internal topics (__consumer_offsets, transaction state)
    min_isr: int = 1
    cluster_id: str = ""  # empty: a new random id when the storage is first formatted

    def __post_init__(self) -> None:
        # One absolute path everywhere: the pid check matches it against the broker's cmdline.
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser().resolve())
        if not all(0 < p < 65536 for p in (self.port, self.controller_port)):
            raise ConfigError(f"Kafka ports out of range: {self.port}, {self.controller_port}")
        if self.port == self.controller_port:
            raise ConfigError(f"Kafka port and controller_port must differ (both {self.port})")
        if not 1 <= self.min_isr <= self.replication:
            raise ConfigError(f"Kafka min ISR {self.min_isr} must be 1..{self.replication}")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def quorum(self) -> str:
        return self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    version: str
    home: Path
    detail: str


def _libs(cfg: LocalKafkaConfig) -> Path:
    return cfg.cache_dir / cfg.version / "libs"


def _props(cfg: LocalKafkaConfig) -> Path:
    return cfg.home / "server.properties"


def _pid_file(cfg: LocalKafkaConfig) -> Path:
    return cfg.home / "kafka.pid"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive flock; the kernel drops it if we die, so there is never a stale lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _java() -> str:
    # JAVA_HOME first, as Kafka's kafka-run-class.sh does; then PATH.
    java = Path(os.environ.get("JAVA_HOME") or "/nonexistent", "bin", "java")
    found = str(java) if os.access(java, os.X_OK) else shutil.which("java")
    if not found:
        raise InfraError("`java` not found: Kafka needs Java 17+; set JAVA_HOME or fix PATH")
    return found


def _tail(text: str, lines: int = 25) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # mvn's jansi colours even in batch mode
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_jars(cfg: LocalKafkaConfig) -> Path:
    """Resolve the broker's runtime jars into cache_dir/<version>/libs; mvn runs only on a miss."""
    libs = _libs(cfg)
    marker = libs / f"kafka_2.13-{cfg.version}.jar"
    if marker.is_file():  # libs/ only ever appears complete (atomic rename below)
        return libs
    with _locked(libs.parent / ".lock"):
        if marker.is_file():  # another process resolved them while we waited
            return libs
        _java()  # mvn needs it too, and this error is clearer than mvn's
        mvn = shutil.which("mvn")
        if not mvn:
            raise InfraError(f"`mvn` not found: needed once to fetch the Kafka {cfg.version} jars")
        pom = libs.parent / "pom.xml"
        pom.write_text((_ASSETS / "pom.xml").read_text().replace("@KAFKA_VERSION@", cfg.version))
        tmp = libs.parent / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        # groupId:artifactId:goal uses the plugin version pinned in the pom and skips the
        # plugin-prefix metadata lookup, so a warm ~/.m2 needs no network.
        goal = "org.apache.maven.plugins:maven-dependency-plugin:copy-dependencies"
        cmd = [mvn, "-q", "-B", "-f", str(pom), goal, f"-DoutputDirectory={tmp}"]
        cmd.append("-DincludeScope=runtime")
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as e:
            raise InfraError(f"mvn timed out resolving the Kafka {cfg.version} jars") from e
        if r.returncode != 0 or not (tmp / marker.name).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise InfraError(
                f"mvn failed to resolve kafka_2.13:{cfg.version} (exit {r.returncode}): "
                f"{' '.join(cmd)}\n{_tail(r.stdout + r.stderr)}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        os.replace(tmp, libs)
    return libs


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (an unreaped broker must not count as running)."""
    if pid in _children:  # our child: poll() is authoritative and reaps it
        return _children[pid].poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # no /proc (macOS): launchd reaps orphans anyway
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    return True


def _is_broker(cfg: LocalKafkaConfig, pid: int) -> bool:
    """pid is alive and is *this* home's broker, not a recycled pid or another broker."""
    if not _alive(pid):
        return False
    if pid in _children:
        return True
    try:
        cmd = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:  # no /proc (macOS)
        ps = ["ps", "-o", "command=", "-p", str(pid)]
        cmd = subprocess.run(ps, capture_output=True, text=True, check=False).stdout
    # Empty while the process is mid-exec or mid-exit: still the pid from our pid file.
    return not cmd.strip() or (_MAIN in cmd and str(_props(cfg)) in cmd)


def _read_pid(cfg: LocalKafkaConfig) -> int | None:
    try:
        return int(_pid_file(cfg).read_text().strip())
    except (OSError, ValueError):
        return None


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _taken(port: int) -> bool:
    # connect catches a wildcard listener BSD would let us bind over; bind catches the rest.
    if _answers(port):
        return True
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore our own TIME_WAITs
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def status(cfg: LocalKafkaConfig) -> BrokerStatus:
    """Running means: pid file, that pid is this home's broker, and its port accepts connections."""
    pid = _read_pid(cfg)
    if pid is not None and not _is_broker(cfg, pid):
        pid = None
    answers = _answers(cfg.port)
    if pid is None:
        detail = "not running" + (" (stale pid file)" if _pid_file(cfg).exists() else "")
        if answers:
            detail += f"; port {cfg.port} is answered by another process"
    elif answers:
        detail = f"running: pid {pid}, kafka {cfg.version}, {cfg.bootstrap}, home {cfg.home}"
    else:
        detail = f"pid {pid} alive but {cfg.bootstrap} not answering (starting, stopping or hung)"
    running = pid is not None and answers
    return BrokerStatus(running, pid, cfg.bootstrap, cfg.version, cfg.home, detail)


def _jvm(cfg: LocalKafkaConfig, java: str, heap: str) -> list[str]:
    log4j, logs = _ASSETS / "log4j2.properties", cfg.home / "logs"
    sysprops = [f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={logs}"]
    return [java, f"-Xms{heap}", f"-Xmx{heap}", *_JVM_FLAGS, *sysprops, "-cp", f"{_libs(cfg)}/*"]


def new_cluster_id() -> str:
    # Kafka's Uuid.randomUuid() format (base64url, unpadded, never leading '-'), made here to
    # save a JVM start for `StorageTool random-uuid`.
    cid = "-"
    while cid.startswith("-"):
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    return cid


def _format_storage(cfg: LocalKafkaConfig, java: str) -> None:
    cid = cfg.cluster_id or new_cluster_id()
    cmd = [*_jvm(cfg, java, "256m"), "kafka.tools.StorageTool", "format", "-t", cid]
    cmd += ["-c", str(_props(cfg)), "--ignore-formatted"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if r.returncode != 0:
        raise InfraError(
            f"formatting Kafka storage in {cfg.home / 'data'} failed:\n{_tail(r.stdout + r.stderr)}"
        )


def _logs(cfg: LocalKafkaConfig) -> dict[Path, int]:
    """Log files and their current sizes: a failed start shows only what *it* wrote."""
    paths = (cfg.home / "logs" / "server.log", cfg.home / "logs" / "kafka.out")
    return {p: p.stat().st_size if p.exists() else 0 for p in paths}


def _log_tail(cfg: LocalKafkaConfig, since: dict[Path, int]) -> str:
    parts = []
    for path, size in _logs(cfg).items():
        start = since.get(path, 0) if size >= since.get(path, 0) else 0  # 0 if rotated since
        with contextlib.suppress(OSError), open(path, "rb") as fh:
            fh.seek(max(start, size - 64_000))  # logs reach 20 MB: read the end only
            if tail := _tail(fh.read().decode(errors="replace"), 30):
                parts.append(f"--- {path} ---\n{tail}")
    return "\n".join(parts) or f"(nothing new in {cfg.home / 'logs'})"


def _coordinator_ready(admin: AdminClient) -> bool:
    """Consumer groups work: the group coordinator (and __consumer_offsets) has finished loading.
    Without this the first consumers of a fresh broker log a burst of coordinator errors."""
    future = admin.describe_consumer_groups(["pointsman-readiness-probe"], request_timeout=5)
    # exception(), not result(): a raised error keeps this frame (and the admin client) alive in
    # a cycle through the future until the GC runs, and librdkafka 2.16 can abort the process
    # when a broker such a leaked client still tracks is killed.
    try:
        return future["pointsman-readiness-probe"].exception(6) is None
    except TimeoutError:
        return False


def _wait_ready(cfg: LocalKafkaConfig, pid: int, deadline: float, since: dict[Path, int],
                brokers: int = 1) -> None:
    """Until the broker serves metadata with `brokers` registered (itself among them) and
    consumer groups work, i.e. clients can really use it."""
    admin: AdminClient | None = None
    while time.monotonic() < deadline:
        if not _is_broker(cfg, pid):
            rc = _children[pid].returncode if pid in _children else "?"
            raise InfraError(
                f"Kafka (pid {pid}) exited during startup, code {rc}:\n{_log_tail(cfg, since)}"
            )
        if _answers(cfg.port):  # only then ask librdkafka: spares its connection-refused noise
            admin = admin or AdminClient({"bootstrap.servers": cfg.bootstrap, "log_level": 2})
            with contextlib.suppress(KafkaException):
                registered = len(admin.list_topics(timeout=2).brokers)
                if registered >= brokers and _coordinator_ready(admin):
                    return
        time.sleep(0.2)
    raise InfraError(
        f"Kafka (pid {pid}) not answering on {cfg.bootstrap} in time:\n{_log_tail(cfg, since)}"
    )


@dataclass(frozen=True)
class Launch:
    """A node process on its way up (see launch)."""

    pid: int
    since: dict[Path, int]  # log sizes before it: a failed start shows only what it wrote
    fresh: bool  # spawned by this call, so a failed start stops it again


def _launch(cfg: LocalKafkaConfig) -> Launch | None:
    """Spawn the node unless it runs (None) or is still booting; the caller holds its lock."""
    for sub in ("data", "logs"):
        (cfg.home / sub).mkdir(parents=True, exist_ok=True)
    st = status(cfg)
    if st.running:
        return None
    if st.pid is not None:  # ours but still booting (an earlier start timed out): wait for it
        return Launch(st.pid, {}, fresh=False)
    _pid_file(cfg).unlink(missing_ok=True)
    for port in (cfg.port, cfg.controller_port):
        if _taken(port):
            raise InfraError(
                f"port {port} on 127.0.0.1 is already in use by another process;"
                " stop it or choose other ports (--port / LocalKafkaConfig)"
            )
    java = _java()
    ensure_jars(cfg)
    # Rewritten each start so it follows cfg; node.id and the cluster id never change.
    template = string.Template((_ASSETS / "server.properties.in").read_text())
    data = cfg.home / "data"
    props = template.substitute(
        port=cfg.port, controller_port=cfg.controller_port, data_dir=data, node_id=cfg.node_id,
        voters=cfg.quorum, replication=cfg.replication, min_isr=cfg.min_isr,
    )
    _props(cfg).write_text(props)
    if not (data / "meta.properties").exists():  # first start only: data persists
        _format_storage(cfg, java)
    since = _logs(cfg)
    with open(cfg.home / "logs" / "kafka.out", "ab") as out:
        proc = subprocess.Popen(
            [*_jvm(cfg, java, cfg.heap), _MAIN, str(_props(cfg))],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cfg.home,
            start_new_session=True,  # own session: no Ctrl-C from our terminal, outlives us
        )
    _children[proc.pid] = proc
    tmp = _pid_file(cfg).with_suffix(".tmp")
    tmp.write_text(f"{proc.pid}\n")
    os.replace(tmp, _pid_file(cfg))  # atomic: a reader never sees a half-written pid
    return Launch(proc.pid, since, fresh=True)


def launch(cfg: LocalKafkaConfig) -> Launch | None:
    """Spawn the node without waiting for it; None if it already runs. A cluster launches every
    node first: none is ready until a majority of the controller quorum is up."""
    with _locked(cfg.home / ".kafka.lock"):
        return _launch(cfg)


def await_launch(cfg: LocalKafkaConfig, spawned: Launch, deadline: float, brokers: int = 1) -> None:
    """Wait until the launched node serves clients, `brokers` brokers registered; a failed start
    of a process this call's launch spawned stops it again."""
    try:
        _wait_ready(cfg, spawned.pid, deadline, spawned.since, brokers)
    except BaseException:
        if spawned.fresh:
            _terminate(spawned.pid, 10)  # a failed start leaves nothing behind
            _pid_file(cfg).unlink(missing_ok=True)
        raise


def start(cfg: LocalKafkaConfig, *, timeout: float = 90) -> BrokerStatus:
    """Start the broker unless running and wait until it serves metadata. Idempotent."""
    deadline = time.monotonic() + timeout
    cfg.home.mkdir(parents=True, exist_ok=True)
    with _locked(cfg.home / ".kafka.lock"):  # a concurrent start waits, then sees ours running
        spawned = _launch(cfg)
        if spawned is not None:
            await_launch(cfg, spawned, deadline)
        return status(cfg)


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):  # not _is_broker: an exiting JVM's cmdline is empty, its ports still open
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _terminate(pid: int, timeout: float) -> None:
    # SIGTERM runs Kafka's shutdown hook: controlled shutdown, logs flushed, clean restart later.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _gone(pid, timeout):
        return
    log.warning("Kafka pid %s did not stop within %.0fs; sending SIGKILL", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _gone(pid, 10):
        raise InfraError(f"Kafka pid {pid} survived SIGKILL")


def kill(cfg: LocalKafkaConfig, sig: signal.Signals = signal.SIGKILL) -> int | None:
    """Send `sig` to the node (SIGKILL: no shutdown hook, no controlled shutdown, as a crash) and
    wait until it is gone; the pid it had, or None if it was not running."""
    with _locked(cfg.home / ".kafka.lock"):
        pid = _read_pid(cfg)
        if pid is None or not _is_broker(cfg, pid):
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not _gone(pid, 30):
            raise InfraError(f"Kafka pid {pid} still alive 30 s after {sig.name}")
        _pid_file(cfg).unlink(missing_ok=True)
        return pid


@contextlib.contextmanager
def started(cfg: LocalKafkaConfig) -> Iterator[BrokerStatus]:
    """The broker for a bounded job (a bench): started if it was not running, and stopped again
    at the end if this started it, so repeated runs on fresh ports leave no brokers behind (each
    idle one holds ~450 MB and a few % of a core, which slowed the benches that came after)."""
    was_running = status(cfg).running
    broker = start(cfg)
    try:
        yield broker
    finally:
        if not was_running:
            stop(cfg)


def stop(cfg: LocalKafkaConfig, *, timeout: float = 30) -> bool:
    """Stop the broker (SIGTERM; SIGKILL after `timeout`). False if it was not running."""
    if not cfg.home.is_dir():
        return False
    with _locked(cfg.home / ".kafka.lock"):
        pid = _read_pid(cfg)
        running = pid is not None and _is_broker(cfg, pid)
        if running:
            _terminate(pid, timeout)
        _pid_file(cfg).unlink(missing_ok=True)
        return running


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra.kafka", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("start", "stop", "status"))
    ap.add_argument("--home", type=Path, default=Path(".pointsman/kafka"), help="%(default)s")
    ap.add_argument("--port", type=int, default=9092, help="%(default)s")
    ap.add_argument("--controller-port", type=int, help="default: --port + 1")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cport = args.controller_port or args.port + 1
        cfg = LocalKafkaConfig(home=args.home, port=args.port, controller_port=cport)
        if args.action == "start":
            print(start(cfg).detail)
        elif args.action == "stop":
            print("stopped" if stop(cfg) else "not running")
        else:
            st = status(cfg)
            print(st.detail)
            return 0 if st.running else 3  # LSB convention: 3 = not running
    except ConfigError as e:  # InfraError included
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
