"""effnet: the EfficientNet family (V1, Lite, V2) and the compound-scaling method, on PyTorch."""

from effnet.api import create_model, load_model, save_model
from effnet.registry import data_config, list_models
from effnet.scaling import compound_coefficients, plan, round_channels, round_repeats

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "accelerate",
    "compound_coefficients",
    "create_model",
    "data_config",
    "list_models",
    "load_model",
    "model_info",
    "plan",
    "round_channels",
    "round_repeats",
    "save_model",
]


# Heavier helpers load lazily so `import effnet` stays fast: public name -> defining module.
_LAZY = {
    "accelerate": "effnet.fast",
    "model_info": "effnet.analysis.info",
    "resolve_model": "effnet.api",
    "export_model": "effnet.deploy.export",
    "predict": "effnet.deploy.inference",
    "optimize_for_inference": "effnet.deploy.optimize",
    "scale": "effnet.lab.scale",
    "train": "effnet.training",
}


# Submodules reachable as attributes without importing them first (``effnet.convert.to_timm``).
_SUBMODULES = ("convert",)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None and name not in _SUBMODULES:
        raise AttributeError(f"module 'effnet' has no attribute {name!r}")
    import importlib

    if module is None:
        return importlib.import_module(f"effnet.{name}")
    return getattr(importlib.import_module(module), name)
