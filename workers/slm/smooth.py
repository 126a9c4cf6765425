"""SmoothQuant for the fused Llama graph: int8 weights AND int8 activations that keep quality.

Dynamic int8 activations (one scale per tensor, DynamicQuantizeMatMul: MLAS's u8s8 GEMM,
2-3x fp32 at batch 8-32 here) lose accuracy on a few outlier input channels. SmoothQuant
(Xiao et al., 2023) divides each input channel k of a weight MatMul by
s_k = max|x_k|^alpha / max|W_k|^(1 - alpha) and multiplies row k of the weight by s_k: the
product is unchanged, the activation range flattens. The division is folded exactly into
the op before each MatMul:

    qkv, gate/up, lm_head   the RMSNorm gamma that feeds them
    mlp down                the up-projection's output columns (act = silu(gate) * up)
    attention out           the value projection's output columns (one scale per
                            key/value-head channel, shared by the query heads of its group)

max|x_k| comes from running the fp32 model over calibration prompts (their own list, never
the benchmark's) and the greedy continuations it writes for them.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from topics.errors import ConfigError
from workers.slm.engine import SlmEngine

CALIBRATION_PROMPTS = """\
Tell me a fun fact about octopuses.
How do I make a cup of green tea?
What is the difference between weather and climate?
Write a limerick about a cat who loves boxes.
Explain recursion with a simple example.
What are three ways to reduce stress at work?
Who painted the Mona Lisa?
Convert 100 kilometres to miles.
Describe the water cycle for a ten-year-old.
What is an API, in one paragraph?
Give me a packing list for a beach holiday.
Why do leaves change colour in autumn?
Write a polite email declining a meeting invitation.
What is 144 divided by 12?
Name four countries in South America and their capitals.
How does a bicycle stay upright?
What does HTTP stand for and what does it do?
Suggest three names for a black puppy.
Explain the difference between a list and a tuple in Python.
What should I do if my houseplant has yellow leaves?
Summarise the story of Cinderella in three sentences.
What is the speed of light?
How can I improve my handwriting?
Write a two-line poem about the moon.""".splitlines()


@dataclass(frozen=True)
class Heads:
    attention: int
    key_value: int
    dim: int


def heads_of(model_dir: Path) -> Heads:
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    n = int(config["num_attention_heads"])
    dim = config.get("head_dim") or int(config["hidden_size"]) // n
    return Heads(n, int(config.get("num_key_value_heads") or n), int(dim))


def smoothable(model: onnx.ModelProto) -> bool:
    """Our fused graph (fused_graph.py): packed qkv and gate/up weights, named as there."""
    names = {t.name for t in model.graph.initializer}
    return "lm_head.weight" in names and "model.layers.0.self_attn.qkv_proj.weight" in names


def _layers(model: onnx.ModelProto) -> int:
    names = {t.name for t in model.graph.initializer}
    return sum(1 for n in names if n.endswith(".self_attn.qkv_proj.weight"))


def smoothed_weights(model: onnx.ModelProto) -> list[str]:
    """Weight initializers whose MatMul input gets a smoothing scale, in graph order."""
    out = []
    for i in range(_layers(model)):
        p = f"model.layers.{i}"
        out += [f"{p}.self_attn.qkv_proj.weight", f"{p}.self_attn.o_proj.weight",
                f"{p}.mlp.gate_up_proj.weight", f"{p}.mlp.down_proj.weight"]
    return [*out, "lm_head.weight"]


def with_matmul_inputs(model: onnx.ModelProto, weights: list[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of `model` that also outputs the activation entering each weight's MatMul."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    wanted = set(weights)
    inputs = {n.input[1]: n.input[0] for n in copy.graph.node
              if n.op_type == "MatMul" and n.input[1] in wanted}
    missing = wanted - set(inputs)
    if missing:
        raise ValueError(f"no MatMul reads {sorted(missing)[:3]}")
    for tensor in sorted(set(inputs.values())):
        copy.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    return copy, inputs


def channel_ranges(session: object, sequences: list[list[int]], kv: tuple[list[str], Heads],
                   activation_of: dict[str, str]) -> dict[str, np.ndarray]:
    """Per input channel max |x| of every smoothed MatMul, over all positions of all sequences
    (one sequence a run: no padding rows in the statistics)."""
    past_names, heads = kv
    names = sorted(set(activation_of.values()))
    peak: dict[str, np.ndarray] = {}
    for ids in sequences:
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        }
        for name in past_names:
            feeds[name] = np.zeros((1, heads.key_value, 0, heads.dim), np.float32)
        values = session.run(names, feeds)  # type: ignore[attr-defined]
        for name, value in zip(names, values, strict=True):
            channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            peak[name] = channel_max if name not in peak else np.maximum(peak[name], channel_max)
    return {weight: peak[tensor] for weight, tensor in activation_of.items()}


def scales(x_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    """s_k = max|x_k|^alpha / max|W_k|^(1-alpha), clipped; a silent channel gets a tiny scale."""
    x_max, w_max = np.maximum(x_max, 1e-5), np.maximum(w_max, 1e-5)
    s = x_max**alpha / w_max ** (1 - alpha)
    return np.clip(s, 1e-4, 1e4).astype(np.float32)


class _Inits:
    """Initializers by name as float32 arrays; written back on `save`."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.index = {t.name: i for i, t in enumerate(model.graph.initializer)}
        self.arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            self.arrays[name] = numpy_helper.to_array(self.model.graph.initializer[self.index[name]]).copy()
        return self.arrays[name]

    def save(self) -> None:
        for name, array in self.arrays.items():
            self.model.graph.initializer[self.index[name]].CopyFrom(numpy_helper.from_array(array, name))


