"""4-bit weights on a Q4_1 GGUF's own grid: the split is exact, and `quantize --method q4`
builds a model that computes what the fp32 one does up to int8 compute's rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from workers.slm.engine import SlmEngine
from workers.slm.int4_exact import OFFSETS_SUFFIX, q4_1_split
from workers.slm.prepare import INT4_SETTINGS, quantize_int8
from workers.slm.progress import Steps
from workers.slm.quantize import quantize_dir, weight_matmuls
from workers.slm.tiny import build_tiny_model


def q4_1(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """Weights as a Q4_1 GGUF dequantises them: per block of 32 along K, d * q + m."""
    q = rng.integers(0, 16, size=(k // 32, 32, n))
    q[:, 0], q[:, 1] = 0, 15  # llama.cpp's Q4_1 always uses both ends of the range
    d = rng.uniform(0.001, 0.05, size=(k // 32, 1, n))
    m = rng.uniform(-0.4, 0.1, size=(k // 32, 1, n))
    return (d * q + m).reshape(k, n).astype(np.float32)


def test_the_split_is_exact_and_its_grid_has_integer_zero_points() -> None:
    weight = q4_1(np.random.default_rng(0), 128, 24)
    parts = q4_1_split(weight)
    assert parts is not None
    on_grid, offsets = parts
    rebuilt = on_grid.reshape(4, 32, 24) + offsets[:, None, :]
    assert np.abs(rebuilt.reshape(128, 24) - weight).max() < 1e-6
    blocks = on_grid.reshape(4, 32, 24)
    step = (blocks.max(axis=1) - blocks.min(axis=1)) / 15
    levels = blocks / step[:, None, :]
    assert np.abs(levels - np.round(levels)).max() < 1e-3  # s * (q - z), z an integer
    assert q4_1_split(np.random.default_rng(1).standard_normal((128, 24)).astype(np.float32)) is None
    assert q4_1_split(weight[:100]) is None  # K not a whole number of blocks


def _matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    k, n = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, k])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, n])],
        [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _snap_to_q4_1(model_dir: Path) -> None:
    """Put the tiny model's projection weights on a Q4_1 grid, as the GGUF's are."""
    path = model_dir / "model.onnx"
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.name in weight_matmuls(model) and node.name != "lm_head":
            w = numpy_helper.to_array(inits[node.input[1]])
            blocks = w.reshape(-1, 32, w.shape[1])
            low, high = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
            d = (high - low) / 15
            snapped = (np.round((blocks - low) / d) * d + low).reshape(w.shape).astype(np.float32)
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(snapped, node.input[1]))
    onnx.save(model, str(path))


def test_q4_keeps_a_q4_1_weight_where_plain_4_bit_loses_it() -> None:
    rng = np.random.default_rng(2)
    weight = q4_1(rng, 256, 64)
    x = rng.standard_normal((1, 2, 256)).astype(np.float32)
    exact = x @ weight

    def error(model: onnx.ModelProto) -> float:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return float(np.abs(session.run(None, {"x": x})[0] - exact).max() / np.abs(exact).max())

    from workers.slm.int4_exact import split_q4_1_matmuls

    split = _matmul_model(weight)
    assert split_q4_1_matmuls(split, ["proj"]) == (["proj"], [])
    offsets = [n.name for n in split.graph.node if n.name.endswith(OFFSETS_SUFFIX)]
    ours = error(quantize_int8(split, exclude=offsets, settings=INT4_SETTINGS))
    plain = error(quantize_int8(_matmul_model(weight), settings=INT4_SETTINGS))
    assert ours < 0.02 and ours < plain / 3, (ours, plain)  # only int8 compute's rounding is left


@pytest.mark.parametrize("snapped", [True, False])
def test_quantize_q4_on_the_tiny_model(tmp_path: Path, snapped: bool) -> None:
    fp32 = build_tiny_model(tmp_path / "fp32", fused=True)
    if snapped:
        _snap_to_q4_1(fp32)
    report = quantize_dir(fp32, tmp_path / "q4", method="q4", tokens=6, target=0.5,
                          steps=Steps(say=lambda line: None))
    graph = onnx.load(str(tmp_path / "q4" / "model.onnx"), load_external_data=False).graph
    bits = [next(a.i for a in n.attribute if a.name == "bits")
            for n in graph.node if n.op_type == "MatMulNBits"]
    corrections = [n for n in graph.node if n.name.endswith(OFFSETS_SUFFIX)]
    if snapped:  # every projection on 4 bits with its offsets; the LM head (not Q4_1) on 8
        assert sorted(bits) == [4] * 8 + [8] and len(corrections) == 8
        assert report["agreement"] >= 0.9
    else:  # random weights are not Q4_1: nothing is split, all 8-bit
        assert bits == [8] * 9 and not corrections
    assert report["quantization"]["method"] == "q4"
    gens = SlmEngine(tmp_path / "q4").generate([[{"role": "user", "content": "hello"}]], max_tokens=4)
    assert gens[0].completion_tokens <= 4
