"""Read a llama-architecture GGUF file into float32 numpy weights and HF side files."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topics.errors import ConfigError
from workers.slm.llama_graph import LlamaConfig
from workers.slm.tokenizer import build_bpe_tokenizer, write_model_files

log = logging.getLogger(__name__)

# GGUF tensor name -> HF parameter name.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4
# llama.cpp pre-tokenizers that put every digit in its own pre-token.
_DIGIT_SPLIT_PRE = ("smollm", "starcoder")


@dataclass
class GgufModel:
    config: LlamaConfig
    weights: dict[str, np.ndarray]
    tokens: list[str]
    merges: list[str]
    special_tokens: list[str]
    pre_tokenizer: str
    bos_token_id: int | None
    eos_token_ids: list[int]
    pad_token_id: int | None
    chat_template: str | None


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo convert_hf_to_gguf.py's `permute` of q/k rows.

    llama.cpp rotates interleaved pairs (x0,x1),(x2,x3)...; the writer reorders
    each head's rows so that HF's rotate-half layout becomes interleaved. We
    restore the HF row order so the graph can use rotate-half rotary.
    """
    out_dim = w.shape[0]
    return w.reshape(n_head, out_dim // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_gguf(path: Path) -> GgufModel:
    """Dequantize every tensor to float32 and collect config + tokenizer data."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ConfigError(f"{path}: architecture {arch!r} is not supported, only 'llama'")

    def arch_field(name: str, default: Any = None) -> Any:
        return _field(reader, f"llama.{name}", default)

    tok_model = _field(reader, "tokenizer.ggml.model")
    if tok_model != "gpt2":
        raise ConfigError(f"{path}: tokenizer {tok_model!r} is not supported, only byte-level BPE 'gpt2'")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    heads = int(arch_field("attention.head_count"))
    hidden = int(arch_field("embedding_length"))
    kv_heads = int(arch_field("attention.head_count_kv", heads))
    names = {t.name for t in reader.tensors}
    config = LlamaConfig(
        vocab_size=int(arch_field("vocab_size", len(tokens))),
        hidden_size=hidden,
        intermediate_size=int(arch_field("feed_forward_length")),
        num_hidden_layers=int(arch_field("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=int(arch_field("rope.dimension_count", hidden // heads)),
        rope_theta=float(arch_field("rope.freq_base", 10000.0)),
        rms_norm_eps=float(np.float32(arch_field("attention.layer_norm_rms_epsilon", 1e-5))),
        max_position_embeddings=int(arch_field("context_length", 2048)),
        tie_word_embeddings="output.weight" not in names,
    )

    weights: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        arr = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if tensor.name in _GLOBAL_NAMES:
            weights[_GLOBAL_NAMES[tensor.name]] = arr
            continue
        m = _BLOCK_RE.fullmatch(tensor.name)
        if m is None or m.group(2) not in _BLOCK_NAMES:
            log.warning("ignoring GGUF tensor %s", tensor.name)
            continue
        if m.group(2) == "attn_q":
            arr = unpermute_qk(arr, heads)
        elif m.group(2) == "attn_k":
            arr = unpermute_qk(arr, kv_heads)
        weights[f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.weight"] = arr

    token_types = list(_field(reader, "tokenizer.ggml.token_type", []))
    special = [
        t
        for t, kind in zip(tokens, token_types, strict=False)
        if kind in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)
    ]
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    eos_ids = [int(eos)] if eos is not None else []
    # Chat models end a turn with <|im_end|>; plain text ends with <|endoftext|>.
    for stop in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        if stop in tokens and tokens.index(stop) not in eos_ids:
            eos_ids.append(tokens.index(stop))
    pad = _field(reader, "tokenizer.ggml.padding_token_id")
    return GgufModel(
        config=config,
        weights=weights,
        tokens=tokens,
        merges=list(_field(reader, "tokenizer.ggml.merges", [])),
        special_tokens=special,
        pre_tokenizer=str(_field(reader, "tokenizer.ggml.pre", "default")),
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=eos_ids,
        pad_token_id=None if pad is None else int(pad),
        chat_template=_field(reader, "tokenizer.chat_template"),
    )


def write_side_files(model: GgufModel, dst: Path, model_name: str) -> None:
    """tokenizer.json + config.json + generation_config.json + tokenizer_config.json."""
    tokenizer = build_bpe_tokenizer(
        model.tokens,
        model.merges,
        model.special_tokens,
        split_digits=model.pre_tokenizer in _DIGIT_SPLIT_PRE,
    )
    write_model_files(
        dst,
        config=model.config.to_hf(),
        tokenizer=tokenizer,
        model_name=model_name,
        bos_token_id=model.bos_token_id,
        eos_token_ids=model.eos_token_ids,
        pad_token_id=model.pad_token_id,
        chat_template=model.chat_template,
    )
