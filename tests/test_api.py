"""effnet.api: one build record per model, files with one image size, old files, one phi rule."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import effnet
from effnet import specs
from effnet.api import create_model, load_model, resolve_model, save_model
from effnet.cli import main
from effnet.lab.scale import scale
from effnet.model import BuildRecord, EfficientNet
from effnet.scaling import ModelPlan, plan, resolve_scaling
from effnet.weights.serialize import read_model_file

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0_1"  # written by effnet 0.1 (main cabc358)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _header(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["effnet"])


def _tiny(**kw):
    kw = {"num_classes": 4, "width_mult": 0.25, "depth_mult": 0.25, "image_size": 48, **kw}
    return create_model("efficientnet_b0", **kw).eval()


# -- the build record ------------------------------------------------------------------------


def test_model_built_from_a_plan_saves_and_loads(tmp_path):
    p = plan(specs.EFFICIENTNETV2_S, 0.25, 0.25, 0.1, padding="same", shortcut="projection")
    model = EfficientNet(p, num_classes=3, in_chans=2, drop_rate=0.1).eval()
    path = effnet.save_model(model, tmp_path / "plan.safetensors")
    loaded = effnet.load_model(path)
    assert type(loaded) is EfficientNet and loaded.record == model.record
    assert loaded.plan == p and loaded.plan.padding == "same" and loaded.variant == p.name
    x = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_record_is_the_one_description_and_build_args_its_flat_view():
    model = _tiny(act="relu", shortcut="projection")
    assert isinstance(model.record, BuildRecord)
    assert model.plan is model.record.plan and model.num_classes == model.record.num_classes
    args = model.build_args
    assert args["name"] == "efficientnet_b0" and args["act"] == "relu"
    assert (args["width_mult"], args["depth_mult"], args["shortcut"]) == (0.25, 0.25, "projection")
    assert "image_size" not in args  # the data config holds the image size
    assert BuildRecord.from_dict(json.loads(json.dumps(model.record.to_dict()))) == model.record
    for attr in ("padding", "shortcut_mode"):  # no attributes bolted on the module any more
        assert attr not in vars(model)


def test_reset_classifier_is_recorded_so_the_file_reloads(tmp_path):
    model = _tiny()
    model.reset_classifier(7)
    assert model.record.num_classes == 7
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert loaded.num_classes == 7 and loaded.classifier.out_features == 7
    with pytest.raises(ValueError, match="num_classes must be >= 0, got -1"):
        model.reset_classifier(-1)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"plan": {"blocks": []}}, "missing 6 required positional arguments: 'name'"),
        ({"plan": {**_tiny().plan.to_dict(), "blocks": []}}, "has no blocks"),
        ({"num_classes": "ten"}, "num_classes"),
        ({"plan_extra": 1}, "no field 'plan_extra'"),
        ({"in_chans": 0}, "in_chans"),
    ],
)
def test_bad_build_records_are_one_line_errors(change, match):
    data = {**_tiny().record.to_dict(), **change}
    with pytest.raises(ValueError, match=match) as e:
        BuildRecord.from_dict(data)
    assert "\n" not in str(e.value)


def test_a_bad_block_field_is_named():
    data = _tiny().plan.to_dict()
    data["blocks"][0]["in_ch"] = "8"
    with pytest.raises(ValueError, match=r"BlockPlan\.in_ch must be int"):
        ModelPlan.from_dict(data)


def test_a_file_cannot_claim_a_larger_architecture_than_its_weights(tmp_path):
    model = _tiny()
    path = save_model(model, tmp_path / "m.safetensors")
    state, meta = read_model_file(path)
    meta["build_args"]["plan"]["head_ch"] = 1_000_000  # ~4 GB of classifier if it were built
    torch.save({"model": state, **meta}, tmp_path / "big.pt")
    with pytest.raises(ValueError, match=r"\.weight has shape .*needs .*1000000") as e:
        load_model(tmp_path / "big.pt")
    assert "\n" not in str(e.value)


# -- one image size -------------------------------------------------------------------------


def _size_keys(obj, prefix=""):
    """Every key in nested metadata whose name says it is an image size or resolution."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if any(w in k for w in ("size", "resolution")) and k != "drop_rate":
                found.append((prefix + k, v))
            found += _size_keys(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _size_keys(v, f"{prefix}{i}.")
    return found


def test_a_model_file_holds_exactly_one_image_size(tmp_path):
    model = _tiny(image_size=80)
    assert effnet.data_config(model)["input_size"] == (3, 80, 80)
    path = save_model(model, tmp_path / "m.safetensors")
    assert _size_keys(_header(path)) == [("data_config.input_size", [3, 80, 80])]
    assert load_model(path).pretrained_cfg["input_size"] == (3, 80, 80)
    # A registry name still reports its recipe's training resolution; a model does not.
    assert effnet.data_config("efficientnetv2_s")["train_size"] == 300
    assert "train_size" not in effnet.data_config(create_model("efficientnetv2_s", device="meta"))


def test_an_old_file_with_two_image_sizes_resaves_with_one(tmp_path):
    old = _header(FIXTURE / "model_best.safetensors")
    assert old["build_args"]["image_size"] == 224
    assert old["data_config"]["input_size"] == [3, 32, 32]
    model = load_model(FIXTURE)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)  # what it was trained and saved at
    again = _header(save_model(model, tmp_path / "m.safetensors"))
    assert _size_keys(again) == [("data_config.input_size", [3, 32, 32])]


