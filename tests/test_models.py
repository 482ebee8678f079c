import pytest
import torch

import effnet
from effnet.analysis.flops import count_macs

GOLDEN_PARAMS = {
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
    "efficientnet_b8": 87_413_142,
    "efficientnet_l2": 480_309_308,
    "efficientnet_lite0": 4_652_008,
    "efficientnet_lite1": 5_416_680,
    "efficientnet_lite2": 6_092_072,
    "efficientnet_lite3": 8_197_096,
    "efficientnet_lite4": 13_006_568,
    "efficientnetv2_s": 21_458_488,
    "efficientnetv2_m": 54_139_356,
    "efficientnetv2_l": 118_515_272,
    "efficientnetv2_xl": 208_119_808,
    "efficientnetv2_b0": 7_139_704,
    "efficientnetv2_b1": 8_141_052,
    "efficientnetv2_b2": 10_096_086,
    "efficientnetv2_b3": 14_358_406,
}

# MACs measured on the reference implementations (architecture.md, [MEAS]) at native resolution.
REFERENCE_MACS = {
    "efficientnet_b0": (224, 0.386e9),
    "efficientnet_b1": (240, 0.687e9),
    "efficientnet_b2": (260, 0.994e9),
    "efficientnet_b3": (300, 1.827e9),
    "efficientnet_b4": (380, 4.394e9),
    "efficientnet_b5": (456, 10.266e9),
    "efficientnet_b6": (528, 19.068e9),
    "efficientnet_b7": (600, 37.746e9),
    "efficientnet_b8": (672, 62.597e9),
    "efficientnet_l2": (800, 475.7e9),
    "efficientnet_lite0": (224, 0.385e9),
    "efficientnet_lite1": (240, 0.600e9),
    "efficientnet_lite2": (260, 0.860e9),
    "efficientnet_lite3": (280, 1.383e9),
    "efficientnet_lite4": (300, 2.553e9),
    "efficientnetv2_s": (384, 8.37e9),
    "efficientnetv2_m": (480, 24.58e9),
    "efficientnetv2_l": (480, 56.08e9),
    "efficientnetv2_xl": (512, 93.35e9),
    "efficientnetv2_b0": (224, 0.718e9),
    "efficientnetv2_b1": (240, 1.197e9),
    "efficientnetv2_b2": (260, 1.698e9),
    "efficientnetv2_b3": (300, 3.011e9),
}

# Paper Table 2 (arXiv:1905.11946 v5): params (M), FLOPs (B), rounded in the paper.
PAPER_TABLE2 = {
    "efficientnet_b0": (5.3, 0.39),
    "efficientnet_b1": (7.8, 0.70),
    "efficientnet_b2": (9.2, 1.0),
    "efficientnet_b3": (12, 1.8),
    "efficientnet_b4": (19, 4.2),
    "efficientnet_b5": (30, 9.9),
    "efficientnet_b6": (43, 19),
    "efficientnet_b7": (66, 37),
}


def test_every_variant_is_registered():
    assert sorted(effnet.list_models()) == sorted(GOLDEN_PARAMS)
    assert effnet.list_models("*lite*") == [f"efficientnet_lite{i}" for i in range(5)]


@pytest.mark.parametrize("name", sorted(GOLDEN_PARAMS))
def test_golden_param_count(name):
    model = effnet.create_model(name, device="meta")
    assert sum(p.numel() for p in model.parameters()) == GOLDEN_PARAMS[name]
    assert effnet.model_info(name)["params"] == GOLDEN_PARAMS[name]


@pytest.mark.parametrize("name", sorted(REFERENCE_MACS))
def test_macs_match_reference_within_1_percent(name):
    res, ref = REFERENCE_MACS[name]
    info = effnet.model_info(name, res)
    assert info["image_size"] == res
    assert abs(info["macs"] - ref) / ref < 0.01
    # The analytic count from the plan equals an independent hook count on the module tree.
    hooked = count_macs(effnet.create_model(name, device="meta"), (3, res, res))
    assert hooked["total"] == info["macs"]
    assert (
        sum(s["macs"] for s in info["stages"])
        + info["stem"]["macs"]
        + info["head"]["macs"]
        + info["classifier"]["macs"]
        == info["macs"]
    )


def test_b0_macs_exact():
    assert effnet.model_info("efficientnet_b0")["macs"] == 385_814_752


