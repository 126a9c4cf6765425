"""What a benchmark runs on: the CPU model, its int8 instruction set, its count and the Python version."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_isa(cpuinfo: str | None = None) -> str:
    """The widest int8 dot-product instructions the CPU has (int8 kernels differ by them),
    from /proc/cpuinfo's text (or the one given)."""
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        return platform.machine()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                       ("avx512bw", "AVX-512"), ("avx2", "AVX2"), ("asimddp", "NEON dotprod")):
        if flag in flags:
            return name
    return platform.machine()


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "int8_isa": int8_isa(),
            "python": platform.python_version()}
