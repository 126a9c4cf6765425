"""Health of one role's process, for container healthchecks: `python -m pipeline.health ROLE`.

A role is healthy while its consumer group has a member on this host: the process joined the
group, so it is connected to the broker and consuming. A role that crashed, cannot start (the
SLM without its model, say) or lost the broker for longer than its session timeout has no
member, and the check fails. With replicas (two slm containers) each container checks for its
own member by address, so one dead replica is not hidden by the other.
"""

from __future__ import annotations

import socket
import sys

from confluent_kafka.admin import AdminClient

from pipeline.config import Config

ROLES = ("router", "slm", "llm", "sink")
LOOPBACK = {"127.0.0.1", "::1"}


def local_addresses() -> set[str]:
    """The addresses this host's connections come from: in a container, its network address."""
    try:
        _, _, addresses = socket.gethostbyname_ex(socket.gethostname())
    except OSError:
        addresses = []
    return set(addresses) | LOOPBACK


def member_hosts(bootstrap: str, group: str, timeout_s: float = 10.0) -> list[str]:
    """The client address of each member of `group`, as the broker sees it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group]
    description = future.result(timeout=timeout_s)
    return [member.host.lstrip("/") for member in description.members]  # the broker writes "/ip"


def problem(role: str, config: Config, addresses: set[str] | None = None) -> str | None:
    """None when healthy, else why not."""
    group = config.group(role)
    try:
        hosts = member_hosts(config.bootstrap, group)
    except Exception as exc:  # any failure to ask is unhealthy: say what it was
        return f"cannot describe group {group} at {config.bootstrap}: {exc}"
    ours = addresses if addresses is not None else local_addresses()
    if not any(host in ours for host in hosts):
        return f"no member of group {group} on this host (members at: {', '.join(hosts) or 'none'})"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ROLES:
        print(f"usage: python -m pipeline.health {{{','.join(ROLES)}}}", file=sys.stderr)
        return 2
    why = problem(argv[0], Config.from_env())
    print(f"unhealthy: {why}" if why else f"healthy: {argv[0]} is in its consumer group")
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
