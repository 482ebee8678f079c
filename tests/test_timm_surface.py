"""Issue 15, sections 1 and 2: the timm / torchvision model surface, checked against timm and
torchvision themselves, and weights that go back out (``effnet.convert.to_timm`` /
``to_torchvision``, ``effnet export --format timm|torchvision``).

Weights go from effnet to the upstream model through ``to_timm`` / ``to_torchvision`` (strict
loads), so every comparison runs both libraries on the same tensors, in eval mode.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import effnet
from effnet.api import create_model
from effnet.cli import main
from effnet.convert import timm_name, to_timm, to_torchvision, torchvision_name
from effnet.deploy.export import export_model
from effnet.model import EfficientNet, EfficientNetFeatures
from effnet.weights.convert import convert_state_dict
from effnet.weights.export_keys import TIMM_NAMES, TORCHVISION_NAMES
from effnet.weights.serialize import load_model, save_model

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

ROOT = Path(__file__).resolve().parents[1]
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
ODD = torch.randn(2, 3, 65, 71, generator=torch.Generator().manual_seed(1))  # SAME pads unevenly


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so that a mismatched mapping shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


def _effnet(name: str = "efficientnet_b0", **kw) -> nn.Module:
    """A model with the BN eps of its upstream twin: 1e-5 symmetric (PyTorch), 1e-3 "same"."""
    kw.setdefault("bn_eps", 1e-3 if kw.get("padding") == "same" else 1e-5)
    return _randomize_bn(create_model(name, **kw))


def _timm_twin(model: nn.Module, **kw) -> nn.Module:
    """timm's model of ``model``'s architecture, holding ``model``'s weights."""
    ref = timm.create_model(
        timm_name(model),
        num_classes=model.num_classes,
        global_pool=model.pool.pool_type,
        **kw,
    )
    ref.load_state_dict(to_timm(model), strict=True)
    return ref.eval()


def _close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-4) -> None:
    assert got.shape == want.shape
    err = (got - want).abs().max().item() / max(want.abs().max().item(), 1.0)
    assert err < tol, f"relative error {err:.3g}"


# -- global pooling, the unpooled map, head_hidden_size ------------------------------------------


def test_global_pool_types_match_timm_numerically():
    model = _effnet(num_classes=5)
    ref = _timm_twin(model)
    for pool in ("avg", "max", "avgmax", "catavgmax"):
        model.reset_classifier(5, global_pool=pool)
        ref.reset_classifier(5, global_pool=pool)
        ref.load_state_dict(to_timm(model))  # the fresh classifier, copied over
        assert model.head_hidden_size == ref.head_hidden_size
        assert model.num_features == ref.num_features == 1280
        assert model.classifier.in_features == ref.classifier.in_features
        assert model.global_pool.pool_type == pool == model.record.global_pool
        with torch.no_grad():
            feats = model.forward_features(X)
            _close(model.forward_head(feats, pre_logits=True), ref.forward_head(feats, True))
            _close(model(X), ref(X))
    assert model.head_hidden_size == 2560  # catavgmax: avg and max side by side


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax", "catavgmax", ""])
def test_global_pool_at_build_as_timm(pool):
    model = create_model("efficientnet_b0", num_classes=0, global_pool=pool, device="meta")
    with torch.device("meta"):
        ref = timm.create_model("efficientnet_b0", num_classes=0, global_pool=pool)
    assert model.pool.pool_type == ref.global_pool.pool_type == pool
    assert model.head_hidden_size == ref.head_hidden_size
    assert model.pool.feat_mult() == ref.global_pool.feat_mult()
    assert model.pool.is_identity() == ref.global_pool.is_identity()


def test_num_classes_0_and_global_pool_empty_return_the_unpooled_map():
    model = _effnet(num_classes=0, global_pool="")
    ref = _timm_twin(model)
    with torch.no_grad():
        out, want = model(X), ref(X)
        assert out.shape == want.shape == (2, 1280, 2, 2)
        _close(out, want)
        assert torch.equal(out, model.forward_features(X))
    # reset_classifier keeps the pool when not given one, as timm's does
    model.reset_classifier(0)
    assert model.pool.pool_type == ""
    model.reset_classifier(0, "avg")
    assert model(X).shape == (2, 1280)
    model.reset_classifier(0, "")
    assert model(X).dim() == 4


