"""Weights: effnet model files, upstream converters (timm, torchvision, lukemelas), sources."""

from effnet.weights.catalog import WeightSource, default_weights, weight_sources
from effnet.weights.classes import imagenet_classes
from effnet.weights.convert import convert_state_dict, detect_format
from effnet.weights.lite import lite_weights_path
from effnet.weights.pretrained import (
    PretrainedWeights,
    WeightsSourceWarning,
    adapt_input_conv,
    apply_pretrained,
    read_pretrained,
)
from effnet.weights.serialize import atomic_write, load_model, read_model_file, save_model

__all__ = [
    "PretrainedWeights",
    "WeightSource",
    "WeightsSourceWarning",
    "adapt_input_conv",
    "apply_pretrained",
    "atomic_write",
    "convert_state_dict",
    "default_weights",
    "detect_format",
    "imagenet_classes",
    "lite_weights_path",
    "load_model",
    "read_model_file",
    "read_pretrained",
    "save_model",
    "weight_sources",
]
