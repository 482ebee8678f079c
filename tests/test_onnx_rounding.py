"""Error-compensating INT8 weight rounding (effnet.deploy.onnx_rounding), issue 16.

The rounding's objective is each layer's output error ``(w - q) H (w - q)^T`` with ``H`` the
second moment of the layer's im2col inputs; these tests check ``H`` against the convolution
itself, the rounding against nearest rounding on that objective, and the file it rewrites.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import effnet
from effnet.data.transforms import eval_transform
from effnet.deploy import onnx_rounding as R
from effnet.deploy import quantize as Q

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")
from onnx import numpy_helper  # noqa: E402
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

from effnet.deploy.export.onnx import METADATA_KEY, export_onnx  # noqa: E402


def _error(w: torch.Tensor, q: torch.Tensor, h: torch.Tensor) -> float:
    d = w - q
    if h.dim() == 3:
        return float(torch.einsum("ri,rij,rj->", d, h, d))
    return float(torch.einsum("ri,ij,rj->", d, h, d))


def test_with_uncorrelated_inputs_gptq_is_nearest_rounding():
    w = torch.randn(6, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scale = w.abs().amax(1) / R.QMAX
    q = R.gptq(w, torch.eye(20, dtype=torch.float64), scale)
    assert torch.equal(q, (w / scale[:, None]).round())


def test_gptq_beats_nearest_on_correlated_inputs_and_stays_on_the_grid():
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(32, 32, generator=g, dtype=torch.float64)
    x = mix @ torch.randn(32, 4000, generator=g, dtype=torch.float64)  # correlated columns
    h = x @ x.T
    w = torch.randn(16, 32, generator=g, dtype=torch.float64)
    scale = w.abs().amax(1) / R.QMAX * 8  # a coarse grid, so rounding matters
    q = R.gptq(w, h, scale)
    assert torch.equal(q, q.round()) and q.abs().max() <= R.QMAX
    nearest = (w / scale[:, None]).round().clamp(-R.QMAX, R.QMAX)
    s = scale[:, None]
    assert _error(w, q * s, h) < 0.75 * _error(w, nearest * s, h)  # measured: 0.58x


def test_one_h_per_row_is_each_row_rounded_alone():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 9, 300, generator=g, dtype=torch.float64)
    x[:, 1] += x[:, 0]  # correlated within each row's inputs
    h = x @ x.transpose(1, 2)
    w = torch.randn(4, 9, generator=g, dtype=torch.float64)
    scale = w.abs().amax(1) / 10
    batched = R.gptq(w, h, scale)
    for r in range(4):
        assert torch.equal(batched[r], R.gptq(w[r : r + 1], h[r], scale[r : r + 1])[0])


@pytest.mark.parametrize(
    ("shape", "attrs"),
    [
        ((8, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),  # a stem after TF padding
        ((8, 1, 5, 5), {"group": 8, "pads": [2, 2, 2, 2], "strides": [2, 2]}),  # depthwise
        ((12, 8, 1, 1), {}),
    ],
)
def test_second_moment_gives_the_convolutions_output_energy(shape, attrs):
    g = torch.Generator().manual_seed(3)
    cin = shape[1] * attrs.get("group", 1)
    x = torch.randn(3, cin, 11, 11, generator=g)
    w = torch.randn(shape, generator=g)
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="c", **attrs)
    layer = R._Layer(node, w.reshape(shape[0], -1).double().numpy(), None, None, shape, attrs, 0)
    h, n = R._second_moment(layer, x)
    t, left, b, right = attrs.get("pads", [0, 0, 0, 0])
    y = F.conv2d(F.pad(x, (left, right, t, b)), w, stride=attrs.get("strides", [1, 1]),
                 groups=attrs.get("group", 1)).double()  # fmt: skip
    rows = torch.from_numpy(layer.weight)
    energy = [_error(rows[r : r + 1], torch.zeros_like(rows[r : r + 1]),
                     h[r] if layer.depthwise else h) for r in range(shape[0])]  # fmt: skip
    assert np.allclose(energy, (y**2).sum((0, 2, 3)).numpy(), rtol=1e-4)
    assert n == y.shape[0] * y.shape[2] * y.shape[3]
    assert np.array_equal(layer.unrows(layer.weight), w.double().numpy())


def _int8_weights(path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.INT8}  # fmt: skip


def test_the_rewritten_file_keeps_its_scales_and_lowers_each_layers_error(tmp_path):
    model = effnet.create_model(
        "efficientnet_b0", width_mult=0.25, depth_mult=0.25, num_classes=10, image_size=64
    ).eval()
    rng = np.random.default_rng(0)
    cal = tmp_path / "cal"
    cal.mkdir()
    from PIL import Image

    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)).save(cal / f"{i}.png")
    files, reports = {}, {}
    for rounding in ("nearest", "gptq"):
        files[rounding] = tmp_path / f"{rounding}.onnx"
        reports[rounding] = Q.quantize_onnx(model, calibrate=cal, output=files[rounding],
                                            rounding=rounding, bias_correction=False,
                                            keep_float=(), method="minmax")  # fmt: skip
    assert reports["nearest"].rounded_layers == 0
    meta = {k: json.loads(
        {p.key: p.value for p in onnx.load(str(files[k])).metadata_props}[METADATA_KEY]
    )["quantization"] for k in files}  # fmt: skip
    assert meta["gptq"]["rounding"] == "gptq" and meta["nearest"]["rounding"] == "nearest"
    assert meta["gptq"]["rounded_layers"] == reports["gptq"].rounded_layers
    assert reports["gptq"].rounded_layers >= 10 and reports["gptq"].rounding == "gptq"
    near, gptq = _int8_weights(files["nearest"]), _int8_weights(files["gptq"])
    assert near.keys() == gptq.keys()
    assert sum(not np.array_equal(near[k], gptq[k]) for k in near) >= 10
    # same scales and zero points: only the INT8 values moved, by at most a few grid steps
    floats = [onnx.load(str(files[k])).graph.initializer for k in files]
    scales = [{t.name: numpy_helper.to_array(t) for t in f if t.data_type != onnx.TensorProto.INT8}
              for f in floats]  # fmt: skip
    assert all(np.array_equal(scales[0][k], scales[1][k]) for k in scales[0] if k in scales[1])
    assert max(int(np.abs(near[k].astype(int) - gptq[k]).max()) for k in near) <= 8
    # on the objective itself, from the float graph: lower in total and in most layers
    x, _ = Q.calibration_arrays(cal, 8, eval_transform(model.pretrained_cfg))
    fp32, prepared = tmp_path / "fp32.onnx", tmp_path / "prepared.onnx"
    export_onnx(model, fp32, 64)
    quant_pre_process(str(fp32), str(prepared))  # as quantize_onnx prepares it
    reference = onnx.load(str(prepared))
    layers = R._layers(reference, onnx.load(str(files["gptq"])), numpy_helper)
    hessians, samples = R._hessians(reference, layers, x)
    # layers with too few input samples for their H keep nearest rounding
    taken = [n >= R.MIN_SAMPLES * la.weight.shape[1] for la, n in zip(layers, samples, strict=True)]
    assert sum(taken) == reports["gptq"].rounded_layers < len(layers)
    errors = []
    for layer, h, take in zip(layers, hessians, taken, strict=True):
        if not take:
            assert np.array_equal(near[layer.init.name], gptq[layer.init.name])
            continue
        w, s = torch.from_numpy(layer.weight), torch.from_numpy(layer.scale)[:, None].double()
        name = layer.init.name
        rows = [torch.tensor(np.moveaxis(f[name], layer.out_axis, 0).reshape(w.shape[0], -1))
                .double() * s for f in (near, gptq)]  # fmt: skip
        errors.append([_error(w, r, h) for r in rows])
    errors = np.array(errors)
    assert errors[:, 1].sum() < 0.9 * errors[:, 0].sum(), errors.sum(0)  # measured: 0.82x
    assert (errors[:, 1] <= errors[:, 0]).mean() >= 0.8, errors


def test_grouped_convs_keep_nearest_rounding_and_nothing_breaks(tmp_path):
    """A dense conv, a grouped one (2 groups) and a depthwise one with a channel multiplier:
    only the dense conv is re-rounded; the others are left as the quantizer wrote them."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(0)
    h = onnx.helper
    weights = {"w0": rng.normal(size=(8, 4, 3, 3)), "w1": rng.normal(size=(8, 4, 3, 3)),
               "w2": rng.normal(size=(16, 1, 3, 3))}  # fmt: skip
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    nodes = [
        h.make_node("Conv", ["x", "w0"], ["a"], name="dense", pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["a", "w1"], ["b"], name="grouped", group=2, pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["b", "w2"], ["y"], name="multiplier", group=8, pads=[1, 1, 1, 1]),
    ]
    graph = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4, 12, 12])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 16, 12, 12])], inits,
    )  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    fp32, int8 = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(fp32))
    x = rng.normal(size=(16, 1, 4, 12, 12)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(x)

        def get_next(self):
            return next(({"x": b} for b in [next(self.it, None)] if b is not None), None)

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, extra_options={"WeightSymmetric": True})  # fmt: skip
    before = _int8_weights(int8)
    assert R.round_weights(str(fp32), str(int8), x[:, 0]) == 1
    after = _int8_weights(int8)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed and all("w0" in k for k in changed), changed
