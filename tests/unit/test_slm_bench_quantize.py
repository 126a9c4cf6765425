"""`quantize` and `bench slm` end to end on the tiny model (real quantizer, real engine)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from rich.console import Console

from workers.slm.bench import bench_prompts, run_bench_slm, summary
from workers.slm.engine import SlmEngine
from workers.slm.fused_graph import build_fused_llama_graph
from workers.slm.llama_graph import build_llama_graph
from workers.slm.quantize import quantize_dir, run_quantize, weight_matmuls
from workers.slm.tiny import build_tiny_model, random_llama_weights, tiny_config


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("q")
    fp32 = build_tiny_model(root / "fp32", fused=True)
    report = quantize_dir(fp32, root / "int8", prompts=4, tokens=6, log=lambda *a: None)
    return fp32, root / "int8", report


def test_quantize_writes_a_checked_int8_model(dirs: tuple[Path, Path, dict]) -> None:
    fp32, int8, report = dirs
    ops = {n.op_type for n in onnx.load(str(int8 / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops and "GroupQueryAttention" in ops
    assert report["int8_matmuls"] + report["fp32_matmuls"] == 2 * 4 + 1  # qkv, o, gate_up, down; head
    assert ("MatMul" in ops) == bool(report["kept_fp32"])
    assert 0.0 <= report["agreement"] <= 1.0 and report["size_bytes"]["dst"] < report["size_bytes"]["src"]
    assert json.loads((int8 / "quantize.json").read_text())["kept_fp32"] == report["kept_fp32"]
    for name in ("tokenizer.json", "config.json", "tokenizer_config.json", "generation_config.json"):
        assert (int8 / name).read_bytes() == (fp32 / name).read_bytes()
    gens = SlmEngine(int8).generate([[{"role": "user", "content": "hello"}]], max_tokens=4)
    assert gens[0].completion_tokens <= 4


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
