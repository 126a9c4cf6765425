"""SmoothQuant folding on the tiny model: the fp32 function must not change, only its ranges."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from workers.slm.engine import SlmEngine
from workers.slm.llama_graph import save_model
from workers.slm.smooth import calibrate, heads_of, scales, smooth, smoothable
from workers.slm.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("smooth") / "fp32", fused=True)


def test_smoothing_keeps_the_fp32_model_output(tiny: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny / "model.onnx"))
    assert smoothable(model)
    ranges = calibrate(model, SlmEngine(tiny), tokens=4)
    # the tiny model's activations differ by channel, so the scales really move weight
    assert max(float(np.ptp(np.log(r + 1e-6))) for r in ranges.values()) > 0.5
    smooth(model, ranges, heads_of(tiny), alpha=0.8)
    smoothed = tmp_path / "smoothed"
    shutil.copytree(tiny, smoothed)
    save_model(model, smoothed / "model.onnx")
    before, after = SlmEngine(tiny), SlmEngine(smoothed)
    prompt = before.encode([{"role": "user", "content": "the weather in spring"}])
    a = before.decode_ids([prompt], [8], ignore_eos=True)
    b = after.decode_ids([prompt], [8], ignore_eos=True)
    assert a.tokens == b.tokens
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-3)
    changed = onnx.load(str(smoothed / "model.onnx")).graph.initializer
    gammas = {t.name: onnx.numpy_helper.to_array(t) for t in changed if t.name.endswith("norm.weight")}
    source = onnx.load(str(tiny / "model.onnx")).graph.initializer
    original = {t.name: onnx.numpy_helper.to_array(t) for t in source}
    assert any(not np.allclose(v, original[k]) for k, v in gammas.items())  # something was folded


def test_scales_balance_activation_and_weight_ranges() -> None:
    s = scales(np.array([8.0, 1.0, 0.0]), np.array([2.0, 1.0, 1.0]), alpha=0.5)
    assert s[0] == pytest.approx(2.0) and s[1] == pytest.approx(1.0)  # sqrt(8) / sqrt(2)
    assert 0 < s[2] < 1e-2  # a silent channel gets a tiny, finite scale
    assert np.allclose(np.array([8.0, 1.0]) / s[:2], np.array([2.0, 1.0]) * s[:2])  # balanced
