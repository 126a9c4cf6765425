"""`pointsman bench slm --kernels`: the int8 ceiling, from the model's weight MatMuls alone.

Every weight MatMul of the fp32 model (the projections of all layers and the LM head: the
same shapes and the same bytes to stream per step as a real decode step), with random
weights, as one graph per kernel: fp32 MatMul (MLAS SGEMM), weight-only int8 (MatMulNBits,
quantize_int8's settings: the shipped form), the same with blocks of 64 and at 4 bits, and
per-column int8 DynamicQuantizeMatMul (MLAS u8s8 QGEMM, the w8a8 form). Attention, norms and
token choice are identical in both precisions, so the whole-model int8/fp32 ratio at a batch
size cannot exceed the MatMul-only ratio of the kernel the model uses.

It also decodes with the fp32 model at each batch size: the step's time less its MatMuls' is
the part no int8 kernel speeds up, so `step_ceiling` = fp32 step / (that part + the kernel's
MatMuls) is the whole-model int8/fp32 ratio a model made of that kernel could reach at best.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workers.slm.engine import session_options
from workers.slm.quantize import weight_matmuls

Shape = tuple[int, int]  # (K, N) of a weight


@dataclass(frozen=True)
class KernelRow:
    kernel: str
    batch: int
    ms: float  # all weight MatMuls of one decode step, best of the repeats
    vs_fp32: float
    step_ceiling: float  # the best whole-model decode int8/fp32 ratio with this kernel (see above)


def weight_shapes(model_path: Path) -> list[Shape]:
    """(K, N) of every MatMul with a constant weight, read without loading the weights."""
    model = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    return [inits[nodes[name].input[1]] for name in weight_matmuls(model)]  # type: ignore[misc]


def _graph(shapes: Sequence[Shape], node: Callable[[int, Shape, str], tuple[list, list]]) -> onnx.ModelProto:
    """One input per distinct K; one output per weight; `node` emits nodes + initializers."""
    nodes, inits, outputs = [], [], []
    for i, shape in enumerate(shapes):
        made, weights = node(i, shape, f"x{shape[0]}")
        nodes += made
        inits += weights
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["M", shape[1]]))
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, ["M", k])
              for k in sorted({k for k, _ in shapes})]
    graph = helper.make_graph(nodes, "weight_matmuls", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _weight(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * 0.05).astype(np.float32)


def fp32_graph(shapes: Sequence[Shape], seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def node(i: int, shape: Shape, x: str) -> tuple[list, list]:
        return ([helper.make_node("MatMul", [x, f"w{i}"], [f"y{i}"], name=f"mm{i}")],
                [numpy_helper.from_array(_weight(rng, shape), f"w{i}")])

    return _graph(shapes, node)


def qgemm_graph(shapes: Sequence[Shape], seed: int = 0) -> onnx.ModelProto:
    """Per-column symmetric int8 weights; activations quantised per tensor at run time.

    Weights use 7 bits (onnxruntime's `reduce_range`): without VNNI (AVX2 only) the u8 x s8
    kernel adds pairs of products in saturating 16-bit lanes, and 255 * 127 * 2 overflows them
    (12% error on such a CPU); 255 * 63 * 2 does not, so the result is the same on every x86 CPU.
    The kernel, and so its speed, is the same."""
    rng = np.random.default_rng(seed)

    def node(i: int, shape: Shape, x: str) -> tuple[list, list]:
        w = _weight(rng, shape)
        scale = np.abs(w).max(axis=0) / 63
        q = np.round(w / scale).astype(np.int8)
        made = helper.make_node("DynamicQuantizeMatMul", [x, f"q{i}", f"s{i}"], [f"y{i}"],
                                domain="com.microsoft", name=f"dq{i}")
        return [made], [numpy_helper.from_array(q, f"q{i}"),
                        numpy_helper.from_array(scale.astype(np.float32), f"s{i}")]

    return _graph(shapes, node)


def _session(model: onnx.ModelProto, threads: int) -> object:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                providers=["CPUExecutionProvider"])


def _step_timer(model_dir: Path, threads: int, tokens: int = 16) -> Callable[[int], float]:
    """batch -> median decode step in ms (graph + token choice) of the fp32 model on the
    benchmark prompts, decoded as `bench slm` does."""
    from workers.slm.bench import _measure, bench_prompts
    from workers.slm.engine import SlmEngine

    engine = SlmEngine(model_dir, threads=threads)
    encoded = [engine.encode(p) for p in bench_prompts()]

    def step_ms(batch: int) -> float:
        steps = _measure(engine, batch, encoded[: max(batch, 4)], tokens, None)[3]
        return float(np.median(steps)) * 1e3

    return step_ms


def bench_kernels(
    model_path: Path, *, batches: Sequence[int] = (1, 8, 32), threads: int = 2,
    runs: int = 20, repeats: int = 3,
) -> list[KernelRow]:
    from workers.slm.prepare import INT4_SETTINGS, INT8_SETTINGS, quantize_int8

    shapes = weight_shapes(model_path)
    fp32 = fp32_graph(shapes)
    sessions = {
        "fp32 MatMul": _session(fp32, threads),
        "int8 MatMulNBits (weight-only)": _session(quantize_int8(fp32_graph(shapes)), threads),
        "int8 MatMulNBits, block 64": _session(
            quantize_int8(fp32_graph(shapes), settings={**INT8_SETTINGS, "block_size": 64}), threads),
        "int4 MatMulNBits (weight-only, int8 compute)": _session(
            quantize_int8(fp32_graph(shapes), settings=INT4_SETTINGS), threads),
        "int8 DynamicQuantizeMatMul (w8a8)": _session(qgemm_graph(shapes), threads),
    }
    step_ms = _step_timer(model_path.parent, threads)
    rng = np.random.default_rng(1)
    rows: list[KernelRow] = []
    for batch in batches:
        feeds = {f"x{k}": rng.standard_normal((batch, k), dtype=np.float32)
                 for k in sorted({k for k, _ in shapes})}
        best: dict[str, float] = {}
        step = float("inf")
        for _ in range(repeats):  # kernels and the step take turns, so a noisy neighbour hits all
            step = min(step, step_ms(batch))
            for name, session in sessions.items():
                session.run(None, feeds)  # type: ignore[attr-defined]
                started = time.perf_counter()
                for _ in range(runs):
                    session.run(None, feeds)  # type: ignore[attr-defined]
                took = (time.perf_counter() - started) / runs * 1e3
                best[name] = min(best.get(name, took), took)
        base = best["fp32 MatMul"]
        rest = max(step - base, 0.0)  # attention, norms, token choice: the same in every precision
        rows += [KernelRow(name, batch, round(ms, 2), round(base / ms, 2), round(step / (rest + ms), 2))
                 for name, ms in best.items()]
    return rows


def run_bench_kernels(
    fp32_dir: Path, *, batches: Sequence[int], threads: int, as_json: bool, console: Any
) -> int:
    """CLI entry: a table (or a JSON array) of the kernels at each batch size. Exit code."""
    from rich.table import Table

    from workers.slm.bench import machine

    model = Path(fp32_dir) / "model.onnx"
    if not model.is_file():
        console.print(f"[red]bench slm --kernels:[/red] {model} is missing (pointsman models prepare --fp32)")
        return 2
    rows = bench_kernels(model, batches=batches, threads=threads)
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        return 0
    table = Table(title=f"Weight MatMuls of one decode step ({model.parent.name} shapes), {threads} threads")
    for col in ("kernel", "batch", "ms", "vs fp32", "whole-step ceiling"):
        table.add_column(col, justify="left" if col == "kernel" else "right")
    for r in rows:
        table.add_row(r.kernel, str(r.batch), f"{r.ms:.2f}", f"{r.vs_fp32:.2f}x", f"{r.step_ceiling:.2f}x")
    console.print(table)
    console.print(f"machine: {machine()}")
    return 0