# -- files written by effnet 0.1 -------------------------------------------------------------


def test_old_run_folder_loads_and_predicts_a_digit(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images[0] * (255 / 16)).astype(np.uint8)  # an 8x8 "0", 0..16 -> 0..255
    image = tmp_path / "digit.png"
    Image.fromarray(pixels).resize((32, 32)).save(image)
    models = [load_model(p) for p in (FIXTURE, FIXTURE / "model_best.safetensors")]
    ckpt = load_model(FIXTURE / "checkpoint_last.pt")
    assert all(m.record == ckpt.record for m in models)
    assert models[0].record.name == "efficientnet_b0"
    assert models[0].class_names == [str(i) for i in range(10)]
    for source in (FIXTURE, models[0]):
        (result,) = effnet.predict(source, image, topk=3)
        assert result["image"] == str(image) and len(result["top"]) == 3
        assert all(t["label"] == str(t["index"]) for t in result["top"])
        assert 0 < sum(t["prob"] for t in result["top"]) <= 1 + 1e-6
    # Re-saved in this format, the old model computes exactly the same function.
    new = load_model(save_model(models[0], tmp_path / "m.safetensors"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(models[0](x), new(x))


def test_old_build_args_with_an_unknown_key_are_refused(tmp_path):
    state, meta = read_model_file(FIXTURE / "checkpoint_last.pt")
    meta["build_args"] = {**meta["build_args"], "pretrained": "timm"}
    torch.save({"model": state, **meta}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="unknown build_args key 'pretrained'"):
        load_model(tmp_path / "c.pt")


# -- resolve_model ----------------------------------------------------------------------------


def test_resolve_model_takes_modules_names_files_and_run_folders(tmp_path):
    model = _tiny()
    assert resolve_model(model) is model
    assert resolve_model("efficientnet_lite0").variant == "efficientnet_lite0"
    path = save_model(model, tmp_path / "run" / "model_best.safetensors")
    assert resolve_model(path).record == model.record
    assert resolve_model(tmp_path / "run").record == model.record
    (tmp_path / "m.onnx").write_bytes(b"not really")
    with pytest.raises(ValueError, match="is an ONNX file"):
        resolve_model(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="applies to model names"):
        resolve_model(path, pretrained="timm")


# -- the one scaling rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [{"alpha": 1.4}, {"phi": 2.0}, {"beta": 1.2, "gamma": 1.3}, {"phi": 0.5, "alpha": 1.3}],
)
def test_create_model_and_scale_resolve_phi_alike(kw, capsys):
    model = create_model("efficientnet", device="meta", **kw)
    res = scale("efficientnet_b0", **kw)
    s = resolve_scaling(**kw)
    assert model.plan == plan(specs.EFFICIENTNET, s.width, s.depth)
    assert _params(model) == res["params"]
    assert model.pretrained_cfg["input_size"][-1] == res["image_size"] == s.image_size(224)
    argv = ["scale", "efficientnet_b0", "--json"]
    for k, v in kw.items():
        argv += [f"--{k}", str(v)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["params"] == _params(model)


def test_alpha_without_phi_means_phi_1_everywhere():
    assert resolve_scaling(alpha=1.4).phi == 1.0
    model = create_model("efficientnet", alpha=1.4, device="meta")
    assert _params(model) > _params(create_model("efficientnet_b0", device="meta"))
    assert model.plan == create_model("efficientnet", phi=1, alpha=1.4, device="meta").plan


@pytest.mark.parametrize(
    "kw", [{"alpha": 0.9}, {"phi": float("nan")}, {"gamma": -2}, {"phi": 1, "beta": 0.5}]
)
def test_both_paths_refuse_bad_coefficients_with_the_same_line(kw):
    with pytest.raises(ValueError) as built:
        create_model("efficientnet", device="meta", **kw)
    with pytest.raises(ValueError) as scaled:
        scale("efficientnet_b0", **kw)
    assert str(built.value) == str(scaled.value) and "\n" not in str(built.value)


def test_compound_and_explicit_multipliers_together_are_refused():
    with pytest.raises(ValueError, match=r"\(width_mult\), not both; got phi=1, width_mult=2"):
        create_model("efficientnet", phi=1, width_mult=2, device="meta")
    with pytest.raises(ValueError, match=r"\(width\), not both; got phi=1, width=2"):
        scale("efficientnet_b0", phi=1, width=2)
