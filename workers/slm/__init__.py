"""Small language model track: GGUF -> ONNX conversion and a greedy onnxruntime engine."""

from workers.slm.engine import Generation, SlmEngine

__all__ = ["Generation", "SlmEngine"]
