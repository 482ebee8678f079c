"""ImageNet-1k class names (index order of every 1000-class EfficientNet weight set)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index i = logit i (shipped as imagenet_classes.txt)."""
    text = resources.files("effnet.weights").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names
