"""`quantize` and `bench slm` end to end on the tiny model (real quantizer, real engine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from rich.console import Console

from topics.errors import ConfigError
from workers.slm.bench import bench_prompts, run_bench_slm, summary
from workers.slm.engine import SlmEngine
from workers.slm.fused_graph import build_fused_llama_graph
from workers.slm.kernels import bench_kernels, fp32_graph, qgemm_graph, run_bench_kernels, weight_shapes
from workers.slm.llama_graph import build_llama_graph
from workers.slm.progress import Steps
from workers.slm.quantize import HELD_OUT_BATCHES, quantize_dir, run_quantize, weight_matmuls
from workers.slm.tiny import build_tiny_model, random_llama_weights, tiny_config

QUIET = Steps(say=lambda line: None)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("q")
    fp32 = build_tiny_model(root / "fp32", fused=True)
    report = quantize_dir(fp32, root / "int8", tokens=6, steps=QUIET)
    return fp32, root / "int8", report


def test_quantize_writes_a_checked_int8_model(dirs: tuple[Path, Path, dict]) -> None:
    fp32, int8, report = dirs
    ops = {n.op_type for n in onnx.load(str(int8 / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops and "GroupQueryAttention" in ops
    assert report["main_int8_matmuls"] + report["fallback_matmuls"] == 2 * 4 + 1  # qkv o gate_up down; head
    assert ("MatMul" in ops) == bool(report["fallback_parts"])
    assert 0.0 <= report["agreement"] <= 1.0 and report["size_bytes"]["dst"] < report["size_bytes"]["src"]
    assert json.loads((int8 / "quantize.json").read_text())["fallback_parts"] == report["fallback_parts"]
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (int8 / name).read_bytes() == (fp32 / name).read_bytes()
    config, source_config = (json.loads((d / "config.json").read_text()) for d in (int8, fp32))
    assert config.pop("pointsman_model_name") == "int8"  # results must not name it after SRC
    assert {k: v for k, v in source_config.items() if k != "pointsman_model_name"} == config
    gens = SlmEngine(int8).generate([[{"role": "user", "content": "hello"}]], max_tokens=4)
    assert gens[0].completion_tokens <= 4


def test_the_held_out_check_falls_back_further_until_the_target_holds(
    dirs: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    fp32, _, first = dirs
    target = 0.995  # over what all-int8 reaches on the tiny model, so the check must act
    assert first["agreement"] < target
    report = quantize_dir(fp32, tmp_path / "int8", tokens=6, fallback_parts=[], target=target, steps=QUIET)
    assert report["further_fallback"] and report["fallback_parts"] == report["further_fallback"]
    per_batch = report["agreement_per_batch"]
    assert set(per_batch) == {str(b) for b in HELD_OUT_BATCHES} and min(per_batch.values()) >= target
    assert report["agreement"] == min(per_batch.values())
    # the model written is the one measured: bench's agreement at each batch size is the same
    rows = measure_rows(tmp_path / "int8", fp32)
    assert {str(r["batch"]): r["agreement"] for r in rows if r["precision"] == "int8"} == per_batch


def test_a_model_that_cannot_reach_its_target_is_never_written(
    dirs: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    fp32, _, _ = dirs
    with pytest.raises(ConfigError, match="under the 101% target even with every part in fp32"):
        quantize_dir(fp32, tmp_path / "int8", tokens=6, target=1.01, steps=QUIET)
    assert not (tmp_path / "int8" / "model.onnx").exists()
    assert not [p for p in tmp_path.rglob("model.onnx*")]  # no candidate left behind either


def test_block_size_sets_the_nbits_blocks(dirs: tuple[Path, Path, dict], tmp_path: Path) -> None:
    fp32, _, _ = dirs
    report = quantize_dir(fp32, tmp_path / "b64", tokens=6, fallback_parts=[], target=0.0, block_size=64,
                          steps=QUIET)
    assert report["quantization"]["block_size"] == 64
    graph = onnx.load(str(tmp_path / "b64" / "model.onnx"), load_external_data=False).graph
    blocks = {a.i for n in graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "block_size"}
    assert blocks == {64}
    with pytest.raises(ConfigError, match="--block-size is for the nbits method"):
        quantize_dir(fp32, tmp_path / "w", tokens=6, method="w8a8", block_size=64, steps=QUIET)


def measure_rows(int8: Path, fp32: Path) -> list[dict]:
    from dataclasses import asdict

    from workers.slm.bench import measure

    engines = {"fp32": SlmEngine(fp32), "int8": SlmEngine(int8)}
    return [asdict(r) for r in measure(engines, HELD_OUT_BATCHES, new_tokens=6, threads=2)]


def test_quantize_refuses_bad_targets(dirs: tuple[Path, Path, dict], tmp_path: Path) -> None:
    fp32, int8, _ = dirs
    console = Console(file=open(tmp_path / "out.txt", "w"), width=120)  # noqa: SIM115
    assert run_quantize(fp32, int8, console) == 2  # DST already holds a model
    assert run_quantize(fp32, fp32, console) == 2
    assert run_quantize(tmp_path / "missing", tmp_path / "dst", console) == 2
    console.file.close()
    assert "already holds a model" in (tmp_path / "out.txt").read_text()


@pytest.mark.parametrize("fused", [False, True])
def test_weight_matmuls_are_grouped_into_parts(fused: bool) -> None:
    cfg = tiny_config()
    build = build_fused_llama_graph if fused else build_llama_graph
    parts = weight_matmuls(build(cfg, random_llama_weights(cfg)))
    counts = {p: list(parts.values()).count(p) for p in set(parts.values())}
    per_layer = {"attention qkv": 1 if fused else 3, "mlp gate/up": 1 if fused else 2}
    want = {"attention out": 2, "mlp down": 2, "lm head": 1}
    want.update({k: v * cfg.num_hidden_layers for k, v in per_layer.items()})
    assert counts == want


def test_bench_json_has_one_object_per_configuration(
    dirs: tuple[Path, Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    fp32, int8, _ = dirs
    assert run_bench_slm(int8, fp32, batches=(1, 4), new_tokens=3, threads=1, as_json=True) == 0
    rows = json.loads(capsys.readouterr().out)
    configs = [(r["precision"], r["batch"]) for r in rows]
    assert configs == [("fp32", 1), ("int8", 1), ("fp32", 4), ("int8", 4)]
    keys = {"model", "precision", "batch", "tokens_per_s", "p50_ms", "p99_ms", "agreement", "ttft_ms"}
    for r in rows:
        assert keys <= set(r) and r["tokens_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["prompts"] == len(bench_prompts())
    assert rows[0]["agreement"] == 1.0 and 0.0 <= rows[1]["agreement"] <= 1.0
    # the reference tokens are the same whatever the batch: batching must not change them
    assert rows[1]["agreement"] == rows[3]["agreement"]


def test_bench_table(dirs: tuple[Path, Path, dict], tmp_path: Path) -> None:
    fp32, int8, _ = dirs
    with open(tmp_path / "out.txt", "w") as sink:
        console = Console(file=sink)
        assert run_bench_slm(int8, fp32, batches=(2,), new_tokens=2, threads=1, console=console) == 0
    text = (tmp_path / "out.txt").read_text()
    assert "int8/fp32 throughput" in text and "machine:" in text
    assert summary([]) == []


def test_w8a8_quantizes_weights_and_activations(dirs: tuple[Path, Path, dict], tmp_path: Path) -> None:
    fp32, _, _ = dirs
    report = quantize_dir(fp32, tmp_path / "w8a8", method="w8a8", tokens=6, target=0.5, steps=QUIET)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "w8a8" / "model.onnx"),
                                          load_external_data=False).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "MatMul" not in ops  # no fp32 left
    assert ("MatMulNBits" in ops) == bool(report["fallback_parts"])  # w8a8 falls back to nbits int8
    assert report["quantization"]["method"] == "w8a8" and 0.0 <= report["agreement"] <= 1.0
    gens = SlmEngine(tmp_path / "w8a8").generate([[{"role": "user", "content": "hello"}]], max_tokens=4)
    assert gens[0].completion_tokens <= 4
    console = Console(file=open(tmp_path / "out.txt", "w"), width=120)  # noqa: SIM115
    assert run_quantize(fp32, tmp_path / "other", console, method="fp4") == 2
    console.file.close()
    assert "unknown method" in (tmp_path / "out.txt").read_text()


def test_kernel_bench_times_the_models_weight_matmuls(dirs: tuple[Path, Path, dict], tmp_path: Path) -> None:
    fp32, _, _ = dirs
    shapes = weight_shapes(fp32 / "model.onnx")
    assert len(shapes) == 2 * 4 + 1 and all(k > 0 and n > 0 for k, n in shapes)
    # the int8 graph computes the same products as the fp32 one, up to quantisation error
    x = {f"x{k}": np.random.default_rng(0).standard_normal((2, k), dtype=np.float32) for k, _ in shapes}
    ref, approx = (ort.InferenceSession(g.SerializeToString()).run(None, x)
                   for g in (fp32_graph(shapes), qgemm_graph(shapes)))
    for r, a in zip(ref, approx, strict=True):
        assert np.abs(r - a).max() < 0.05 * np.abs(r).max()
    rows = bench_kernels(fp32 / "model.onnx", batches=(1, 2), threads=1, runs=2, repeats=1)
    kinds = ["fp32", "int8", "int8", "int4", "int8"]
    assert [(r.batch, r.kernel.split()[0]) for r in rows] == [(b, k) for b in (1, 2) for k in kinds]
    assert all(r.ms > 0 for r in rows) and rows[0].vs_fp32 == 1.0
    # the rest of the step is shared, so a whole step gains less than its MatMuls alone
    assert all(0 < r.step_ceiling <= max(r.vs_fp32, 1.0) + 0.01 for r in rows)
    assert all(r.step_ceiling <= 1.0 for r in rows if r.kernel.startswith("fp32"))
    console = Console(file=open(tmp_path / "out.txt", "w"), width=120)  # noqa: SIM115
    assert run_bench_kernels(tmp_path, batches=(1,), threads=1, as_json=False, console=console) == 2
    console.file.close()
