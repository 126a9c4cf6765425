"""The ONNX llama graph against an independent numpy llama forward pass."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from workers.slm.gguf_import import unpermute_qk
from workers.slm.llama_graph import LlamaConfig, build_llama_graph
from workers.slm.tiny import build_tiny_model, random_llama_weights, tiny_config


def reference_logits(cfg: LlamaConfig, w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Plain float64 llama forward for one unpadded sequence, no cache: [seq, vocab]."""
    n, hd, nh, kvh = len(ids), cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    f64 = {k: v.astype(np.float64) for k, v in w.items()}

    def rms(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.rms_norm_eps) * g

    def rotary(x: np.ndarray) -> np.ndarray:  # x: [n, heads, hd]; HF pairs (i, i + hd/2)
        half = hd // 2
        freq = cfg.rope_theta ** (-np.arange(half) * 2.0 / hd)
        angle = np.exp(1j * np.arange(n)[:, None, None] * freq)
        z = (x[..., :half] + 1j * x[..., half:]) * angle
        return np.concatenate([z.real, z.imag], axis=-1)

    x = f64["model.embed_tokens.weight"][ids]
    causal = np.tril(np.ones((n, n), dtype=bool))
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        h = rms(x, f64[f"{p}.input_layernorm.weight"])
        q = rotary((h @ f64[f"{p}.self_attn.q_proj.weight"].T).reshape(n, nh, hd))
        k = rotary((h @ f64[f"{p}.self_attn.k_proj.weight"].T).reshape(n, kvh, hd))
        v = (h @ f64[f"{p}.self_attn.v_proj.weight"].T).reshape(n, kvh, hd)
        k, v = np.repeat(k, nh // kvh, axis=1), np.repeat(v, nh // kvh, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        scores = np.where(causal, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = np.einsum("hqk,khd->qhd", probs, v).reshape(n, nh * hd)
        x = x + ctx @ f64[f"{p}.self_attn.o_proj.weight"].T
        h = rms(x, f64[f"{p}.post_attention_layernorm.weight"])
        gate = h @ f64[f"{p}.mlp.gate_proj.weight"].T
        act = gate / (1 + np.exp(-gate)) * (h @ f64[f"{p}.mlp.up_proj.weight"].T)
        x = x + act @ f64[f"{p}.mlp.down_proj.weight"].T
    head = f64.get("lm_head.weight", f64["model.embed_tokens.weight"])
    return rms(x, f64["model.norm.weight"]) @ head.T


def _run(session: ort.InferenceSession, cfg: LlamaConfig, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    for i in range(cfg.num_hidden_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros(
                (ids.shape[0], cfg.num_key_value_heads, 0, cfg.head_dim), np.float32
            )
    return session.run(["logits"], feeds)[0]


@pytest.mark.parametrize("tied", [True, False])
def test_graph_matches_numpy_reference(tied: bool) -> None:
    cfg = LlamaConfig(**{**tiny_config().__dict__, "tie_word_embeddings": tied})
    weights = random_llama_weights(cfg, seed=3)
    if tied:
        weights.pop("lm_head.weight", None)
    session = ort.InferenceSession(
        build_llama_graph(cfg, weights).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    ids = [5, 17, 200, 42, 42, 9, 120, 7, 250, 33, 1, 64]
    got = _run(session, cfg, np.array([ids]), np.ones((1, len(ids)), np.int64))[0]
    np.testing.assert_allclose(got, reference_logits(cfg, weights, ids), atol=2e-4, rtol=1e-4)


def test_left_padded_batch_matches_reference() -> None:
    cfg = tiny_config()
    weights = random_llama_weights(cfg, seed=4)
    session = ort.InferenceSession(
        build_llama_graph(cfg, weights).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    seqs = [[10, 20, 30, 40, 50, 60, 70], [80, 90, 100]]
    width = max(map(len, seqs))
    ids = np.full((2, width), 2, np.int64)
    mask = np.zeros((2, width), np.int64)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :], mask[row, width - len(seq) :] = seq, 1
    got = _run(session, cfg, ids, mask)
    for row, seq in enumerate(seqs):
        np.testing.assert_allclose(
            got[row, width - len(seq) :], reference_logits(cfg, weights, seq), atol=2e-4, rtol=1e-4
        )


def test_unpermute_inverts_llama_cpp_permute() -> None:
    def permute(w: np.ndarray, n_head: int) -> np.ndarray:  # convert_hf_to_gguf.py's LlamaModel.permute
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = np.random.default_rng(0).standard_normal((3 * 16, 8))
    np.testing.assert_array_equal(unpermute_qk(permute(w, 3), 3), w)


def test_tiny_tokenizer_round_trips_any_text(tmp_path) -> None:
    from tokenizers import Tokenizer

    build_tiny_model(tmp_path)
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = "The cat sat, and 42 dogs didn't. Ünïcödé ✓ 🙂\n\ttabs"
    enc = tok.encode(text, add_special_tokens=False)
    assert tok.decode(enc.ids) == text
    assert "Ġthe" in tok.encode(" the", add_special_tokens=False).tokens
    assert tok.encode("<|im_end|>", add_special_tokens=False).ids == [2]
