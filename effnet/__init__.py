"""effnet: the EfficientNet family (V1, Lite, V2) and the compound-scaling method, on PyTorch."""

from effnet.registry import create_model, data_config, list_models
from effnet.scaling import compound_coefficients, plan, round_channels, round_repeats

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "compound_coefficients",
    "create_model",
    "data_config",
    "list_models",
    "model_info",
    "plan",
    "round_channels",
    "round_repeats",
]


def __getattr__(name: str):
    # Heavier helpers load lazily so `import effnet` stays fast.
    if name == "model_info":
        from effnet.analysis.info import model_info

        return model_info
    raise AttributeError(f"module 'effnet' has no attribute {name!r}")
