"""4-bit weights that keep the GGUF's Q4_1 weights exact (`pointsman quantize --method q4`).

Q4_1 stores each block of 32 weights as w = d * q + m (q in 0..15, any offset m). MatMulNBits
stores w = s * (q - z) with an integer zero point z, so requantising the dequantised weights
loses their grid (73% greedy agreement). Split instead: with z = round(-m / d),

    w = d * (q - z) + r,   r = m + d * z   (one r per block and output column)

The first term is exactly MatMulNBits' grid (4 bits, block 32, int8 compute); the second adds
x . r per block, i.e. (the block sums of x) @ R: a [K/32, N] fp32 MatMul, 32x smaller than the
weight one. The only rounding left is int8 compute's own on the activations. A weight that is
not on a Q4_1 grid (the LM head: Q8_0) gets 8-bit MatMulNBits, which holds Q8_0 exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

BLOCK = 32
OFFSETS_SUFFIX = "/q4_offsets"  # the correction MatMuls, kept fp32
GRID_TOLERANCE = 1e-3  # in steps of d: a weight further off the 16-level grid is not Q4_1



def q4_1_split(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """[K, N] weight -> (on-grid part [K, N], offsets [K/32, N]), or None if it is not Q4_1."""
    k, n = weight.shape
    if k % BLOCK:
        return None
    blocks = weight.reshape(k // BLOCK, BLOCK, n).astype(np.float64)
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    step = (high - low) / 15
    safe = np.where(step > 0, step, 1.0)
    q = (blocks - low[:, None, :]) / safe[:, None, :]
    if np.abs(q - np.round(q)).max() > GRID_TOLERANCE:
        return None
    zero = np.clip(np.round(-low / safe), 0, 15)
    on_grid = step[:, None, :] * (np.round(q) - zero[:, None, :])
    offsets = low + step * zero
    return on_grid.reshape(k, n).astype(np.float32), offsets.astype(np.float32)


def split_q4_1_matmuls(model: onnx.ModelProto, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Rewrite each named weight MatMul that holds Q4_1 weights as on-grid MatMul + offset
    correction, in place. Returns (split MatMuls: for 4 bits, the rest: for 8 bits); the
    correction MatMuls are named `<node>` + OFFSETS_SUFFIX and must stay fp32."""
    inits = {t.name: t for t in model.graph.initializer}
    split, rest = [], []
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        new_nodes.append(node)
        if node.op_type != "MatMul" or node.name not in names:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        parts = q4_1_split(weight)
        if parts is None:
            rest.append(node.name)
            continue
        on_grid, offsets = parts
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(on_grid, node.input[1]))
        k = weight.shape[0]
        x, y, tag = node.input[0], node.output[0], node.name
        shape = numpy_helper.from_array(np.array([0, 0, k // BLOCK, BLOCK], np.int64), f"{tag}/blocks_shape")
        axes = numpy_helper.from_array(np.array([-1], np.int64), f"{tag}/sum_axes")
        model.graph.initializer.extend([shape, axes, numpy_helper.from_array(offsets, f"{tag}/offsets")])
        node.output[0] = f"{tag}/on_grid"
        new_nodes += [
            helper.make_node("Reshape", [x, shape.name], [f"{tag}/blocks"], name=f"{tag}/blocks"),
            helper.make_node("ReduceSum", [f"{tag}/blocks", axes.name], [f"{tag}/block_sums"],
                             name=f"{tag}/block_sums", keepdims=0),
            helper.make_node("MatMul", [f"{tag}/block_sums", f"{tag}/offsets"], [f"{tag}/offset_out"],
                             name=f"{tag}{OFFSETS_SUFFIX}"),
            helper.make_node("Add", [f"{tag}/on_grid", f"{tag}/offset_out"], [y], name=f"{tag}/add_offsets"),
        ]
        split.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return split, rest