def smooth(model: onnx.ModelProto, ranges: dict[str, np.ndarray], heads: Heads,
           alpha: float = 0.5) -> None:
    """Fold the smoothing scales into `model`'s weights in place (see the module doc)."""
    w = _Inits(model)
    hidden = heads.attention * heads.dim
    v_start = hidden + heads.key_value * heads.dim  # qkv columns: q, then k, then v
    group = heads.attention // heads.key_value
    for i in range(_layers(model)):
        p = f"model.layers.{i}"
        qkv, o_proj = w[f"{p}.self_attn.qkv_proj.weight"], w[f"{p}.self_attn.o_proj.weight"]
        gate_up, down = w[f"{p}.mlp.gate_up_proj.weight"], w[f"{p}.mlp.down_proj.weight"]

        s = scales(ranges[f"{p}.self_attn.qkv_proj.weight"], np.abs(qkv).max(axis=1), alpha)
        w[f"{p}.input_layernorm.weight"][:] /= s
        qkv *= s[:, None]

        s = scales(ranges[f"{p}.mlp.gate_up_proj.weight"], np.abs(gate_up).max(axis=1), alpha)
        w[f"{p}.post_attention_layernorm.weight"][:] /= s
        gate_up *= s[:, None]

        # o_proj input channel (head h, d) is value channel (h // group, d): one scale per
        # value channel, from the largest range among the query heads that read it
        x = ranges[f"{p}.self_attn.o_proj.weight"].reshape(heads.key_value, group, heads.dim).max(axis=1)
        wo = np.abs(o_proj).max(axis=1).reshape(heads.key_value, group, heads.dim).max(axis=1)
        s_kv = scales(x, wo, alpha)  # [kv_heads, dim]
        qkv[:, v_start:] /= s_kv.reshape(1, -1)
        o_proj *= np.repeat(s_kv, group, axis=0).reshape(-1, 1)

        s = scales(ranges[f"{p}.mlp.down_proj.weight"], np.abs(down).max(axis=1), alpha)
        gate_up[:, down.shape[0]:] /= s  # the up half: act = silu(gate) * up
        down *= s[:, None]

    head = w["lm_head.weight"]
    s = scales(ranges["lm_head.weight"], np.abs(head).max(axis=1), alpha)
    w["model.norm.weight"][:] /= s
    head *= s[:, None]
    w.save()


def calibrate(model: onnx.ModelProto, engine: SlmEngine, *, tokens: int = 24,
              threads: int = 2) -> dict[str, np.ndarray]:
    """Activation ranges of `model` (fp32, fused) over CALIBRATION_PROMPTS and the greedy
    continuations that `engine` (the same model, loaded) writes for them."""
    import onnxruntime as ort

    from workers.slm.engine import session_options

    encoded = [engine.encode([{"role": "user", "content": p}]) for p in CALIBRATION_PROMPTS]
    written = engine.decode_ids(encoded, [tokens] * len(encoded)).tokens
    sequences = [ids + more for ids, more in zip(encoded, written, strict=True)]
    augmented, activation_of = with_matmul_inputs(model, smoothed_weights(model))
    session = ort.InferenceSession(augmented.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    past = [f"past_key_values.{i}.{kind}" for i in range(_layers(model)) for kind in ("key", "value")]
    return channel_ranges(session, sequences, (past, heads_of(engine.model_dir)), activation_of)


def smoothed_model(engine: SlmEngine, *, alpha: float = 0.5, threads: int = 2) -> onnx.ModelProto:
    """The fp32 fused model `engine` runs, with its activation outliers moved into the weights."""
    src = engine.model_dir
    model = onnx.load(str(src / "model.onnx"))
    if not smoothable(model):
        raise ConfigError(f"{src}: w8a8 needs the fused graph `pointsman models prepare` builds")
    smooth(model, calibrate(model, engine, threads=threads), heads_of(src), alpha)
    return model


def quantize_w8a8(model: onnx.ModelProto, dst_model: Path, *, exclude: Sequence[str] = ()) -> None:
    """Per-column int8 weights, per-tensor dynamic int8 activations (onnxruntime's
    quantize_dynamic; the session fuses each MatMul into DynamicQuantizeMatMul); the MatMuls
    named in `exclude` stay fp32. Writes `dst_model` and its external data."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from workers.slm.llama_graph import save_model

    dst_model.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".w8a8.", dir=dst_model.parent) as tmp:
        source = Path(tmp) / "smoothed.onnx"
        save_model(onnx.ModelProto.FromString(model.SerializeToString()), source)  # saving moves
        # the weights out of the proto it is given; `model` is reused for the next candidate
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # silences a generic "run pre-processing" hint it logs each call
        try:
            quantize_dynamic(str(source), str(dst_model), per_channel=True, reduce_range=True,
                             weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=list(exclude),
                             use_external_data_format=True,
                             extra_options={"DefaultTensorType": TensorProto.FLOAT})
        finally:
            root.setLevel(level)