def test_global_pool_is_recorded_and_bad_values_are_refused(tmp_path):
    model = create_model("efficientnet_b0", num_classes=3, global_pool="catavgmax")
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert loaded.pool.pool_type == "catavgmax" and loaded.classifier.in_features == 2560
    assert "global_pool" not in create_model("efficientnet_b0", device="meta").record.to_dict()
    with pytest.raises(ValueError, match=r"global_pool must be one of .* got 'mean'"):
        create_model("efficientnet_b0", global_pool="mean", device="meta")
    with pytest.raises(ValueError, match="got 'fastavg'"):
        model.reset_classifier(3, "fastavg")
    assert model.pool.pool_type == "catavgmax"  # a refused reset changes nothing


# -- pretrained_cfg / default_cfg ----------------------------------------------------------------

CFG_KEYS = (
    "classifier",
    "first_conv",
    "pool_size",
    "num_classes",
    "input_size",
    "crop_pct",
    "interpolation",
    "mean",
    "std",
)


@pytest.mark.parametrize(
    ("name", "ref_name", "differ"),
    [
        ("efficientnet_b0", "efficientnet_b0", ()),
        # effnet's Lite config resizes bilinearly (TF Lite's reference), timm's bicubically.
        ("efficientnet_lite0", "tf_efficientnet_lite0", ("interpolation",)),
    ],
)
def test_pretrained_cfg_keys_and_values_match_timm(name, ref_name, differ):
    model = create_model(name, device="meta")
    with torch.device("meta"):
        ref = timm.create_model(ref_name)
    cfg, want = model.pretrained_cfg, ref.pretrained_cfg
    assert model.default_cfg is cfg and ref.default_cfg == want
    for key in CFG_KEYS:
        if key in ("classifier", "first_conv"):  # each library's own module path
            mine, theirs = model.get_submodule(cfg[key]), ref.get_submodule(want[key])
            assert isinstance(mine, nn.Conv2d | nn.Linear)
            assert mine.weight.shape == theirs.weight.shape
        elif key in differ:
            assert cfg[key] != want[key]
        else:
            assert cfg[key] == want[key], key
    model.reset_classifier(10)
    assert model.pretrained_cfg["num_classes"] == 10  # the model's head, kept current


