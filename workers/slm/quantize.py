"""`pointsman quantize SRC DST`: an int8 copy of a model directory, checked against SRC.

Two methods, both onnxruntime's quantisation tools:
  nbits (default)  weight-only int8 (MatMulNBits, block 32 or `block_size`, int8 compute on
                   block-quantised activations): the closest to SRC.
  w8a8             SmoothQuant (smooth.py), then per-column int8 weights with per-tensor dynamic
                   int8 activations (DynamicQuantizeMatMul): faster at batch 8-32, less close.
Every MatMul with a constant weight is quantised. If teacher-forced greedy agreement with SRC on
the calibration prompts is under `target`, a sensitivity pass measures, for each part of the
network (attention projections, attention output, MLP gate/up, MLP down, LM head), what putting
that part alone in the fallback form gains (nbits: fp32; w8a8: nbits int8), then moves parts
there, the most helpful first, until the target is reached (or no part gains `min_gain`).
DST gets the same side files plus quantize.json; the report prints size, speed and agreement on
the benchmark prompts (never used for a decision), SRC vs DST.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from topics.errors import ConfigError
from workers.slm.bench import BENCH_PROMPTS, _measure, machine
from workers.slm.engine import SlmEngine
from workers.slm.int4_exact import OFFSETS_SUFFIX, split_q4_1_matmuls
from workers.slm.llama_graph import save_model
from workers.slm.prepare import INT4_SETTINGS, INT8_SETTINGS, quantize_int8
from workers.slm.progress import Steps
from workers.slm.smooth import CALIBRATION_PROMPTS, quantize_w8a8, smoothed_model
from workers.slm.weights import model_checksum

W8A8_ALPHA = 0.5  # SmoothQuant's default strength; 0.65 and 0.8 were not clearly better here

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


def _copy_side_files(src: Path, dst: Path, name: str | None = None) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():  # tokenizer + json side files, never the source weights
        if item.is_file() and not item.name.startswith("model.onnx") and item.name != "quantize.json":
            shutil.copy2(item, dst / item.name)
    config = dst / "config.json"
    if config.is_file():  # results name the model: the copy must not call itself SRC
        data = json.loads(config.read_text(encoding="utf-8"))
        if "pointsman_model_name" in data:
            data["pointsman_model_name"] = name or dst.name
            config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


Build = Callable[[Sequence[str], Path], None]  # (MatMuls in the fallback form, model dir) -> model.onnx


def _builder(method: str, src_engine: SlmEngine, threads: int,
             block_size: int | None = None) -> tuple[Build, dict[str, Any]]:
    """How to write DST's model.onnx with some MatMuls in the fallback form, and the settings."""
    if method == "w8a8":
        smoothed = smoothed_model(src_engine, alpha=W8A8_ALPHA, threads=threads)  # calibrated once

        def w8a8(fallback: Sequence[str], dst: Path) -> None:
            if not fallback:
                quantize_w8a8(smoothed, dst / "model.onnx")
                return
            quantize_w8a8(smoothed, dst / "w8a8.onnx", exclude=fallback)
            save_model(quantize_int8(onnx.load(str(dst / "w8a8.onnx"))), dst / "model.onnx")  # the rest
            for leftover in dst.glob("w8a8.onnx*"):
                leftover.unlink()

        return w8a8, {"method": "w8a8", "smoothquant_alpha": W8A8_ALPHA, "weights": "int8 per column",
                      "activations": "uint8 per tensor, dynamic", "fallback": "nbits", **INT8_SETTINGS}
    if method not in ("nbits", "q4"):
        raise ConfigError(f"quantize: unknown method {method!r} (nbits, q4 or w8a8)")
    source = onnx.load(str(src_engine.model_dir / "model.onnx"))
    if method == "q4":

        def q4(fallback: Sequence[str], dst: Path) -> None:
            model = onnx.ModelProto.FromString(source.SerializeToString())
            _, rest = split_q4_1_matmuls(model, [n for n in weight_matmuls(model) if n not in fallback])
            offsets = [node.name for node in model.graph.node if node.name.endswith(OFFSETS_SUFFIX)]
            model = quantize_int8(model, exclude=[*rest, *fallback, *offsets], settings=INT4_SETTINGS)
            save_model(quantize_int8(model, exclude=offsets), dst / "model.onnx")  # the rest: 8 bits

        return q4, {"method": "q4", "weights": "4 bits on the GGUF's Q4_1 grid, its offsets in fp32",
                    "fallback": "nbits", **INT4_SETTINGS}

    settings = {**INT8_SETTINGS, "block_size": block_size or INT8_SETTINGS["block_size"]}

    def nbits(exclude: Sequence[str], dst: Path) -> None:
        model = quantize_int8(onnx.ModelProto.FromString(source.SerializeToString()), exclude=exclude,
                              settings=settings)
        save_model(model, dst / "model.onnx")

    return nbits, {"method": "nbits", "fallback": "fp32", **settings}


