import math

import pytest

import effnet
from effnet import specs
from effnet.api import create_model
from effnet.registry import resolve
from effnet.scaling import compound_coefficients, plan, round_channels, round_repeats


@pytest.mark.parametrize(
    "c,m,limit,expected",
    [
        (32, 1.1, 0.9, 32),  # 35.2 -> 32 (>= 90% kept)
        (16, 1.1, 0.9, 16),  # 17.6 -> 16
        (32, 1.2, 0.9, 40),  # 38.4 -> 40
        (32, 1.4, 0.9, 48),  # 44.8 -> 48
        (32, 4.3, 0.9, 136),  # L2 stem
        (16, 1.2, 0.9, 24),  # 19.2 -> 16 < 0.9 * 19.2 -> +8
        (16, 1.2, 0.0, 16),  # V2 drops the 10% guard
        (4, 1.0, 0.9, 8),  # never below the divisor
    ],
)
def test_round_channels(c, m, limit, expected):
    assert round_channels(c, m, round_limit=limit) == expected


def test_round_repeats_is_ceil():
    assert round_repeats(3, 1.1) == 4
    assert round_repeats(4, 3.1) == 13
    assert round_repeats(1, 1.0) == 1
    assert round_repeats(2, 1.0) == 2  # no float fuzz pushing 2.0000001 to 3


def test_compound_coefficients():
    assert compound_coefficients(0) == (1.0, 1.0, 1.0)
    d, w, r = compound_coefficients(1)
    assert (d, w, r) == (1.2, 1.1, 1.15)
    assert math.isclose(d * w**2 * r**2, 1.9203, rel_tol=1e-4)
    d, w, r = compound_coefficients(7)
    assert math.isclose(w, 1.1**7) and math.isclose(d, 1.2**7)


def test_published_b7_is_not_phi_7():
    # The released B7 (w 2.0, d 3.1, 600 px) is hand-picked, not alpha^7, beta^7, gamma^7.
    d, w, r = compound_coefficients(7)
    assert abs(w - 2.0) > 0.04 and abs(d - 3.1) > 0.4
    assert round(224 * r) != 600


def test_phi_scaling_builds_scaled_b0():
    m = create_model("efficientnet", phi=1.0, device="meta")
    _, w, d, res = resolve("efficientnet", phi=1.0)
    assert (w, d) == (pytest.approx(1.1), pytest.approx(1.2))
    assert res == 256  # 224 * 1.15 = 257.6 -> multiple of 8
    assert m.pretrained_cfg["input_size"] == (3, 256, 256)
    assert m.plan == plan(specs.EFFICIENTNET, 1.1, 1.2)
    half = create_model("efficientnet", phi=0.5, device="meta")
    b0 = create_model("efficientnet_b0", device="meta")
    n = lambda mm: sum(p.numel() for p in mm.parameters())  # noqa: E731
    assert n(b0) < n(half) < n(m)
    small = create_model("efficientnet", phi=-1, device="meta")
    assert n(small) < n(b0)
    custom = create_model("efficientnet", phi=1, alpha=1.0, beta=1.0, gamma=2.0, device="meta")
    assert n(custom) == n(b0)
    assert custom.pretrained_cfg["input_size"][-1] == 448


def test_explicit_multipliers_and_lite_rules():
    m = create_model("efficientnet_b0", width_mult=2.0, depth_mult=1.0, device="meta")
    assert m.plan.stem_ch == 64 and m.plan.head_ch == 2560
    lite = create_model("efficientnet_lite4", device="meta").plan
    assert lite.stem_ch == 32 and lite.head_ch == 1280  # fixed stem/head
    assert len(lite.stage_blocks(0)) == 1 and len(lite.stage_blocks(6)) == 1
    assert all(b.se_ch == 0 for b in lite.blocks) and lite.act == "relu6"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"phi": float("nan")}, "phi"),
        ({"phi": 1, "alpha": 0.5}, "alpha"),
        ({"phi": 1, "beta": float("inf")}, "beta"),
        ({"gamma": -2}, "gamma"),
        ({"width_mult": 0}, "width_mult"),
        ({"depth_mult": -1}, "depth_mult"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"act": "swishy"}, "activation"),
        ({"padding": "valid"}, "padding"),
        ({"shortcut": "dense"}, "shortcut"),
        ({"bn_eps": 0}, "bn_eps"),
        ({"features_only": True, "out_indices": (9,)}, "out_indices"),
    ],
)
def test_invalid_arguments_raise_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        create_model("efficientnet_b0", device="meta", **kwargs)
    assert "\n" not in str(e.value)


def test_unknown_model_suggests_close_matches():
    with pytest.raises(ValueError, match="did you mean efficientnet_b0"):
        effnet.create_model("efficientnet_bo")
    with pytest.raises(ValueError, match="unknown model"):
        effnet.create_model("resnet50")


@pytest.mark.parametrize("act", ["silu", "relu", "relu6", "leaky_relu", "elu", "hardswish", "gelu"])
def test_activation_override(act):
    import torch

    m = create_model("efficientnet_b0", act=act, num_classes=2)
    assert m.plan.act == act
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_se_toggle_bn_and_projection_shortcut():
    import torch

    no_se = create_model("efficientnet_b0", se=False, device="meta")
    assert all(b.se_ch == 0 for b in no_se.plan.blocks)
    m = create_model("efficientnet_b0", bn_eps=1e-5, bn_momentum=0.1, device="meta")
    assert m.stem.bn.eps == 1e-5 and m.stem.bn.momentum == 0.1
    proj = create_model("efficientnet_b0", shortcut="projection", num_classes=2)
    blocks = [b for s in proj.stages for b in s]
    assert all(b.has_skip for b in blocks)
    n_proj = sum(isinstance(b.shortcut, torch.nn.Sequential) for b in blocks)
    assert n_proj == 7  # the first block of every stage lacks an identity path
    assert proj(torch.randn(1, 3, 64, 64)).shape == (1, 2)
    info = effnet.model_info(proj, 224)
    base = effnet.model_info("efficientnet_b0", 224)
    assert info["macs"] > base["macs"]
