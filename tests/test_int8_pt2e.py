"""PT2E INT8 for the edge exports (``effnet.deploy.export.int8``): ReLU6 clamps fused into the
layer before them, and sequential bias correction. Fast: a tiny random Lite0, quantized in
PyTorch with each installed quantizer (no lowering). The real Lite0 weights on the real photos,
in each runtime, are in test_edge_export.py (slow)."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch

import effnet
from effnet.deploy.export import int8

ATEN = torch.ops.aten
QUANTIZERS = {
    "xnnpack": ("executorch", "executorch.backends.xnnpack.quantizer.xnnpack_quantizer"),
    "litert": ("litert_torch", "litert_torch.quantize.pt2e_quantizer"),
}


def _quantizer(name: str):
    package, module = QUANTIZERS[name]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} not installed")
    q = importlib.import_module(module)
    cls = q.XNNPACKQuantizer if name == "xnnpack" else q.PT2EQuantizer
    return cls().set_global(q.get_symmetric_quantization_config(is_per_channel=True))


pytest.importorskip("torchao.quantization.pt2e")


@pytest.fixture(scope="module")
def lite():
    """(tiny Lite0 with trained-looking BN statistics, calibration images)."""
    torch.manual_seed(0)
    model = effnet.create_model(
        "efficientnet_lite0", width_mult=0.25, depth_mult=0.25, num_classes=10, image_size=64
    )
    x = torch.randn(24, 3, 64, 64)
    model.train()
    with torch.no_grad():  # BN statistics of real activations, so layers have real ranges
        for _ in range(3):
            model(x)
    return model.eval(), x.numpy()


def _quantized(model, images, name, **kw):
    example = torch.from_numpy(images[:1])  # static graph: observed one image at a time
    return int8.pt2e_quantize(model, _quantizer(name), images, example, **kw)


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_relu6_clamps_carry_the_output_quantization(name, lite):
    model, images = lite
    graph = _quantized(model, images, name, bias_correction=False)
    clamps = [n for n in graph.graph.nodes if n.target in int8.CLAMPS]
    assert len(clamps) >= 10
    for clamp in clamps:
        src = clamp.args[0]
        # the stock quantizers put a quantize/dequantize pair between the conv and its ReLU6
        assert src.target in (ATEN.conv2d.default, ATEN.add.Tensor), (clamp, src.target)
        assert any("quantize_per_tensor" in str(u.target) for u in clamp.users), clamp


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_bias_correction_moves_each_layer_mean_to_the_float_one(name, lite):
    model, images = lite
    x = torch.from_numpy(images[: int8.BIAS_IMAGES])
    exported = torch.export.export(model, (x[:1],)).module()
    want = int8.layer_means(exported, x)  # BN not folded: only the classifier is comparable
    plain = _quantized(model, images, name, bias_correction=False)
    fixed = _quantized(model, images, name)
    assert plain.meta["bias_layers"] == 0 and fixed.meta["bias_layers"] >= 10
    before, after = int8.layer_means(plain, x), int8.layer_means(fixed, x)
    assert before.keys() == after.keys() and len(after) >= 10
    fc = [k for k in after if k.startswith("linear")]
    assert len(fc) == 1
    gap = {
        k: float((v[fc[0]] - want[fc[0]]).abs().max())
        for k, v in (("before", before), ("after", after))
    }
    assert gap["after"] < 1e-5 and gap["before"] > 1e-3, gap
    with torch.no_grad():
        ref = model(x)
        err = {k: float((torch.cat([g(i[None]) for i in x]) - ref).abs().mean())
               for k, g in (("plain", plain), ("fixed", fixed))}  # fmt: skip
    assert err["fixed"] < err["plain"], err


def test_the_users_model_is_left_as_it_was(lite):
    model, images = lite
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _quantized(model, images, "xnnpack")  # the exported graph shares the classifier's bias
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _dequantized(node) -> bool:
    return "dequantize" in str(getattr(node, "target", ""))


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_keep_float_leaves_the_stem_and_the_classifier_float(name, lite):
    model, images = lite
    graph = _quantized(model, images, name, keep_float=("stem", "head"))
    layers = [n for n in graph.graph.nodes if n.target in int8.LAYERS]
    stem, fc, rest = layers[0], [n for n in layers if n.target == ATEN.linear.default], layers[1:-1]
    assert graph.meta["float_layers"] == [stem.name, fc[0].name] and len(fc) == 1
    assert not _dequantized(stem.args[0])  # the image itself
    assert not _dequantized(stem.args[1]) and not _dequantized(fc[0].args[1])  # float weights
    assert len(rest) >= 10
    assert all(_dequantized(n.args[0]) and _dequantized(n.args[1]) for n in rest)
    default = _quantized(model, images, name)
    assert default.meta["float_layers"] == []
    assert all(_dequantized(n.args[1]) for n in default.graph.nodes if n.target in int8.LAYERS)
    with pytest.raises(ValueError, match="keep_float groups"):
        _quantized(model, images, name, keep_float=("se_pool",))
