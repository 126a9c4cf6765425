"""Fused (GroupQueryAttention) vs plain graphs, sampling, seeds, stop strings, teacher forcing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from workers.slm.decoding import FusedRunner, KvLayout, PlainRunner
from workers.slm.engine import Generation, SlmEngine
from workers.slm.fused_graph import build_fused_llama_graph
from workers.slm.llama_graph import build_llama_graph
from workers.slm.sampling import Sampling, StopMatcher, per_row, sample
from workers.slm.tiny import build_tiny_model, random_llama_weights, tiny_config

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Tell me a long story about the sea and the wind and the boats."}],
]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> SlmEngine:
    return SlmEngine(build_tiny_model(tmp_path_factory.mktemp("plain"), seed=0), threads=1)


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> SlmEngine:
    return SlmEngine(build_tiny_model(tmp_path_factory.mktemp("fused"), seed=0, fused=True), threads=1)


def _texts(gens: list[Generation]) -> list[tuple[str, int, str]]:
    """Everything but the confidence, which batching may move in the last float bits."""
    return [(g.text, g.completion_tokens, g.finish_reason) for g in gens]


def _runners(seed: int) -> tuple[PlainRunner, FusedRunner]:
    cfg = tiny_config()
    weights = random_llama_weights(cfg, seed)
    past = [f"past_key_values.{i}.{k}" for i in range(cfg.num_hidden_layers) for k in ("key", "value")]
    present = [n.replace("past_key_values", "present") for n in past]
    out = []
    for build, inputs in (
        (build_llama_graph, {"input_ids", "attention_mask", "position_ids"}),
        (build_fused_llama_graph, {"input_ids", "attention_mask"}),
    ):
        model = build(cfg, weights).SerializeToString()
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        layout = KvLayout(past, present, cfg.num_key_value_heads, cfg.head_dim, np.float32, inputs)
        out.append((PlainRunner if build is build_llama_graph else FusedRunner)(session, layout, pad=2))
    return out[0], out[1]


def test_fused_graph_equals_plain_graph_step_by_step() -> None:
    # Different prompt lengths (left vs right padding), then rows finishing mid-way, so
    # the in-place cache, per-row lengths and buffer compaction are all exercised.
    plain, fused = _runners(seed=5)
    prompts = [[10, 20, 30, 40, 50, 60, 70], [80, 90, 100], [7, 8, 9, 11, 12]]
    got = [plain.prefill(prompts, 16), fused.prefill(prompts, 16)]
    np.testing.assert_allclose(got[1], got[0], atol=1e-4)
    rng = np.random.default_rng(0)
    keep_plan = [None, None, np.array([0, 2]), None, np.array([1]), None]
    for keep in keep_plan:
        rows = len(got[0]) if keep is None else len(keep)
        tokens = rng.integers(3, 250, rows)
        got = [plain.step(tokens, keep), fused.step(tokens, keep)]
        np.testing.assert_allclose(got[1], got[0], atol=1e-4)
    assert fused.buffers[0].shape[0] == 1 and list(fused.lengths) == [5 + 6]


def test_fused_engine_generates_what_plain_engine_does(plain: SlmEngine, fused: SlmEngine) -> None:
    assert fused.fused and not plain.fused
    for kwargs in ({}, {"temperature": 0.9, "top_p": 0.9, "seed": 7}):
        want = plain.generate(PROMPTS, max_tokens=20, **kwargs)
        got = fused.generate(PROMPTS, max_tokens=20, **kwargs)
        assert [g.text for g in got] == [g.text for g in want]
        np.testing.assert_allclose([g.confidence for g in got], [g.confidence for g in want], atol=1e-4)
    single = [fused.generate([p], max_tokens=20)[0] for p in PROMPTS]
    assert _texts(single) == _texts(fused.generate(PROMPTS, max_tokens=20))


@pytest.mark.parametrize("engine_name", ["plain", "fused"])
def test_seeded_sampling_is_reproducible_and_batch_invariant(
    engine_name: str, request: pytest.FixtureRequest
) -> None:
    engine: SlmEngine = request.getfixturevalue(engine_name)
    args = {"max_tokens": 24, "temperature": 1.2, "top_p": 0.95}
    first = _texts(engine.generate(PROMPTS, seed=[1, 2, 3], **args))
    assert first == _texts(engine.generate(PROMPTS, seed=[1, 2, 3], **args))
    alone = [engine.generate([p], seed=s, **args)[0] for p, s in zip(PROMPTS, [1, 2, 3], strict=True)]
    assert _texts(alone) == first
    assert _texts(engine.generate(PROMPTS, seed=[4, 5, 6], **args)) != first
    greedy = _texts(engine.generate(PROMPTS, max_tokens=24))
    assert _texts(engine.generate(PROMPTS, max_tokens=24, temperature=0.8, top_p=1e-9, seed=9)) == greedy
    assert _texts(engine.generate(PROMPTS, max_tokens=24, temperature=[0.0, 0.0, 0.0], seed=9)) == greedy


def test_sample_respects_top_p() -> None:
    logp = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    draws = [sample(logp, Sampling(temperature=1.0, top_p=0.75), rng) for _ in range(2000)]
    assert set(draws) == {0, 1}  # 0.5 + 0.3 is the first prefix to reach 0.75: the tail is cut
    assert 0.55 < draws.count(0) / len(draws) < 0.70  # renormalised 0.5 / 0.8
    hot = [sample(logp, Sampling(temperature=50.0), rng) for _ in range(2000)]
    assert min(hot.count(i) for i in range(4)) > 350  # high temperature flattens
    assert sample(logp, Sampling(), rng) == 0


def test_sampling_argument_errors(plain: SlmEngine) -> None:
    with pytest.raises(ValueError, match="temperature"):
        plain.generate(PROMPTS, max_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        plain.generate(PROMPTS, max_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="2 values for 3 prompts"):
        plain.generate(PROMPTS, max_tokens=2, seed=[1, 2])
    assert per_row("ab", 2, "stop") == ["ab", "ab"]


def test_stop_strings_cut_the_text(fused: SlmEngine) -> None:
    full = fused.generate(PROMPTS, max_tokens=24)
    text = full[2].text
    stop = text[8:11]
    assert stop.strip() and text.find(stop) == 8
    got = fused.generate(PROMPTS, max_tokens=24, stop=[stop, "\x00never"])
    assert got[2].text == text[:8] and got[2].finish_reason == "stop"
    assert got[2].completion_tokens < full[2].completion_tokens
    for g, f in zip(got, full, strict=True):  # other rows stop no later than before
        assert f.text.startswith(g.text) and stop not in g.text


def test_stop_matcher_spans_tokens() -> None:
    pieces = {1: "ab", 2: "c", 3: "de"}
    matcher = StopMatcher(["cd"], lambda ids: "".join(pieces[i] for i in ids))
    assert not matcher.hit([1, 2]) and matcher.hit([1, 2, 3])
    assert matcher.cut("abcde") == ("ab", True) and matcher.cut("xyz") == ("xyz", False)
    assert not StopMatcher(["", ""], str)


def test_max_tokens_per_prompt_and_teacher_forcing(fused: SlmEngine) -> None:
    got = fused.generate(PROMPTS, max_tokens=[1, 5, 9])
    assert [g.completion_tokens <= m for g, m in zip(got, [1, 5, 9], strict=True)] == [True] * 3
    encoded = [fused.encode(p) for p in PROMPTS]
    free = fused.decode_ids(encoded, [12] * 3)
    forced = fused.decode_ids(encoded, [12] * 3, forced=[[5] * 12] * 3)  # EOS ignored when forced
    assert forced.tokens == [[5] * 12] * 3 and all(len(a) == 12 for a in forced.argmax)
    assert [a[0] for a in forced.argmax] == [t[0] for t in free.tokens]  # same prefill
    replay = fused.decode_ids(encoded, [len(t) for t in free.tokens], forced=free.tokens)
    assert replay.argmax == free.tokens  # forcing the greedy run reproduces its picks
    assert forced.prefill_s > 0 and len(forced.step_s) == 11


def test_engine_without_warmup(tmp_path: Path) -> None:
    engine = SlmEngine(build_tiny_model(tmp_path, fused=True), threads=1, warmup=False, spin=False)
    assert engine.generate(PROMPTS[:1], max_tokens=3)[0].completion_tokens <= 3