def test_pretrained_cfg_survives_reassignment_and_files(tmp_path):
    model = create_model("efficientnet_b0", image_size=96)
    model.pretrained_cfg = {"input_size": (3, 100, 100), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert model.pretrained_cfg["pool_size"] == (4, 4)  # ceil(100 / 32)
    assert model.pretrained_cfg["first_conv"] == "stem.conv"
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert loaded.pretrained_cfg == model.pretrained_cfg
    # a model straight from a plan has the architecture keys, and still no data config
    bare = EfficientNet(model.plan, num_classes=4)
    assert bare.pretrained_cfg["classifier"] == "classifier"
    assert "pool_size" not in bare.pretrained_cfg
    with pytest.raises(ValueError, match="carries no data config"):
        effnet.data_config(bare)


# -- forward_intermediates / prune_intermediate_layers -------------------------------------------

INTERMEDIATE_CALLS = [
    {},
    {"indices": 2},
    {"indices": [0, -1]},
    {"indices": (1, 3), "stop_early": True},
    {"indices": [2], "intermediates_only": True},
    {"indices": 1, "norm": True},
    {"extra_blocks": True},
    {"extra_blocks": True, "indices": [0, 4], "stop_early": True},
]


@pytest.mark.parametrize(
    ("name", "kw"),
    [("efficientnet_b0", {}), ("efficientnetv2_b0", {"padding": "same", "bn_eps": 1e-3})],
)
def test_forward_intermediates_matches_timm(name, kw):
    model = _effnet(name, **kw)
    ref = _timm_twin(model)
    assert [f["module"] for f in model.feature_info][:-1] == [
        f"stages.{f['module'].split('.')[1]}" for f in ref.feature_info
    ]
    with torch.no_grad():
        for call in INTERMEDIATE_CALLS:
            got, want = (
                model.forward_intermediates(ODD, **call),
                ref.forward_intermediates(ODD, **call),
            )
            if call.get("intermediates_only"):
                got, want = (None, got), (None, want)
            else:
                _close(got[0], want[0])
            assert len(got[1]) == len(want[1]), call
            for a, b in zip(got[1], want[1], strict=True):
                _close(a, b)


def test_forward_intermediates_refuses_bad_arguments():
    model = create_model("efficientnet_b0", device="meta")
    x = torch.empty(1, 3, 64, 64, device="meta")
    with pytest.raises(ValueError, match="in \\[1, 5\\], got 6"):
        model.forward_intermediates(x, indices=6)
    with pytest.raises(ValueError, match="got 5"):
        model.forward_intermediates(x, indices=[5])
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW', got 'NHWC'"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize(
    "kw",
    [
        {"indices": [1, 3]},
        {"indices": 1, "prune_head": False},
        {"indices": [1, 2], "prune_head": False},
        {"indices": [0, 3], "extra_blocks": True},
    ],
)
def test_prune_intermediate_layers_matches_timm(kw):
    model = _effnet()
    ref = _timm_twin(model)
    assert model.prune_intermediate_layers(**kw) == ref.prune_intermediate_layers(**kw)
    assert len(model.stages) == len(ref.blocks)
    assert model.num_features == ref.num_features
    assert model.head_hidden_size == ref.head_hidden_size
    assert model.num_classes == ref.num_classes
    with torch.no_grad():
        _close(model(X), ref(X))
        got = model.forward_intermediates(X, indices=kw["indices"], intermediates_only=True)
        want = ref.forward_intermediates(X, indices=kw["indices"], intermediates_only=True)
    for a, b in zip(got, want, strict=True):
        _close(a, b)


# -- feature_info, BackboneWithFPN, create_feature_extractor -------------------------------------


def test_feature_info_is_timms_object_and_effnets_list():
    full = create_model("efficientnet_b0", bn_eps=1e-5)
    feats = create_model("efficientnet_b0", features_only=True, out_indices=(1, 2, 3, 4))
    ref = timm.create_model("efficientnet_b0", features_only=True, out_indices=(1, 2, 3, 4))
    info = feats.feature_info
    assert info.channels() == ref.feature_info.channels() == feats.channels()
    assert info.reduction() == ref.feature_info.reduction() == feats.reduction()
    assert info.channels(0) == ref.feature_info.channels(0) == 16  # idx: all entries, as timm
    assert info.reduction([0, 2]) == ref.feature_info.reduction([0, 2])
    assert info.get_dicts(keys=["num_chs"]) == ref.feature_info.get_dicts(keys=["num_chs"])
    assert info.from_other((0,)).channels() == [16]
    for module in info.module_name():  # effnet's own module paths, in both models
        assert isinstance(feats.get_submodule(module), nn.Module)
        assert isinstance(full.get_submodule(module), nn.Module)
    # effnet's list API: the selected entries as dicts
    assert isinstance(info, list) and len(info) == 4 and info[0]["module"] == "stages.1"
    assert [f["num_chs"] for f in info] == [24, 40, 112, 320]
    assert info == [full.feature_info[i] for i in (1, 2, 3, 4)]
    assert copy.deepcopy(info).channels() == info.channels()
    # the maps themselves, with the same weights in both libraries
    _randomize_bn(full)
    ref.load_state_dict({k: v for k, v in to_timm(full).items() if k in ref.state_dict()})
    with torch.no_grad():
        mine = EfficientNetFeatures(full, (1, 2, 3, 4))(X)
        for a, b in zip(mine, ref.eval()(X), strict=True):
            _close(a, b)