class _Judge:
    """Teacher-forced greedy agreement of candidates with the source model, decoding the
    prompts in chunks of each batch size; the lowest over the batch sizes. The reference is
    the source's greedy tokens, decoded once at the largest batch (fp32's tokens do not depend
    on the batch: a test checks that, and `bench slm` compares per batch the same way)."""

    def __init__(self, src_engine: SlmEngine, prompts: Sequence[str], tokens: int,
                 batches: Sequence[int]) -> None:
        self.src_engine, self.tokens, self.batches = src_engine, tokens, tuple(batches)
        self.encoded = [src_engine.encode([{"role": "user", "content": p}]) for p in prompts]
        self._reference: list[list[int]] | None = None

    @property
    def reference(self) -> list[list[int]]:
        if self._reference is None:
            self._reference = _measure(self.src_engine, max(self.batches), self.encoded, self.tokens, None)[0]
        return self._reference

    def per_batch(self, engine: SlmEngine) -> dict[int, float]:
        reference = np.array(self.reference)
        picks = {batch: _measure(engine, batch, self.encoded, self.tokens, self.reference)[1]
                 for batch in self.batches}
        return {batch: float(np.mean(np.array(found) == reference)) for batch, found in picks.items()}

    def agreement(self, engine: SlmEngine) -> float:
        return min(self.per_batch(engine).values())


def _speed(engine: SlmEngine, encoded: list[list[int]], tokens: int) -> float:
    """Decode tokens/s at batch 1 (steps only)."""
    steps: list[float] = []
    for ids in encoded:
        steps += engine.decode_ids([ids], [tokens], ignore_eos=True).step_s
    return len(steps) / sum(steps)


HELD_OUT_BATCHES = (1, 8, 32)  # the batch sizes `bench slm` reports


