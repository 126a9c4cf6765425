"""The learned per-tenant thresholds file: its format, and the mapping the router reads it through.

`pointsman train semantic` writes the file (pipeline/train_semantic.py); the router's semantic
cache reads tenant thresholds through `WatchedThresholds`, which re-reads the file when its mtime
changes (checked at most every `reload_every_s`), like the learned routing policy's model file:
no restart of Kafka or of the router. Static thresholds (POINTSMAN_SEMANTIC_TENANT_THRESHOLDS)
win over learned ones for the tenants they name. A missing, half-written or malformed file keeps
what was loaded before (nothing, at start).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "semantic_thresholds.json"  # in the data dir
FORMAT = 1


def write_atomically(document: Mapping[str, Any], out: Path) -> None:
    """The router may read the file at any moment: write aside, then rename over it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out)


def read_thresholds(path: Path) -> dict[str, float]:
    """tenant -> learned threshold; raises OSError/ValueError/KeyError/TypeError on a bad file."""
    document = json.loads(path.read_text())
    if document.get("format") != FORMAT:
        raise ValueError(f"unknown thresholds file format {document.get('format')!r}")
    out: dict[str, float] = {}
    for tenant, entry in document["tenants"].items():
        value = float(entry["threshold"])
        if not 0.0 <= value <= 2.0:
            raise ValueError(f"threshold {value} of tenant {tenant!r} out of range")
        out[str(tenant)] = value
    return out


class WatchedThresholds(Mapping[str, float]):
    """Static per-tenant thresholds over the learned ones in `path`, kept current with the file."""

    def __init__(self, static: Mapping[str, float], path: Path | None,
                 reload_every_s: float = 30.0) -> None:
        self.static = dict(static)
        self.path = path
        self.reload_every_s = reload_every_s
        self.learned: dict[str, float] = {}
        self._merged: dict[str, float] = dict(self.static)
        self._mtime: float | None = None
        self._checked_at = -float("inf")
        self._maybe_reload()

    def _maybe_reload(self) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if now - self._checked_at < self.reload_every_s:
            return
        self._checked_at = now
        try:
            mtime = self.path.stat().st_mtime_ns / 1e9
        except OSError:
            return  # not written yet (or removed): keep what we have
        if mtime == self._mtime:
            return
        try:
            learned = read_thresholds(self.path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("semantic thresholds %s not loaded: %s", self.path, exc)
            return
        self._mtime, self.learned = mtime, learned
        self._merged = {**learned, **self.static}  # a static threshold wins
        log.info("semantic thresholds loaded from %s: %d tenants", self.path, len(learned))

    def __getitem__(self, tenant: str) -> float:
        self._maybe_reload()
        return self._merged[tenant]

    def get(self, tenant: str, default: Any = None) -> Any:  # one reload check per lookup
        self._maybe_reload()
        return self._merged.get(tenant, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged)

    def __len__(self) -> int:
        return len(self._merged)
