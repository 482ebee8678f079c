"""Helpers shared by the reliability tests (importable: pytest puts this folder on sys.path)."""

import effnet


def tiny_model(num_classes: int = 4):
    """The smallest real EfficientNet: fast to save, load and hash."""
    return effnet.create_model(
        "efficientnet_b0", num_classes=num_classes, width_mult=0.25, depth_mult=0.25, image_size=32
    )
