"""`pointsman quantize SRC DST`: an int8 copy of a model directory, checked against SRC.

Weight-only int8 (onnxruntime MatMulNBits, block 32, int8 compute) on every MatMul with
a constant weight. Then a sensitivity pass: for each part of the network (attention
projections, attention output, MLP gate/up, MLP down, LM head) we quantise everything
except that part and measure teacher-forced greedy agreement with SRC; a part whose
fp32 form gains at least `min_gain` agreement stays fp32. DST gets the same side files
plus quantize.json; the report prints size, speed and agreement, SRC vs DST.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from topics.errors import ConfigError
from workers.slm.bench import bench_prompts
from workers.slm.engine import SlmEngine
from workers.slm.llama_graph import save_model
from workers.slm.prepare import INT8_SETTINGS, quantize_int8

# Checked in order against "node name + weight name"; HF names (ours) and Optimum's
# "/model/layers.0/self_attn/q_proj/MatMul" both match.
PARTS = (
    ("attention qkv", re.compile(r"q_proj|k_proj|v_proj|qkv")),
    ("attention out", re.compile(r"o_proj|out_proj|dense")),
    ("mlp gate/up", re.compile(r"gate|up_proj|fc1|w1|w3")),
    ("mlp down", re.compile(r"down|fc2|w2")),
    ("lm head", re.compile(r"lm_head|output|embed")),
)


def weight_matmuls(model: onnx.ModelProto) -> dict[str, str]:
    """Quantisable MatMul node name -> part name (MatMuls whose B is an initializer)."""
    inits = {t.name for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            key = f"{node.name} {node.input[1]} {node.output[0]}"
            found[node.name] = next((part for part, rx in PARTS if rx.search(key)), "other")
    return found


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("model.onnx*"))


def _write(model: onnx.ModelProto, src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():  # tokenizer + json side files, never the source weights
        if item.is_file() and not item.name.startswith("model.onnx") and item.name != "quantize.json":
            shutil.copy2(item, dst / item.name)
    save_model(model, dst / "model.onnx")
    return dst


class _Judge:
    """Teacher-forced greedy agreement of candidates with the source model."""

    def __init__(self, src_engine: SlmEngine, prompts: int, tokens: int) -> None:
        self.encoded = [src_engine.encode(p) for p in bench_prompts()[:prompts]]
        self.tokens = tokens
        limits = [tokens] * len(self.encoded)
        self.reference = src_engine.decode_ids(self.encoded, limits, ignore_eos=True).tokens

    def agreement(self, engine: SlmEngine) -> float:
        out = engine.decode_ids(self.encoded, [self.tokens] * len(self.encoded), forced=self.reference)
        return float(np.mean(np.array(out.argmax) == np.array(self.reference)))


def _speed(engine: SlmEngine, encoded: list[list[int]], tokens: int) -> float:
    """Decode tokens/s at batch 1 (steps only)."""
    steps: list[float] = []
    for ids in encoded:
        steps += engine.decode_ids([ids], [tokens], ignore_eos=True).step_s
    return len(steps) / sum(steps)


def quantize_dir(
    src: Path,
    dst: Path,
    *,
    threads: int = 2,
    min_gain: float = 0.01,
    prompts: int = 16,
    tokens: int = 24,
    log: Any = print,
) -> dict[str, Any]:
    """Quantise SRC into DST (see the module doc); returns the measurements."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ConfigError("quantize: DST must differ from SRC")
    if (dst / "model.onnx").exists():
        raise ConfigError(f"quantize: {dst} already holds a model; remove it or pick another DST")
    src_engine = SlmEngine(src, threads=threads)  # validates the directory, the graph, the tokenizer
    source = onnx.load(str(src / "model.onnx"))
    parts = weight_matmuls(source)
    if not parts:
        raise ConfigError(f"{src} has no MatMul with a constant weight to quantise")
    started = time.monotonic()
    judge = _Judge(src_engine, prompts, tokens)

    def candidate(exclude: Sequence[str], work: Path) -> tuple[onnx.ModelProto, float]:
        model = quantize_int8(onnx.ModelProto.FromString(source.SerializeToString()), exclude=exclude)
        path = _write(model, src, work / f"v{time.monotonic_ns()}")
        agreement = judge.agreement(SlmEngine(path, threads=threads, warmup=False))
        shutil.rmtree(path)
        return model, agreement

    kept: list[str] = []
    scratch = dst.parent if dst.parent.exists() else None  # same disk as DST
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=scratch) as tmp:
        _, base = candidate([], Path(tmp))
        log(f"all int8: agreement {base:.1%} ({len(parts)} MatMuls)")
        for part in sorted(set(parts.values())):
            nodes = [name for name, p in parts.items() if p == part]
            _, score = candidate(nodes, Path(tmp))
            gain = score - base
            verdict = "keep fp32" if gain >= min_gain else "int8"
            log(f"  {part} ({len(nodes)} MatMuls) in fp32: agreement {score:.1%} ({gain:+.1%}) -> {verdict}")
            if gain >= min_gain:
                kept.append(part)
    exclude = [name for name, p in parts.items() if p in kept]
    final = quantize_int8(onnx.ModelProto.FromString(source.SerializeToString()), exclude=exclude)
    _write(final, src, dst)
    engine = SlmEngine(dst, threads=threads)
    agreement = judge.agreement(engine)
    speeds = {"src": [], "dst": []}
    for ids in judge.encoded[:4]:  # alternate, so a noisy neighbour slows both alike
        speeds["src"].append(_speed(src_engine, [ids], tokens))
        speeds["dst"].append(_speed(engine, [ids], tokens))
    report = {
        "source": str(src),
        "quantization": INT8_SETTINGS,
        "kept_fp32": kept,
        "fp32_matmuls": len(exclude),
        "int8_matmuls": len(parts) - len(exclude),
        "size_bytes": {"src": _dir_size(src), "dst": _dir_size(dst)},
        "tokens_per_s_batch1": {k: round(float(np.median(v)), 1) for k, v in speeds.items()},
        "agreement": round(agreement, 4),
        "agreement_method": f"teacher-forced greedy top-1, {len(judge.encoded)} prompts x {tokens} tokens",
        "seconds": round(time.monotonic() - started, 1),
    }
    (dst / "quantize.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def run_quantize(src: Path, dst: Path, console: Any, *, threads: int = 2) -> int:
    """CLI entry: quantise, print size / speed / agreement; exit code."""
    try:
        report = quantize_dir(src, dst, threads=threads, log=console.print)
    except ConfigError as exc:
        console.print(f"[red]quantize failed:[/red] {exc}")
        return 2
    size, speed = report["size_bytes"], report["tokens_per_s_batch1"]
    console.print(f"wrote {dst} ({report['int8_matmuls']} MatMuls int8, kept fp32: "
                  f"{', '.join(report['kept_fp32']) or 'nothing'})")
    console.print(f"size      {size['src'] / 1e6:8.1f} MB -> {size['dst'] / 1e6:8.1f} MB "
                  f"({size['dst'] / size['src']:.2f}x)")
    console.print(f"speed     {speed['src']:8.1f} -> {speed['dst']:8.1f} tokens/s at batch 1 "
                  f"({speed['dst'] / speed['src']:.2f}x)")
    console.print(f"agreement {report['agreement']:.1%} ({report['agreement_method']})")
    return 0
