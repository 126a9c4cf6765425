"""The same llama decoder built from onnxruntime's fused contrib ops (CPU fast path).

The plain graph in llama_graph.py spends most of a decode step in ~1,300 tiny ops
(rotary, masks, reshapes). Here each layer is one packed QKV MatMul, one
GroupQueryAttention (rotary + causal mask + KV append inside) and fused RMSNorms, the
layout onnxruntime-genai uses. Interface differences from the plain graph:

    attention_mask  int64 [batch, total]: RIGHT-padded; row b's sum is its valid length.
                    GroupQueryAttention keeps each row's cache compact at the front and
                    derives positions and masking from the per-row length (seqlens_k).
    (no position_ids)
    past/present    [batch, kv_heads, buffer, head_dim]; the engine binds past and present
                    to one preallocated buffer, so a step appends in place (no copy).
    logits          float32 [batch, 1, vocab]: only each row's last valid position, so a
                    long prefill never pays for the vocabulary projection of every token.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from workers.slm.llama_graph import LlamaConfig, _Builder, decoder_io, rope_tables

MS_DOMAIN = "com.microsoft"
FUSED_MARKER = "GroupQueryAttention"  # the engine switches to the GQA cache convention on this op


def build_fused_llama_graph(cfg: LlamaConfig, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Return the fused decoder ModelProto; `weights` uses HF parameter names."""
    b = _Builder()
    nh, kvh, hd, eps = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps
    inputs, outputs = decoder_io(cfg, logits_len=1, past_len="past_buffer", present_len="present_buffer",
                                 position_ids=False)

    def w(name: str) -> np.ndarray:
        return np.asarray(weights[name], np.float32)

    def matmul(x: str, weight: np.ndarray, name: str) -> str:
        return b.op("MatMul", [x, b.init(name, np.ascontiguousarray(weight.T))])  # HF [out, in]

    def ms_op(
        op_type: str, ins: list[str], n_out: int = 1, names: list[str] | None = None, **attrs: Any
    ) -> Any:
        b._count += 1
        name = f"{op_type}_{b._count}"
        outs = [f"{name}_out{k}" for k in range(n_out)] + (names or [])
        b.nodes.append(helper.make_node(op_type, ins, outs, name=name, domain=MS_DOMAIN, **attrs))
        return outs[0] if n_out == 1 else outs

    # seqlens_k = valid length - 1 per row; total_sequence_length = mask width.
    lengths = b.op("ReduceSum", ["attention_mask", b.const([1])], keepdims=0)
    seqlens_k = b.op("Cast", [b.op("Sub", [lengths, b.const(1)])], to=TensorProto.INT32)
    total = b.op("Cast", [b.op("Shape", ["attention_mask"], start=1, end=2)], to=TensorProto.INT32)
    cos_t, sin_t = rope_tables(cfg)  # [max_pos, hd]; GQA wants the first half: [max_pos, hd/2]
    cos = b.init("rope_cos_half", np.ascontiguousarray(cos_t[:, : hd // 2]))
    sin = b.init("rope_sin_half", np.ascontiguousarray(sin_t[:, : hd // 2]))

    x = b.op("Gather", [b.init("model.embed_tokens.weight", w("model.embed_tokens.weight")), "input_ids"])
    residual = ""
    pending = ""  # the sublayer output not yet added to the residual stream

    def norm(name: str) -> str:
        nonlocal residual
        gamma = b.init(name, w(name))
        if not pending:  # first layer: nothing to add yet
            residual = x
            return b.op("SimplifiedLayerNormalization", [x, gamma], axis=-1, epsilon=eps)
        skip_norm = "SkipSimplifiedLayerNormalization"
        out, _, _, residual = ms_op(skip_norm, [pending, residual, gamma], 4, epsilon=eps)
        return out

    for i in range(cfg.num_hidden_layers):
        p, past = f"model.layers.{i}", f"past_key_values.{i}"
        h = norm(f"{p}.input_layernorm.weight")
        qkv_w = np.concatenate([w(f"{p}.self_attn.{n}_proj.weight") for n in "qkv"], axis=0)
        qkv = matmul(h, qkv_w, f"{p}.self_attn.qkv_proj.weight")
        attn = ms_op(
            "GroupQueryAttention",
            [qkv, "", "", f"{past}.key", f"{past}.value", seqlens_k, total, cos, sin],
            1,
            [f"present.{i}.key", f"present.{i}.value"],
            num_heads=nh,
            kv_num_heads=kvh,
            do_rotary=1,
            rotary_interleaved=0,
        )
        pending = matmul(attn, w(f"{p}.self_attn.o_proj.weight"), f"{p}.self_attn.o_proj.weight")
        h = norm(f"{p}.post_attention_layernorm.weight")
        gate_up_w = np.concatenate([w(f"{p}.mlp.gate_proj.weight"), w(f"{p}.mlp.up_proj.weight")], axis=0)
        gate, up = b.op("Split", [matmul(h, gate_up_w, f"{p}.mlp.gate_up_proj.weight")], n_out=2, axis=-1)
        act = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
        pending = matmul(act, w(f"{p}.mlp.down_proj.weight"), f"{p}.mlp.down_proj.weight")

    final = norm("model.norm.weight")
    # Row b's last valid token sits at min(seqlens_k[b], seq - 1): its prompt end on the
    # first (right-padded) pass, position 0 on every one-token decode step.
    seq = b.op("Cast", [b.op("Shape", ["input_ids"], start=1, end=2)], to=TensorProto.INT32)
    last = b.op("Min", [seqlens_k, b.op("Sub", [seq, b.const([1], np.int32)])])
    last = b.op("Unsqueeze", [b.op("Cast", [last], to=TensorProto.INT64), b.const([1])])
    hidden = b.op("Unsqueeze", [b.op("GatherND", [final, last], batch_dims=1), b.const([1])])
    head = weights.get("lm_head.weight")
    head = w("model.embed_tokens.weight") if head is None else np.asarray(head, np.float32)
    b.nodes.append(
        helper.make_node("MatMul", [hidden, b.init("lm_head.weight", head.T)], ["logits"], name="lm_head")
    )

    graph = helper.make_graph(b.nodes, "llama_decoder_fused", inputs, outputs, initializer=b.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS_DOMAIN, 1)],
        producer_name="pointsman",
    )
    model.ir_version = 8
    return model


def is_fused(model: onnx.ModelProto) -> bool:
    return any(node.op_type == FUSED_MARKER for node in model.graph.node)
