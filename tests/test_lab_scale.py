import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import effnet
from effnet.analysis.flops import count_macs
from effnet.lab.baselines import BASELINES, Baseline, Stage, baseline_plan, build, count
from effnet.lab.paper import TABLE2, TABLE3
from effnet.lab.scale import scale

REPO_ROOT = Path(__file__).resolve().parents[1]

# Table 3 rows where the natural reading of the paper misses by more than 5%, with the reason the
# test checks instead (see docs/reproduction.md).
KNOWN = {
    ("mobilenetv1", 1.0, 1.0, 1.0),  # 0.569B = the MobileNetV1 paper's 569M, printed as "0.6B"
    ("resnet50", 4.0, 1.0, 1.0),  # the d=4 and w=2 FLOPs look swapped in the paper
    ("resnet50", 1.0, 2.0, 1.0),
}


@pytest.mark.parametrize("row", sorted(TABLE3))
def test_table3_macs(row):
    base, d, w, r = row
    paper = TABLE3[row][0]
    got = scale(base, depth=d, width=w, resolution=r)["macs"] / 1e9
    if row not in KNOWN:
        assert got == pytest.approx(paper, rel=0.05)
    elif base == "mobilenetv1":
        assert got == pytest.approx(0.569, abs=0.0005)  # arXiv:1704.04861 Table 1: 569M
        assert round(got, 1) == paper
        assert abs(got / paper - 1) > 0.05  # documented as a miss, not hidden
    else:
        # Swapped: our depth-4 ResNet matches the paper's width-2 row and vice versa.
        other = ("resnet50", 1.0, 2.0, 1.0) if d == 4 else ("resnet50", 4.0, 1.0, 1.0)
        assert got == pytest.approx(TABLE3[other][0], rel=0.01)
        assert abs(got / paper - 1) > 0.05


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_table2_params_and_macs(name):
    params, macs, _ = TABLE2[name]
    info = effnet.model_info(name)
    assert info["params"] / 1e6 == pytest.approx(params, rel=0.05)
    assert info["macs"] / 1e9 == pytest.approx(macs, rel=0.05)


@pytest.mark.parametrize(
    "name,tv,kwargs",
    [
        ("resnet50", "resnet50", {}),
        ("mobilenetv2", "mobilenet_v2", {}),
        ("mobilenetv2", "mobilenet_v2", {"width_mult": 2.0}),
        ("mobilenetv2", "mobilenet_v2", {"width_mult": 0.5}),
    ],
)
def test_baseline_params_match_torchvision(name, tv, kwargs):
    w = kwargs.get("width_mult", 1.0)
    p = baseline_plan(BASELINES[name], width=w)
    with torch.device("meta"):
        ref = getattr(torchvision.models, tv)(**kwargs)
    assert count(p, 224)["params"] == sum(t.numel() for t in ref.parameters())


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("d,w,res", [(1.0, 1.0, 224), (1.4, 1.2, 288), (2.0, 0.5, 160)])
def test_analytic_count_equals_built_module(name, d, w, res):
    p = baseline_plan(BASELINES[name], d, w)
    with torch.device("meta"):
        m = build(p)
    c = count(p, res)
    assert count_macs(m, (3, res, res))["total"] == c["macs"]
    assert sum(t.numel() for t in m.parameters()) == c["params"]


def test_built_baseline_runs():
    m = build(baseline_plan(BASELINES["mobilenetv2"], 0.5, 0.5)).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_depth_scaling_is_ceil_per_stage():
    p = baseline_plan(BASELINES["resnet50"], depth=1.4)
    reps = [sum(b.stage == s for b in p.blocks) for s in range(4)]
    assert reps == [5, 6, 9, 5]  # ceil(1.4 * [3, 4, 6, 3])


def test_compound_phi_and_ratios():
    s = scale("efficientnet_b0", phi=1)
    assert (s["depth"], s["width"], s["resolution"]) == pytest.approx((1.2, 1.1, 1.15))
    assert s["image_size"] == 256
    assert s["theory_ratio"] == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    assert s["phi_ratio"] == 2.0
    assert s["macs_ratio"] == pytest.approx(s["macs"] / s["base_macs"])
    b1 = scale("efficientnet_b0", depth=1.1)  # registered model: its own coefficients multiply
    assert b1["macs"] == effnet.model_info("efficientnet_b1", 224)["macs"]
    assert (b1["total_depth"], b1["total_width"]) == pytest.approx((1.1, 1.0))
    b3 = scale("efficientnet_b3", width=1.0)
    assert (b3["total_depth"], b3["total_width"]) == pytest.approx((1.4, 1.2))
    assert effnet.scale is scale


def test_user_spec():
    mine = Baseline("tiny", (Stage("dwsep", r=2, c=32, s=2), Stage("ir", r=2, c=64, s=2, e=4)))
    s = scale(mine, width=2.0)
    assert s["base"] == "tiny" and s["stages"][1]["out_ch"] == 128
    assert s["macs"] > 3 * s["base_macs"]
    fam = scale(effnet.specs.EFFICIENTNET, phi=0)
    assert fam["macs"] == effnet.model_info("efficientnet_b0")["macs"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"phi": 1, "depth": 2}, "not both"),
        ({"alpha": 0.9}, "alpha"),
        ({"width": 0}, "width"),
        ({"resolution": float("nan")}, "resolution"),
    ],
)
def test_bad_coefficients(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scale("mobilenetv2", **kwargs)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "effnet", *args], capture_output=True, text=True, env=env
    )


def test_cli_scale_table_and_json():
    r = _cli("scale", "mobilenetv2", "--depth", "4")
    assert r.returncode == 0, r.stderr
    assert "MACs ratio" in r.stdout and "1.220 B" in r.stdout
    r = _cli("scale", "resnet50", "--phi", "1", "--json")
    data = json.loads(r.stdout)
    assert data["image_size"] == 256 and len(data["stages"]) == 4


@pytest.mark.parametrize(
    "args", [("scale", "resnet5"), ("scale", "resnet50", "--phi", "1", "--width", "2")]
)
def test_cli_scale_bad_input_is_one_line(args):
    r = _cli(*args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "error" in r.stderr
