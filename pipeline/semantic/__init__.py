"""Semantic answer cache: embedders (hashing, static, MiniLM ONNX), guards, vector index, cache.

Pure decisions: nothing here imports Kafka or Faust; onnxruntime and tokenizers load inside the
embedder classes that need them.
"""

from pipeline.semantic.cache import (
           Lookup,
           SemanticCache,
           SemanticEntry,
           SemanticKey,
           SemanticSettings,
           key_for,
)
from pipeline.semantic.embedders import Embedder, make_embedder, minilm_available

__all__ = ["Embedder", "Lookup", "SemanticCache", "SemanticEntry", "SemanticKey", "SemanticSettings",
           "key_for", "make_embedder", "minilm_available"]
