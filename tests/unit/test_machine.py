"""The int8 instruction set a benchmark or a model build records, read from /proc/cpuinfo."""

from __future__ import annotations

import pytest

from infra.machine import int8_isa


@pytest.mark.parametrize(("flags", "isa"), [
    ("fpu sse2 avx avx2 fma", "AVX2"),
    ("avx2 avx512f avx512bw avx512_vnni", "AVX-512 VNNI"),
    ("avx2 avx512f avx512bw", "AVX-512"),
    ("avx2 avx_vnni", "AVX-VNNI"),
    ("avx2 avx512_vnni amx_int8 amx_tile", "AMX"),
])
def test_the_widest_int8_instructions_are_named(flags: str, isa: str) -> None:
    assert int8_isa(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n") == isa


def test_arm_dot_product_and_an_unknown_cpu() -> None:
    assert int8_isa("processor\t: 0\nFeatures\t: fp asimd asimddp\n") == "NEON dotprod"
    assert int8_isa("processor\t: 0\n") != ""  # falls back to the platform's machine name