def test_backbone_with_fpn_accepts_the_backbone():
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    feats = _effnet(features_only=True, out_indices=(1, 2, 3, 4))
    fpn = BackboneWithFPN(
        feats.as_sequential(), feats.return_layers, feats.feature_info.channels(), 32
    ).eval()
    with torch.no_grad():
        body = fpn.body(X)
        want = feats(X)
        out = fpn(X)
    assert list(body) == ["0", "1", "2", "3"]
    for got, ref in zip(body.values(), want, strict=True):
        assert torch.equal(got, ref)
    assert [o.shape[-1] for o in out.values()] == [64 // r for r in feats.reduction()] + [1]
    model = _effnet()
    with torch.no_grad():
        assert torch.equal(model.as_sequential()(X), model(X))


@pytest.mark.parametrize("fast", [False, True])
def test_create_feature_extractor_works(fast):
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    model = _effnet()
    if fast:
        effnet.accelerate(model, channels_last=False)
    _, eval_nodes = get_graph_node_names(model)
    assert "stem.conv" in eval_nodes and any(n.startswith("stages.6.") for n in eval_nodes)
    taps = {f["module"]: f"c{i}" for i, f in enumerate(model.feature_info)}
    extractor = create_feature_extractor(model, return_nodes=taps).eval()
    with torch.no_grad():
        got = extractor(X)
        final, inter = model.forward_intermediates(X)
    assert list(got) == list(taps.values())
    for a, b in zip(list(got.values()), [*inter, final], strict=True):
        if fast:  # eager runs the fused kernels, the FX graph the plain modules
            _close(a, b)
        else:
            assert torch.equal(a, b)


# -- torch.hub ---------------------------------------------------------------------------------


def test_hub_entry_takes_weights(tmp_path):
    src = create_model("efficientnet_lite0", num_classes=3)
    path = save_model(src, tmp_path / "m.safetensors")
    hub = torch.hub.load(
        str(ROOT), "efficientnet_lite0", source="local", weights=str(path), num_classes=3
    )
    assert hub.num_classes == 3
    for k, v in src.state_dict().items():
        assert torch.equal(hub.state_dict()[k], v)
    timm_file = tmp_path / "tf_efficientnet_lite0.pth"  # a timm file, read as create_model does
    torch.save(to_timm(src), timm_file)
    again = torch.hub.load(
        str(ROOT), "efficientnet_lite0", source="local", weights=timm_file, num_classes=3
    )
    assert again.build_args["padding"] == "same"
    _assert_same_state(again.state_dict(), src)
    with pytest.raises(ValueError, match="not both"):
        torch.hub.load(str(ROOT), "efficientnet_b0", source="local", weights="x", pretrained="y")


# -- section 2: weights that go back out --------------------------------------------------------


def _assert_same_state(back: dict[str, torch.Tensor], model: nn.Module) -> None:
    own = model.state_dict()
    assert set(back) == set(own)
    for k, v in own.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


@pytest.mark.parametrize(
    ("name", "kw", "upstream"),
    [
        ("efficientnet_b0", {}, "efficientnet_b0"),
        ("efficientnet_b0", {"padding": "same", "bn_eps": 1e-3}, "tf_efficientnet_b0"),
        ("efficientnet_lite0", {"padding": "same", "bn_eps": 1e-3}, "tf_efficientnet_lite0"),
        ("efficientnetv2_b0", {"padding": "same", "bn_eps": 1e-3}, "tf_efficientnetv2_b0"),
    ],
)
def test_to_timm_round_trip_is_exact_and_timm_computes_the_same(name, kw, upstream):
    model = _effnet(name, num_classes=7, **kw)
    assert timm_name(model) == upstream
    ref = _timm_twin(model)
    _assert_same_state(convert_state_dict(ref.state_dict()).state_dict, model)
    with torch.no_grad():
        _close(ref(ODD), model(ODD))


@pytest.mark.parametrize(
    ("name", "upstream", "eps"),
    [("efficientnet_b0", "efficientnet_b0", 1e-5), ("efficientnetv2_s", "efficientnet_v2_s", 1e-3)],
)
def test_to_torchvision_round_trip_is_exact_and_torchvision_computes_the_same(name, upstream, eps):
    model = _effnet(name, num_classes=7, bn_eps=eps)
    assert torchvision_name(model) == upstream
    ref = getattr(torchvision.models, upstream)(num_classes=7)
    ref.load_state_dict(to_torchvision(model), strict=True)
    _assert_same_state(convert_state_dict(ref.state_dict()).state_dict, model)
    with torch.no_grad():
        _close(ref.eval()(ODD), model(ODD))


@pytest.mark.parametrize("name", list(TIMM_NAMES))
def test_every_timm_architecture_takes_the_keys(name):
    model = create_model(name, device="meta")
    state = to_timm(model)
    plain, tf = TIMM_NAMES[name], f"tf_{name}"
    for upstream in (plain, tf) if plain else (tf,):
        assert timm.is_model(upstream)
        with torch.device("meta"):
            ref = timm.create_model(upstream)
        ref.load_state_dict(state, strict=True, assign=True)  # keys and shapes


@pytest.mark.parametrize("name", list(TORCHVISION_NAMES))
def test_every_torchvision_architecture_takes_the_keys(name):
    model = create_model(name, device="meta")
    with torch.device("meta"):
        ref = getattr(torchvision.models, torchvision_name(model))()
    ref.load_state_dict(to_torchvision(model), strict=True, assign=True)
    assert set(torchvision.models.list_models()) >= set(TORCHVISION_NAMES.values())


@pytest.mark.parametrize(
    ("build", "convert", "match"),
    [
        (dict(name="efficientnet_b0", width_mult=0.5), to_timm, "differs from the published"),
        (dict(name="efficientnet_b0", act="relu"), to_timm, "differs from the published"),
        (dict(name="efficientnet_b0", shortcut="projection"), to_torchvision, "differs"),
        (dict(name="efficientnet", phi=2.0), to_timm, "differs from the published"),
        (dict(name="efficientnetv2_xl"), to_torchvision, "torchvision has no 'efficientnetv2_xl'"),
        (dict(name="efficientnetv2_b0"), to_torchvision, "torchvision has no"),
        (dict(name="efficientnet_b0", num_classes=0), to_torchvision, "num_classes=0"),
        (dict(name="efficientnet_b0", in_chans=1), to_torchvision, "in_chans=1"),
    ],
)
def test_upstream_export_refuses_other_architectures(build, convert, match):
    model = create_model(**build, device="meta")
    with pytest.raises(ValueError, match=match):
        convert(model)


def test_upstream_export_refuses_non_effnet_modules():
    with pytest.raises(ValueError, match="takes an effnet EfficientNet, got Linear"):
        to_timm(nn.Linear(2, 2))


def test_effnet_convert_is_reachable_from_the_package():
    import effnet as fresh

    assert fresh.convert.to_timm is to_timm and fresh.convert.to_torchvision is to_torchvision


def test_export_formats_timm_and_torchvision(tmp_path, capsys):
    model = _effnet("efficientnet_b0", num_classes=4)
    model_file = save_model(model, tmp_path / "m.safetensors")
    out = tmp_path / "timm.safetensors"
    assert main(["export", str(model_file), "--format", "timm", "-o", str(out)]) == 0
    assert "verified" in capsys.readouterr().out
    written = safetensors.torch.load_file(str(out))
    ref = timm.create_model("efficientnet_b0", num_classes=4)
    ref.load_state_dict(written, strict=True)
    _assert_same_state(convert_state_dict(written).state_dict, model)
    pth = export_model(model, "torchvision", tmp_path / "tv.pth")
    tv = torchvision.models.efficientnet_b0(num_classes=4)
    tv.load_state_dict(torch.load(pth, weights_only=True), strict=True)
    with torch.no_grad():
        _close(tv.eval()(X), model(X))
    with pytest.raises(ValueError, match="torchvision has no 'efficientnetv2_xl'"):
        export_model(
            create_model("efficientnetv2_xl", device="meta"), "torchvision", tmp_path / "x.pth"
        )
    assert not (tmp_path / "x.pth").exists()
