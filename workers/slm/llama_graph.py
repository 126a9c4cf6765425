"""Build a llama-family decoder as a plain ONNX graph with a KV cache.

The input/output names and layouts follow what Optimum and onnxruntime-genai
export, so the engine can run either these graphs or a user-exported model:

    input_ids          int64   [batch, seq]
    attention_mask     int64   [batch, past + seq]
    position_ids       int64   [batch, seq]
    past_key_values.{i}.key / .value   float32 [batch, kv_heads, past, head_dim]
 -> logits             float32 [batch, seq, vocab]
    present.{i}.key / .value           float32 [batch, kv_heads, past + seq, head_dim]

Weights use Hugging Face names and layouts (Linear weights are [out, in]), and
rotary embeddings use the HF "rotate half" convention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# Finite (not -inf) so that a fully masked row, e.g. a left-padding query,
# softmaxes to a uniform row instead of NaN that would poison the cache.
MASK_NEG = -1e9


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> LlamaConfig:
        heads = int(cfg["num_attention_heads"])
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(cfg.get("num_key_value_heads", heads)),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        )

    def to_hf(self) -> dict[str, Any]:
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **asdict(self)}


def rope_tables(cfg: LlamaConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables [max_pos, head_dim] in the HF layout (frequencies repeated twice)."""
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim))
    freqs = np.outer(np.arange(cfg.max_position_embeddings, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


class _Builder:
    """Tiny helper that names nodes and collects initializers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def const(self, values: Any, dtype: type = np.int64) -> str:
        arr = np.asarray(values, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self._consts:
            self._consts[key] = self.init(f"const_{len(self._consts)}", arr)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> Any:
        self._count += 1
        name = f"{op_type}_{self._count}"
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def linear(self, x: str, weight: np.ndarray, name: str) -> str:
        # HF Linear is [out, in]; ONNX MatMul wants [in, out]. A plain MatMul
        # with a constant B is what MatMulNBitsQuantizer looks for.
        w = self.init(name, np.asarray(weight, dtype=np.float32).T)
        return self.op("MatMul", [x, w])

    def rms_norm(self, x: str, weight: np.ndarray, name: str, eps: float) -> str:
        # Pow/ReduceMean/Add/Sqrt/Div/Mul: the pattern ORT fuses into SimplifiedLayerNorm.
        sq = self.op("Pow", [x, self.const(2.0, np.float32)])
        ms = self.op("ReduceMean", [sq], axes=[-1], keepdims=1)
        rms = self.op("Sqrt", [self.op("Add", [ms, self.const(eps, np.float32)])])
        normed = self.op("Div", [x, rms])
        return self.op("Mul", [normed, self.init(name, np.asarray(weight, dtype=np.float32))])


def _rope(b: _Builder, x: str, cos: str, sin: str, half: int) -> str:
    """x * cos + rotate_half(x) * sin, x: [B, heads, S, head_dim]."""
    x1, x2 = b.op("Split", [x, b.const([half, half])], n_out=2, axis=-1)
    rotated = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
    return b.op("Add", [b.op("Mul", [x, cos]), b.op("Mul", [rotated, sin])])


def decoder_io(
    cfg: LlamaConfig, *, logits_len: str | int, past_len: str, present_len: str, position_ids: bool
) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """Graph inputs and outputs both builders share: ids, mask, logits and one KV pair per layer."""
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ValueError(f"num_attention_heads {cfg.num_attention_heads} not a multiple of "
                         f"num_key_value_heads {cfg.num_key_value_heads}")
    io, f32, i64 = helper.make_tensor_value_info, TensorProto.FLOAT, TensorProto.INT64
    inputs = [io("input_ids", i64, ["batch_size", "sequence_length"]),
              io("attention_mask", i64, ["batch_size", "total_sequence_length"])]
    if position_ids:
        inputs.append(io("position_ids", i64, ["batch_size", "sequence_length"]))
    outputs = [io("logits", f32, ["batch_size", logits_len, cfg.vocab_size])]
    def kv(length: str) -> list[Any]:
        return ["batch_size", cfg.num_key_value_heads, length, cfg.head_dim]

    for i in range(cfg.num_hidden_layers):
        for kind in ("key", "value"):
            inputs.append(io(f"past_key_values.{i}.{kind}", f32, kv(past_len)))
            outputs.append(io(f"present.{i}.{kind}", f32, kv(present_len)))
    return inputs, outputs


def build_llama_graph(cfg: LlamaConfig, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Return the decoder ModelProto; `weights` uses HF parameter names."""
    b = _Builder()
    nh, kvh, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    inputs, outputs = decoder_io(cfg, logits_len="sequence_length", past_len="past_sequence_length",
                                 present_len="total_sequence_length", position_ids=True)

    embed = b.init("model.embed_tokens.weight", np.asarray(weights["model.embed_tokens.weight"], np.float32))
    x = b.op("Gather", [embed, "input_ids"], axis=0)

    # Additive attention bias [B, 1, S, T]: key j is visible to query i (absolute
    # position past+i) iff j <= past+i and attention_mask[b, j] == 1.
    seq = b.op("Shape", ["input_ids"], start=1, end=2)
    total = b.op("Shape", ["attention_mask"], start=1, end=2)
    past = b.op("Sub", [total, seq])
    axis0, axis1 = b.const([0]), b.const([1])
    total_s = b.op("Squeeze", [total, axis0])
    past_s = b.op("Squeeze", [past, axis0])
    key_idx = b.op("Range", [b.const(0, np.int64), total_s, b.const(1, np.int64)])
    query_idx = b.op("Unsqueeze", [b.op("Range", [past_s, total_s, b.const(1, np.int64)]), axis1])
    causal = b.op("LessOrEqual", [key_idx, query_idx])
    padding = b.op("Unsqueeze", [b.op("Cast", ["attention_mask"], to=TensorProto.BOOL), b.const([1, 2])])
    allowed = b.op("And", [causal, padding])
    bias = b.op("Where", [allowed, b.const(0.0, np.float32), b.const(MASK_NEG, np.float32)])

    cos_t, sin_t = rope_tables(cfg)
    cos = b.op("Unsqueeze", [b.op("Gather", [b.init("rope_cos", cos_t), "position_ids"], axis=0), axis1])
    sin = b.op("Unsqueeze", [b.op("Gather", [b.init("rope_sin", sin_t), "position_ids"], axis=0), axis1])
    scale = b.const(1.0 / np.sqrt(hd), np.float32)

    def heads(t: str, n: int) -> str:  # [B, S, n*hd] -> [B, n, S, hd]
        return b.op("Transpose", [b.op("Reshape", [t, b.const([0, 0, n, hd])])], perm=[0, 2, 1, 3])

    def proj(t: str, name: str) -> str:
        return b.linear(t, weights[name], name)

    def norm(t: str, name: str) -> str:
        return b.rms_norm(t, weights[name], name, cfg.rms_norm_eps)

    def append_to_cache(i: int, kind: str, t: str) -> str:
        out = f"present.{i}.{kind}"
        inputs = [f"past_key_values.{i}.{kind}", t]
        b.nodes.append(helper.make_node("Concat", inputs, [out], name=f"concat_{out}", axis=2))
        return out

    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        h = norm(x, f"{p}.input_layernorm.weight")
        q = heads(proj(h, f"{p}.self_attn.q_proj.weight"), nh)
        k = heads(proj(h, f"{p}.self_attn.k_proj.weight"), kvh)
        v = heads(proj(h, f"{p}.self_attn.v_proj.weight"), kvh)
        q = b.op("Mul", [_rope(b, q, cos, sin, hd // 2), scale])
        k_all = append_to_cache(i, "key", _rope(b, k, cos, sin, hd // 2))
        v_all = append_to_cache(i, "value", v)
        # GQA without copying K/V: fold the query heads that share a kv head into
        # the row axis, [B, nh, S, hd] -> [B, kvh, rep*S, hd].
        qg = b.op("Reshape", [q, b.const([0, kvh, -1, hd])])
        kt = b.op("Transpose", [k_all], perm=[0, 1, 3, 2])
        scores = b.op("Reshape", [b.op("MatMul", [qg, kt]), b.const([0, nh, -1, 0])])
        probs = b.op("Softmax", [b.op("Add", [scores, bias])], axis=-1)
        probs = b.op("Reshape", [probs, b.const([0, kvh, -1, 0])])
        ctx = b.op("Reshape", [b.op("MatMul", [probs, v_all]), b.const([0, nh, -1, hd])])
        ctx = b.op("Transpose", [ctx], perm=[0, 2, 1, 3])  # [B, S, nh, hd]
        ctx = b.op("Reshape", [ctx, b.const([0, 0, nh * hd])])
        x = b.op("Add", [x, proj(ctx, f"{p}.self_attn.o_proj.weight")])

        h = norm(x, f"{p}.post_attention_layernorm.weight")
        gate = proj(h, f"{p}.mlp.gate_proj.weight")
        silu = b.op("Mul", [gate, b.op("Sigmoid", [gate])])
        act = b.op("Mul", [silu, proj(h, f"{p}.mlp.up_proj.weight")])
        x = b.op("Add", [x, proj(act, f"{p}.mlp.down_proj.weight")])

    x = norm(x, "model.norm.weight")
    head = weights.get("lm_head.weight")
    if head is None:
        head = weights["model.embed_tokens.weight"]  # tied embeddings
    w_head = b.init("lm_head.weight", np.asarray(head, np.float32).T)
    b.nodes.append(helper.make_node("MatMul", [x, w_head], ["logits"], name="lm_head"))

    graph = helper.make_graph(b.nodes, "llama_decoder", inputs, outputs, initializer=b.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pointsman"
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    return model


def save_model(model: onnx.ModelProto, path: Path, *, external: bool = True) -> None:
    """Save, putting weights in `<name>.data` so large models dodge the 2 GB protobuf cap."""
    path = Path(path)
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))
