"""Small language model track: GGUF -> ONNX (plain or fused graph), int8, a KV-cache engine."""

from workers.slm.engine import Generation, SlmEngine

__all__ = ["Generation", "SlmEngine"]
