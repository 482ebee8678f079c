"""effnet: the EfficientNet family (V1, Lite, V2) and the compound-scaling method, on PyTorch."""

__version__ = "0.1.0"

# Every name loads on first use, so that `import effnet` (and the command line's argument
# parsing) does not import torch: public name -> defining module.
_LAZY = {
    "create_model": "effnet.api",
    "load_model": "effnet.api",
    "save_model": "effnet.api",
    "resolve_model": "effnet.api",
    "data_config": "effnet.registry",
    "list_models": "effnet.api",
    "compound_coefficients": "effnet.scaling",
    "plan": "effnet.scaling",
    "round_channels": "effnet.scaling",
    "round_repeats": "effnet.scaling",
    "accelerate": "effnet.fast",
    "model_info": "effnet.analysis.info",
    "export_model": "effnet.deploy.export",
    "predict": "effnet.deploy.inference",
    "optimize_for_inference": "effnet.deploy.optimize",
    "scale": "effnet.lab.scale",
    "train": "effnet.training",
    "create_transform": "effnet.api",
    "choose_pretrained": "effnet.api",
    "evaluate_checkpoint": "effnet.training",
    "Callback": "effnet.training",
    "TrainConfig": "effnet.training",
    "cam_images": "effnet.analysis.cam",
    "cam_grid": "effnet.analysis.cam",
    "search": "effnet.lab.search",
    "sweep": "effnet.lab.sweep",
    "weight_sources": "effnet.weights",
    "default_weights": "effnet.weights",
}


# Submodules reachable as attributes without importing them first (``effnet.convert.to_timm``).
_SUBMODULES = ("convert",)

# Every public name: the version, the submodules above and the lazy table (a test checks that
# each one resolves, and that dir(effnet) lists them).
__all__ = ["__version__", *_SUBMODULES, *sorted(_LAZY)]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None and name not in _SUBMODULES:
        raise AttributeError(f"module 'effnet' has no attribute {name!r}")
    import importlib

    value = importlib.import_module(f"effnet.{name}") if module is None else None
    if value is None:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
