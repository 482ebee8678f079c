"""The top-level namespace: every public name resolves, `dir(effnet)` lists it, importing effnet
loads no torch, and `effnet.create_transform` is the preprocessing effnet itself uses."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.data.transforms import eval_transform


def test_every_public_name_resolves_and_is_listed():
    assert len(effnet.__all__) == len(set(effnet.__all__))
    for name in effnet.__all__:
        assert getattr(effnet, name) is not None, name
    assert set(effnet.__all__) <= set(dir(effnet))
    for name in ("create_model", "train", "evaluate_checkpoint", "create_transform", "convert",
                 "predict", "export_model", "scale", "search", "sweep", "cam_images", "Callback"):
        assert name in effnet.__all__
    with pytest.raises(AttributeError):
        effnet.no_such_name  # noqa: B018


def test_import_effnet_loads_no_torch():
    code = "import sys, effnet; effnet.__all__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_create_transform_is_the_models_own_preprocessing():
    model = effnet.create_model("efficientnet_lite0")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 280, 3), np.uint8))
    ours = effnet.create_transform(model)(img)
    assert torch.equal(ours, eval_transform(model.pretrained_cfg)(img))
    assert torch.equal(effnet.create_transform("efficientnet_lite0")(img), ours)
    assert torch.equal(effnet.create_transform(effnet.data_config("efficientnet_lite0"))(img), ours)
    assert ours.shape == (3, 224, 224)
    small = effnet.create_transform(model, image_size=96)(img)
    assert small.shape == (3, 96, 96)
    train = effnet.create_transform(model, train=True, augment="none")(img)
    assert train.shape == (3, 224, 224)


def test_create_transform_refuses_what_it_cannot_use():
    with pytest.raises(ValueError, match="expected a model"):
        effnet.create_transform(3)
    with pytest.raises(ValueError, match="lacks"):
        effnet.create_transform({"mean": (0.5,) * 3})
    with pytest.raises(ValueError, match="train=True"):
        effnet.create_transform("efficientnet_b0", hflip=0.5)
