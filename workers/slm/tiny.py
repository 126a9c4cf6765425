"""A tiny random llama + byte-level tokenizer, built with the real graph builder.

Tests run the real engine on it in milliseconds; the output is gibberish but
deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.slm.fused_graph import build_fused_llama_graph
from workers.slm.llama_graph import LlamaConfig, build_llama_graph, save_model
from workers.slm.tokenizer import (
    CHATML_TEMPLATE,
    build_bpe_tokenizer,
    bytes_to_unicode,
    write_model_files,
)

TINY_NAME = "tiny-llama-test"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# A few English merges so words become multi-byte tokens, as in a real BPE.
TINY_MERGES = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġ", "a"),
    ("i", "n"),
    ("Ġt", "he"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "s"),
    ("r", "e"),
    ("a", "t"),
    ("e", "n"),
    ("Ġ", "w"),
    ("o", "r"),
    ("Ġ", "o"),
    ("i", "s"),
    ("e", "s"),
    ("Ġ", "c"),
    ("a", "n"),
    ("Ġ", "b"),
    ("Ġ", "f"),
    ("Ġ", "p"),
    ("i", "t"),
    ("a", "r"),
    ("Ġ", "m"),
    ("Ġ", "i"),
    ("e", "d"),
    ("o", "u"),
    ("Ġ", "d"),
    ("l", "l"),
    ("in", "g"),
    ("Ġ", "h"),
    ("Ġa", "n"),
    ("Ġan", "d"),
    ("Ġo", "f"),
    ("Ġt", "o"),
    ("Ġi", "s"),
    ("Ġ", "P"),
    ("Ġ", "C"),
    ("Ġ", "F"),
    ("Ġ", "W"),
    ("Ġ", "y"),
]


def tiny_tokens() -> list[str]:
    """Specials first (ids 0..2), then the 256 byte symbols, then merge results."""
    return [*SPECIAL_TOKENS, *bytes_to_unicode().values(), *(a + b for a, b in TINY_MERGES)]


def tiny_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tiny_tokens()),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=512,
        # Untied: a tied random model just repeats its last token; this also
        # exercises the separate lm_head path of the graph builder.
        tie_word_embeddings=False,
    )


def random_llama_weights(cfg: LlamaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """HF-named random weights, scaled so greedy picks are not near-ties."""
    rng = np.random.default_rng(seed)
    h, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim

    def linear(out_dim: int, in_dim: int) -> np.ndarray:
        return (rng.standard_normal((out_dim, in_dim)) / np.sqrt(in_dim)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(h)).astype(np.float32)

    weights = {
        "model.embed_tokens.weight": (0.5 * rng.standard_normal((cfg.vocab_size, h))).astype(np.float32)
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        weights[f"{p}.input_layernorm.weight"] = norm()
        weights[f"{p}.self_attn.q_proj.weight"] = linear(cfg.num_attention_heads * cfg.head_dim, h)
        weights[f"{p}.self_attn.k_proj.weight"] = linear(kv, h)
        weights[f"{p}.self_attn.v_proj.weight"] = linear(kv, h)
        weights[f"{p}.self_attn.o_proj.weight"] = linear(h, cfg.num_attention_heads * cfg.head_dim)
        weights[f"{p}.post_attention_layernorm.weight"] = norm()
        weights[f"{p}.mlp.gate_proj.weight"] = linear(cfg.intermediate_size, h)
        weights[f"{p}.mlp.up_proj.weight"] = linear(cfg.intermediate_size, h)
        weights[f"{p}.mlp.down_proj.weight"] = linear(h, cfg.intermediate_size)
    weights["model.norm.weight"] = norm()
    if not cfg.tie_word_embeddings:
        weights["lm_head.weight"] = (0.5 * rng.standard_normal((cfg.vocab_size, h))).astype(np.float32)
    return weights


def build_tiny_model(dst: Path, *, seed: int = 0, fused: bool = False) -> Path:
    """Write a complete model directory (model.onnx + tokenizer + json files) to `dst`;
    `fused` uses the GroupQueryAttention graph, same weights."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config()
    build = build_fused_llama_graph if fused else build_llama_graph
    save_model(build(cfg, random_llama_weights(cfg, seed)), dst / "model.onnx", external=False)
    tokens = tiny_tokens()
    write_model_files(
        dst,
        config=cfg.to_hf(),
        tokenizer=build_bpe_tokenizer(tokens, TINY_MERGES, SPECIAL_TOKENS, split_digits=True),
        model_name=TINY_NAME,
        bos_token_id=tokens.index("<|im_start|>"),
        eos_token_ids=[tokens.index("<|im_end|>"), tokens.index("<|endoftext|>")],
        pad_token_id=tokens.index("<|im_end|>"),
        chat_template=CHATML_TEMPLATE,
    )
    return dst
