"""Weights: effnet's own model files; (the weights helper adds) upstream converters and sources."""

from effnet.weights.serialize import atomic_write, load_model, read_model_file, save_model

__all__ = ["atomic_write", "load_model", "read_model_file", "save_model"]
