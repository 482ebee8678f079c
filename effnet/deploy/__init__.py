"""Deployment: export to ONNX / TorchScript / safetensors / pt2, ``predict``, and
``optimize_for_inference``."""