def quantize_dir(
    src: Path,
    dst: Path,
    *,
    method: str = "nbits",
    threads: int = 2,
    target: float = 0.95,
    min_gain: float = 0.01,
    tokens: int = 32,
    fallback_parts: Sequence[str] | None = None,
    model_name: str | None = None,
    steps: Steps | None = None,
    block_size: int | None = None,
) -> dict[str, Any]:
    """Quantise SRC into DST (see the module doc); returns the measurements.

    `fallback_parts` (a known recipe) skips the search on the calibration prompts. Either way
    the held-out check decides: under `target` at any batch size, the next most helpful part
    moves to the fallback form too, until the target holds; if it cannot, ConfigError, and
    DST gets nothing."""
    src, dst = Path(src), Path(dst)
    steps = steps or Steps()
    if dst.resolve() == src.resolve():
        raise ConfigError("quantize: DST must differ from SRC")
    if (dst / "model.onnx").exists():
        raise ConfigError(f"quantize: {dst} already holds a model; remove it or pick another DST")
    if block_size is not None and method != "nbits":
        raise ConfigError(f"quantize: --block-size is for the nbits method, not {method}")
    src_engine = SlmEngine(src, threads=threads)  # validates the directory, the graph, the tokenizer
    parts = weight_matmuls(onnx.load(str(src / "model.onnx"), load_external_data=False))
    if not parts:
        raise ConfigError(f"{src} has no MatMul with a constant weight to quantise")
    started = time.monotonic()
    if method == "w8a8":
        steps.stage("calibrating (SmoothQuant scales from the fp32 model)")
    build, settings = _builder(method, src_engine, threads, block_size)
    if method == "w8a8":
        steps.step("done")
    fallback = settings["fallback"]
    names = sorted(set(parts.values()))
    tuning = _Judge(src_engine, CALIBRATION_PROMPTS[:16], tokens, batches=(16,))
    held_out = _Judge(src_engine, BENCH_PROMPTS.splitlines(), tokens, batches=HELD_OUT_BATCHES)
    scratch = dst.parent if dst.parent.exists() else None  # same disk as DST

    def nodes(chosen: Sequence[str]) -> list[str]:
        return [name for name, p in parts.items() if p in chosen]

    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=scratch) as tmp:

        def candidate(chosen: Sequence[str]) -> Path:
            path = Path(tmp) / f"v{time.monotonic_ns()}"
            _copy_side_files(src, path, model_name or dst.name)
            build(nodes(chosen), path)
            return path

        def tuned(chosen: Sequence[str]) -> float:
            path = candidate(chosen)
            agreement = tuning.agreement(SlmEngine(path, threads=threads, warmup=False))
            shutil.rmtree(path)
            return agreement

        gains: dict[str, float] = {}

        def sensitivity(base: float) -> None:
            """What each part alone in the fallback form gains on the calibration prompts."""
            steps.stage(f"sensitivity: each part in {fallback}", total=len(names))
            for part in names:
                gains[part] = tuned([part]) - base
                steps.step(f"{part} ({len(nodes([part]))} MatMuls): {gains[part]:+.1%}")

        kept: list[str] = []
        if fallback_parts is None:
            steps.stage(f"fallback search ({method})")
            reached = tuned([])
            steps.step(f"all int8: agreement {reached:.1%} on the calibration prompts")
            if reached < target:
                sensitivity(reached)
                steps.stage(f"fallback search: parts to {fallback}", total=len(names))
                for part in sorted(gains, key=gains.__getitem__, reverse=True):  # most helpful first
                    if reached >= target or gains[part] < min_gain:
                        break
                    kept.append(part)
                    reached = tuned(kept)
                    steps.step(f"{', '.join(kept)} in {fallback}: {reached:.1%}")
        else:
            kept = [part for part in fallback_parts if part in names]

        def held_out_stage() -> None:
            steps.stage(f"held-out check: {len(held_out.encoded)} benchmark prompts at batch "
                        f"{'/'.join(map(str, HELD_OUT_BATCHES))}, target {target:.0%}")

        held_out_stage()
        further: list[str] = []
        while True:
            path = candidate(kept)
            per_batch = held_out.per_batch(SlmEngine(path, threads=threads, warmup=False))
            agreement = min(per_batch.values())
            steps.step(f"{', '.join(kept) or 'nothing'} in {fallback}: "
                       + " / ".join(f"{a:.1%}" for a in per_batch.values()))
            if agreement >= target:
                break
            shutil.rmtree(path)
            ranked_now = not gains
            if ranked_now:  # a recipe missed: rank the parts, then go on checking
                sensitivity(tuned([]))
                held_out_stage()
            left = [p for p in sorted(gains, key=gains.__getitem__, reverse=True) if p not in kept]
            if not left:
                raise ConfigError(
                    f"quantize: held-out agreement {agreement:.1%} is under the {target:.0%} target even "
                    f"with every part in {fallback}; no model written"
                )
            steps.note(f"held-out agreement {agreement:.1%} < {target:.0%}: {left[0]} to {fallback} too")
            kept.append(left[0])
            further.append(left[0])
            if not ranked_now:
                steps.grow(1)
        _copy_side_files(path, dst, model_name)
        for item in path.glob("model.onnx*"):
            shutil.move(item, dst / item.name)
    engine = SlmEngine(dst, threads=threads)
    steps.stage("speed at batch 1, int8 against the source")
    speeds: dict[str, list[float]] = {"src": [], "dst": []}
    for ids in held_out.encoded[:4]:  # alternate, so a noisy neighbour slows both alike
        speeds["src"].append(_speed(src_engine, [ids], tokens))
        speeds["dst"].append(_speed(engine, [ids], tokens))
    steps.step()
    exclude = nodes(kept)
    report = {
        "source": str(src),
        "quantization": settings,
        "fallback_parts": kept,
        "further_fallback": further,
        "fallback_matmuls": len(exclude),
        "main_int8_matmuls": len(parts) - len(exclude),
        "size_bytes": {"src": _dir_size(src), "dst": _dir_size(dst)},
        "model_sha256": model_checksum(dst),
        "tokens_per_s_batch1": {k: round(float(np.median(v)), 1) for k, v in speeds.items()},
        "agreement": round(agreement, 4),
        "agreement_per_batch": {str(b): round(a, 4) for b, a in per_batch.items()},
        "agreement_method": f"teacher-forced greedy top-1, {len(held_out.encoded)} benchmark prompts "
                            f"x {tokens} tokens, the lowest of batch {'/'.join(map(str, HELD_OUT_BATCHES))}",
        "machine": machine(),
        "seconds": round(time.monotonic() - started, 1),
    }
    (dst / "quantize.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def run_quantize(src: Path, dst: Path, console: Any, *, method: str = "nbits", threads: int = 2,
                 block_size: int | None = None) -> int:
    """CLI entry: quantise, print size / speed / agreement; exit code."""
    try:
        with Steps(console) as steps:
            report = quantize_dir(src, dst, method=method, threads=threads, steps=steps,
                                  block_size=block_size)
    except ConfigError as exc:
        console.print(f"[red]quantize failed:[/red] {exc}")
        return 2
    size, speed = report["size_bytes"], report["tokens_per_s_batch1"]
    fallback = report["quantization"]["fallback"]
    console.print(f"wrote {dst} ({report['main_int8_matmuls']} MatMuls {method}, in {fallback}: "
                  f"{', '.join(report['fallback_parts']) or 'nothing'})")
    console.print(f"size      {size['src'] / 1e6:8.1f} MB -> {size['dst'] / 1e6:8.1f} MB "
                  f"({size['dst'] / size['src']:.2f}x)")
    console.print(f"speed     {speed['src']:8.1f} -> {speed['dst']:8.1f} tokens/s at batch 1 "
                  f"({speed['dst'] / speed['src']:.2f}x)")
    console.print(f"agreement {report['agreement']:.1%} ({report['agreement_method']})")
    return 0
