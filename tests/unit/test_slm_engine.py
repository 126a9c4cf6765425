"""SlmEngine on the tiny random llama: decoding logic, batching, KV cache, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from topics.errors import ConfigError
from workers.slm import gguf_import, weights
from workers.slm.engine import Generation, SlmEngine
from workers.slm.gguf_import import GgufModel
from workers.slm.prepare import INT8_RECIPE, is_complete, prepare_smollm2
from workers.slm.tiny import TINY_NAME, build_tiny_model, tiny_config
from workers.slm.tokenizer import CHATML_TEMPLATE

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Tell me a long story about the sea and the wind and the boats."}],
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> SlmEngine:
    return SlmEngine(model_dir, threads=1)


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(model_dir, dst)
    return dst


def test_greedy_is_deterministic(model_dir: Path, engine: SlmEngine) -> None:
    first = engine.generate(PROMPTS, max_tokens=12)
    again = SlmEngine(model_dir, threads=2).generate(PROMPTS, max_tokens=12)
    assert first == again
    assert engine.model_name == TINY_NAME
    assert all(isinstance(g, Generation) and g.prompt_tokens > 5 for g in first)
    rebuilt = build_tiny_model(model_dir.parent / "again", seed=0)
    assert (rebuilt / "model.onnx").read_bytes() == (model_dir / "model.onnx").read_bytes()


def test_batched_equals_unbatched(engine: SlmEngine) -> None:
    batched = engine.generate(PROMPTS, max_tokens=16)
    single = [engine.generate([p], max_tokens=16)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]
    assert [g.finish_reason for g in batched] == [g.finish_reason for g in single]
    np.testing.assert_allclose([g.confidence for g in batched], [g.confidence for g in single], atol=1e-4)


@pytest.mark.parametrize("max_tokens", [1, 3, 20])
def test_max_tokens_and_confidence(engine: SlmEngine, max_tokens: int) -> None:
    for gen in engine.generate(PROMPTS, max_tokens=max_tokens):
        assert gen.completion_tokens <= max_tokens
        assert gen.finish_reason in ("stop", "length")
        if gen.finish_reason == "length":
            assert gen.completion_tokens == max_tokens
        assert 0.0 <= gen.confidence <= 1.0


def test_stops_on_eos(model_dir: Path, engine: SlmEngine, tmp_path: Path) -> None:
    # Declare the 4th greedy token an EOS: generation must stop right before it.
    ids = engine.decode_ids([engine.encode(PROMPTS[0])], [8]).tokens[0]
    cut = next(i for i in range(3, len(ids)) if ids[i] not in ids[:i])
    dst = _copy(model_dir, tmp_path)
    (dst / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, ids[cut]]}))
    gen = SlmEngine(dst).generate(PROMPTS[:1], max_tokens=8)[0]
    assert gen.finish_reason == "stop"
    assert gen.completion_tokens == cut
    assert gen.text == engine._tokenizer.decode(ids[:cut]).rstrip("\ufffd")  # no dangling half char


def test_argument_errors(engine: SlmEngine) -> None:
    assert engine.generate([], max_tokens=4) == []
    with pytest.raises(ValueError):
        engine.generate(PROMPTS, max_tokens=0)


def test_without_chat_template_contents_are_joined(model_dir: Path, tmp_path: Path) -> None:
    dst = _copy(model_dir, tmp_path)
    (dst / "tokenizer_config.json").write_text("{}")
    gen = SlmEngine(dst).generate([[{"role": "user", "content": "hello world"}]], max_tokens=2)[0]
    assert gen.prompt_tokens == len(SlmEngine(dst)._tokenizer.encode("hello world").ids)


def test_kv_cache_matches_full_recompute(model_dir: Path) -> None:
    cfg = tiny_config()
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    past_names = [f"past_key_values.{i}.{k}" for i in range(cfg.num_hidden_layers) for k in ("key", "value")]
    present_names = [n.replace("past_key_values", "present") for n in past_names]
    # Row 0 is left-padded by 3, so the padding path is checked step by step too.
    ids = np.array(
        [[2, 2, 2, 11, 57, 200, 33, 90, 14, 8, 260], [5, 17, 99, 11, 57, 200, 33, 90, 14, 8, 260]],
        dtype=np.int64,
    )
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)

    def run(lo: int, hi: int, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {
            "input_ids": ids[:, lo:hi],
            "attention_mask": mask[:, :hi],
            "position_ids": positions[:, lo:hi],
        }
        feeds.update(zip(past_names, past, strict=True))
        logits, *present = session.run(["logits", *present_names], feeds)
        return logits, present

    empty = [np.zeros((2, cfg.num_key_value_heads, 0, cfg.head_dim), np.float32) for _ in past_names]
    full, _ = run(0, ids.shape[1], empty)
    logits, past = run(0, 5, empty)
    steps = [logits]
    for t in range(5, ids.shape[1]):
        logits, past = run(t, t + 1, past)
        steps.append(logits)
    assert past[0].shape[2] == ids.shape[1]
    np.testing.assert_allclose(np.concatenate(steps, axis=1)[mask == 1], full[mask == 1], atol=1e-4)


def test_missing_model_files(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SlmEngine(tmp_path / "nope")
    for name in ("model.onnx", "tokenizer.json"):
        dst = _copy(model_dir, tmp_path / name)
        (dst / name).unlink()
        with pytest.raises(ConfigError, match=name):
            SlmEngine(dst)


def test_graph_without_kv_cache_is_rejected(model_dir: Path, tmp_path: Path) -> None:
    dst = _copy(model_dir, tmp_path)
    vocab = tiny_config().vocab_size
    table = helper.make_tensor(
        "table", TensorProto.FLOAT, [vocab, vocab], np.eye(vocab, dtype=np.float32).ravel()
    )
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["logits"])],
        "no_kv",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", vocab])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(dst / "model.onnx"))
    with pytest.raises(ConfigError, match="past_key_values"):
        SlmEngine(dst)


def test_tokenizer_larger_than_model_vocab(model_dir: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    dst = _copy(model_dir, tmp_path)
    tok = Tokenizer.from_file(str(dst / "tokenizer.json"))
    tok.add_special_tokens(["<|extra_a|>", "<|extra_b|>"])
    tok.save(str(dst / "tokenizer.json"))
    with pytest.raises(ConfigError, match="tokens"):
        SlmEngine(dst)


def test_corrupt_model_file(model_dir: Path, tmp_path: Path) -> None:
    dst = _copy(model_dir, tmp_path)
    (dst / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="onnxruntime"):
        SlmEngine(dst)


def _tiny_gguf_model() -> GgufModel:
    from workers.slm.tiny import SPECIAL_TOKENS, TINY_MERGES, random_llama_weights, tiny_tokens

    cfg = tiny_config()
    return GgufModel(
        config=cfg,
        weights=random_llama_weights(cfg, seed=0),
        tokens=tiny_tokens(),
        merges=[f"{a} {b}" for a, b in TINY_MERGES],
        special_tokens=list(SPECIAL_TOKENS),
        pre_tokenizer="smollm",
        bos_token_id=1,
        eos_token_ids=[2, 0],
        pad_token_id=2,
        chat_template=CHATML_TEMPLATE,
    )


def test_prepare_is_idempotent_and_int8_tracks_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: SlmEngine
) -> None:
    # The real GGUF conversion takes seconds and ~1 GB; the same pipeline runs here
    # on the tiny weights, including the onnxruntime int8 quantizer.
    monkeypatch.setattr(weights, "smollm2_gguf", lambda cache, say: tmp_path / "fake.gguf")
    monkeypatch.setattr(gguf_import, "read_gguf", lambda path: _tiny_gguf_model())
    int8_dir = prepare_smollm2(tmp_path / "models")
    assert int8_dir.name == "smollm2-135m-instruct-int8" and is_complete(int8_dir)
    stamp = (int8_dir / "model.onnx").stat().st_mtime_ns
    assert prepare_smollm2(tmp_path / "models") == int8_dir
    assert (int8_dir / "model.onnx").stat().st_mtime_ns == stamp  # not rebuilt
    fp32_dir = tmp_path / "models" / "smollm2-135m-instruct-fp32"  # int8 is made from it
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [fp32_dir.name, int8_dir.name]

    ops = {n.op_type for n in onnx.load(str(int8_dir / "model.onnx"), load_external_data=False).graph.node}
    assert {"MatMulNBits", "GroupQueryAttention"} <= ops and "MatMul" not in ops  # all weight-only int8
    marker = json.loads((int8_dir / "prepare.json").read_text())
    assert marker["quantization"]["method"] == "nbits" and 0.95 <= marker["agreement"] <= 1
    assert marker["recipe"] == INT8_RECIPE and len(marker["model_sha256"]) == 64
    # a model an earlier release prepared (no recipe, or another one) is rebuilt, not trusted
    (int8_dir / "prepare.json").write_text(json.dumps({**marker, "recipe": None}))
    assert not is_complete(int8_dir, method="nbits")
    assert prepare_smollm2(tmp_path / "models") == int8_dir
    assert (int8_dir / "model.onnx").stat().st_mtime_ns != stamp
    assert json.loads((int8_dir / "prepare.json").read_text())["recipe"] == INT8_RECIPE
    int8 = SlmEngine(int8_dir)
    assert int8.model_name == "smollm2-135m-instruct-int8" and int8.fused
    fp32 = prepare_smollm2(tmp_path / "models", quantize=False)
    prompt = int8.encode(PROMPTS[2])
    ref_tokens = SlmEngine(fp32).decode_ids([prompt], [16]).tokens[0]
    assert ref_tokens == engine.decode_ids([prompt], [16]).tokens[0]  # same weights as the tiny model
    assert int8.decode_ids([prompt], [16]).tokens[0][:4] == ref_tokens[:4]
    # a directory prepared in the other graph style is rebuilt, not reused
    plain = prepare_smollm2(tmp_path / "models", quantize=False, fused=False)
    assert plain == fp32 and not SlmEngine(plain).fused