def test_print_macs_beside_paper_table2(capsys):
    rows = []
    for name, (params_m, flops_b) in PAPER_TABLE2.items():
        info = effnet.model_info(name)
        rows.append((name, info["params"] / 1e6, params_m, info["macs"] / 1e9, flops_b))
    with capsys.disabled():
        print("\nmodel              params(M) paper   MACs(B) paper  diff")
        for name, p, pp, m, pm in rows:
            print(f"{name:<18} {p:8.2f} {pp:5} {m:9.3f} {pm:5}  {100 * (m - pm) / pm:+.1f}%")
    for _name, p, pp, m, pm in rows:
        # The paper rounds; B4/B5 differ by up to 5% (see architecture.md).
        assert abs(p - pp) / pp < 0.05
        assert abs(m - pm) / pm < 0.06


def test_drop_path_rates_follow_reference_formula():
    model = effnet.create_model("efficientnet_b0", drop_path_rate=0.2)
    blocks = [b for stage in model.stages for b in stage]
    assert len(blocks) == 16
    expected = [0.2 * i / 16 for i in range(16)]
    assert [round(b.drop_path, 10) for b in model.plan.blocks] == [round(e, 10) for e in expected]
    applied = [b.drop_path.p for b in blocks if b.has_skip]
    assert applied == [e for e, b in zip(expected, blocks, strict=True) if b.has_skip]
    assert len(applied) == 9  # only blocks with an identity shortcut drop


@pytest.mark.parametrize("name", sorted(GOLDEN_PARAMS))
def test_drop_path_every_variant(name):
    p = effnet.create_model(name, device="meta", drop_path_rate=0.3).plan
    n = len(p.blocks)
    assert [b.drop_path for b in p.blocks] == [0.3 * i / n for i in range(n)]


SMALL = [
    n
    for n in GOLDEN_PARAMS
    if n not in {"efficientnet_l2", "efficientnetv2_xl", "efficientnetv2_l", "efficientnet_b8"}
]


@pytest.mark.parametrize("name", SMALL)
def test_forward_backward_small_resolution(name):
    model = effnet.create_model(name, num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert model.stem.conv.weight.grad is not None
    assert torch.isfinite(model.stem.conv.weight.grad).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["efficientnet_l2", "efficientnetv2_xl", "efficientnetv2_l", "efficientnet_b8"]
)
def test_forward_backward_big_variants(name):
    model = effnet.create_model(name, num_classes=3)
    out = model(torch.randn(1, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (1, 3)


@pytest.mark.parametrize(
    "name,chs",
    [
        ("efficientnet_b0", [16, 24, 40, 112, 320, 1280]),
        ("efficientnet_lite0", [16, 24, 40, 112, 320, 1280]),
        ("efficientnetv2_s", [24, 48, 64, 160, 256, 1280]),
        ("efficientnetv2_b0", [16, 32, 48, 112, 192, 1280]),
    ],
)
def test_features_only_shapes(name, chs):
    model = effnet.create_model(name, features_only=True, out_indices=(0, 1, 2, 3, 4, 5)).eval()
    feats = model(torch.randn(1, 3, 96, 128))
    assert model.channels() == chs
    assert model.reduction() == [2, 4, 8, 16, 32, 32]
    for f, c, r in zip(feats, chs, model.reduction(), strict=True):
        assert f.shape == (1, c, 96 // r, 128 // r)
    # Subsets and negative indices.
    head_only = effnet.create_model(name, features_only=True, out_indices=(-1,)).eval()
    (h,) = head_only(torch.randn(1, 3, 64, 64))
    assert h.shape == (1, chs[-1], 2, 2)
    two = effnet.create_model(name, features_only=True, out_indices=(1, 3))
    assert [f.shape[1] for f in two(torch.randn(1, 3, 64, 64))] == [chs[1], chs[3]]


def test_forward_features_head_and_reset_classifier():
    model = effnet.create_model("efficientnet_b0", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 1280, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 1280)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, 1280)


def test_model_info_per_stage():
    info = effnet.model_info("efficientnet_b0")
    assert [s["repeats"] for s in info["stages"]] == [1, 2, 2, 3, 3, 4, 1]
    assert [s["out_ch"] for s in info["stages"]] == [16, 24, 40, 80, 112, 192, 320]
    assert [s["params"] for s in info["stages"]] == [
        1448,
        16714,
        46640,
        242930,
        543148,
        2026348,
        717232,
    ]
    assert info["stem"]["params"] == 928 and info["head"]["params"] == 412_160
    assert effnet.model_info("efficientnet_b0", image_size=448)["macs"] > 3.9 * 385_814_752
