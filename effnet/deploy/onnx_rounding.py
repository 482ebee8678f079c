"""Error-compensating weight rounding of an INT8 (QDQ) ONNX file, against its float graph.

Rounding each weight to the nearest step of its channel's grid is not the rounding that keeps
a layer's output closest to the float layer's. For a Conv or Gemm with weights ``w`` (one
output channel, flattened) and inputs ``X`` (im2col columns), the output error of a rounding
``q`` is ``(w - q) H (w - q)^T`` with ``H = X X^T``, the inputs' second moment. GPTQ /
Optimal Brain Quantization (Frantar and Alistarh 2022, "Optimal Brain Compression"; Frantar et
al. 2023, "GPTQ") round one input column at a time and move the rounding error of that column
onto the columns not yet rounded, through the Cholesky factor of ``H^-1``. ``H`` comes from
the float graph's own layer inputs on the calibration images; depthwise convs get one ``H``
per channel. Scales stay the quantizer's: only the INT8 values change, clamped to the same
[-127, 127], so the file's layout and speed are unchanged.

On the real Lite0 weights, with only the weights rounded, the logits' mean squared difference
from fp32 on the 22 calibration photos falls from 0.0315 with nearest rounding to 0.0076; the
whole INT8 figures, on unseen crops and Lite1/Lite2 too, are in docs/deploy.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from effnet.deploy.onnx_bias import probe_session
from effnet.env import require

ROUND_IMAGES = 64  # calibration images the rounding's H uses
# H's diagonal gets this fraction of its mean added (GPTQ's dampening). 0.1, not GPTQ's 0.01:
# with 0.01 the real Lite1 weights' logits moved further from fp32 on unseen crops
DAMP = 0.1
# a layer whose inputs give fewer im2col samples than this many per weight column (late,
# low-resolution 1x1 convs on few images) keeps nearest rounding: its H would be fitted to
# the calibration images rather than measured
MIN_SAMPLES = 4
_BATCH = 2  # images per ONNX Runtime run while H accumulates
_H_BYTES = 512 * 2**20  # at most this much float64 H held at once; more layers -> more passes
QMAX = 127  # symmetric INT8 weights: [-127, 127]


def round_weights(float_path: str, int8_path: str, images: np.ndarray) -> int:
    """Re-round the INT8 weights of the QDQ file at ``int8_path`` in place, on ``images`` (the
    first ``ROUND_IMAGES``); returns how many layers were re-rounded. A layer is taken when
    its weight is a zero-point-0 DequantizeLinear (per output channel or per tensor) of an int8
    initializer, the float graph has a node of the same name with a float initializer weight,
    and its inputs give at least ``MIN_SAMPLES`` samples per weight column."""
    onnx = require("onnx")
    helper = require("onnx.numpy_helper")
    reference, model = onnx.load(float_path), onnx.load(int8_path)
    layers = _layers(reference, model, helper)
    x = np.ascontiguousarray(images[:ROUND_IMAGES], dtype=np.float32)
    rounded = 0
    for group in _groups(layers):
        hessians, samples = _hessians(reference, group, x)
        for layer, h, n in zip(group, hessians, samples, strict=True):
            if n < MIN_SAMPLES * layer.weight.shape[1]:
                continue
            rounded += 1
            q = gptq(torch.from_numpy(layer.weight).double(), h, torch.from_numpy(layer.scale))
            value = layer.unrows(q.numpy().astype(np.int8))
            layer.init.CopyFrom(helper.from_array(value, layer.init.name))
    onnx.save(model, int8_path)
    return rounded


class _Layer:
    """One layer to re-round: its node in the float graph, its float weight as rows (output
    channels) by columns, its int8 initializer and per-row scale in the QDQ file."""

    def __init__(self, node, weight, init, scale, shape, attrs, out_axis) -> None:
        self.node, self.weight, self.init, self.scale = node, weight, init, scale
        self.shape, self.attrs = shape, attrs  # the int8 initializer's shape; node attributes
        self.out_axis = out_axis  # the output-channel axis of the weight

    def unrows(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` (output channels by columns) back in the initializer's layout."""
        moved = list(self.shape)
        moved.insert(0, moved.pop(self.out_axis))
        return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), 0, self.out_axis))

    @property
    def depthwise(self) -> bool:
        group = self.attrs.get("group", 1)
        return self.node.op_type == "Conv" and group > 1 and group == self.shape[0]

    @property
    def h_bytes(self) -> int:
        cols = self.weight.shape[1]
        return 8 * cols * cols * (self.weight.shape[0] if self.depthwise else 1)


def _layers(reference, model, helper) -> list[_Layer]:
    onnx = require("onnx")
    ref_inits = {t.name: t for t in reference.graph.initializer}
    ref_nodes = {n.name: n for n in reference.graph.node if n.op_type in ("Conv", "Gemm")}
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    layers = []
    for node in model.graph.node:
        ref = ref_nodes.get(node.name)
        dq = producer.get(node.input[1]) if ref is not None and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or ref.input[1] not in ref_inits:
            continue
        if len(dq.input) < 3 or not all(i in inits for i in dq.input):
            continue
        q, scale, zero = (helper.to_array(inits[i]) for i in dq.input[:3])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and not _plain_conv(attrs, q.shape):
            continue
        dq_axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        out_axis = 0 if node.op_type == "Conv" or attrs.get("transB", 0) else 1
        if scale.size == 1:  # one scale for the tensor (--per-tensor)
            scale, dq_axis = np.full(q.shape[out_axis], scale.item(), scale.dtype), out_axis
        if q.dtype != np.int8 or np.any(zero != 0) or scale.shape != (q.shape[out_axis],):
            continue
        if dq_axis != out_axis or np.any(scale <= 0):
            continue
        weight = helper.to_array(ref_inits[ref.input[1]]).astype(np.float64)
        if weight.shape != q.shape:
            continue
        rows = np.moveaxis(weight, out_axis, 0).reshape(q.shape[out_axis], -1)
        layers.append(_Layer(ref, rows, inits[dq.input[0]], scale, q.shape, attrs, out_axis))
    return layers


def _plain_conv(attrs: dict, shape: tuple[int, ...]) -> bool:
    """A Conv whose im2col ``_second_moment`` measures: explicit pads, 2D, and either dense
    or depthwise (one input channel per output channel). Other grouped convs and auto_pad keep
    nearest rounding."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(shape) != 4:
        return False
    group = attrs.get("group", 1)
    return group == 1 or (group == shape[0] and shape[1] == 1)


def _groups(layers: list[_Layer]) -> list[list[_Layer]]:
    """Layers in passes whose H together stay under ``_H_BYTES`` (at least one per pass)."""
    groups: list[list[_Layer]] = [[]]
    held = 0
    for layer in layers:
        if groups[-1] and held + layer.h_bytes > _H_BYTES:
            groups.append([])
            held = 0
        groups[-1].append(layer)
        held += layer.h_bytes
    return [g for g in groups if g]


def _hessians(reference, group: list[_Layer], x: np.ndarray) -> tuple[list, list[int]]:
    """``X X^T`` of each layer's inputs in the float graph over ``x`` (float64), and how many
    im2col samples (images times output positions) each sums."""
    names = list(dict.fromkeys(layer.node.input[0] for layer in group))
    session = probe_session(reference, names, threads=torch.get_num_threads())
    feed = session.get_inputs()[0].name
    sums: list[torch.Tensor | None] = [None] * len(group)
    counts = [0] * len(group)
    for i in range(0, len(x), _BATCH):
        values = dict(zip(names, session.run(names, {feed: x[i : i + _BATCH]}), strict=True))
        for k, layer in enumerate(group):
            h, n = _second_moment(layer, torch.from_numpy(values[layer.node.input[0]]))
            sums[k] = h if sums[k] is None else sums[k] + h
            counts[k] += n
    return [s for s in sums if s is not None], counts


def _second_moment(layer: _Layer, x: torch.Tensor) -> torch.Tensor:
    """The im2col columns' ``X X^T`` of one batch of a layer's input (float64), and how many
    columns (samples) it sums."""
    if layer.node.op_type == "Gemm":
        x = x.reshape(x.shape[0], -1)
        x = x if not layer.attrs.get("transA", 0) else x.T
        return (x.T @ x).double(), x.shape[0]
    a = layer.attrs
    kernel = tuple(layer.shape[2:])
    top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
    x = F.pad(x, (left, right, top, bottom))
    cols = F.unfold(x, kernel, dilation=a.get("dilations", [1, 1]), stride=a.get("strides", [1, 1]))
    if layer.depthwise:  # one H per channel
        per = cols.reshape(x.shape[0], layer.shape[0], -1, cols.shape[-1])
        return torch.einsum("ncil,ncjl->cij", per, per).double(), per.shape[0] * per.shape[-1]
    flat = cols.transpose(0, 1).reshape(cols.shape[1], -1)
    return (flat @ flat.T).double(), flat.shape[1]


def gptq(weight: torch.Tensor, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Integer weights (``weight``'s rows on the grids ``scale``, in [-QMAX, QMAX]) chosen one
    column at a time, each column's rounding error spread onto the later columns by the upper
    Cholesky factor of the dampened ``h^-1``. ``h``: (cols, cols), or (rows, cols, cols) for one
    H per row. With ``h`` the identity this is nearest rounding."""
    w = (weight / scale[:, None]).clone()  # in grid steps, so the clamp is in steps too
    q = torch.zeros_like(w)
    u = _inverse_factor(h.double())
    for i in range(w.shape[1]):
        q[:, i] = w[:, i].round().clamp(-QMAX, QMAX)
        if u.dim() == 3:
            err = (w[:, i] - q[:, i]) / u[:, i, i]
            w[:, i + 1 :] -= err[:, None] * u[:, i, i + 1 :]
        else:
            err = (w[:, i] - q[:, i]) / u[i, i]
            w[:, i + 1 :] -= err[:, None] * u[i, i + 1 :][None, :]
    return q


def _inverse_factor(h: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor of ``(h + DAMP * mean(diag h) I)^-1``; a column no input
    reached (a zero diagonal) gets a unit diagonal, so its weights round to nearest."""
    h = h.clone()
    diag = torch.diagonal(h, dim1=-2, dim2=-1)
    diag[diag == 0] = 1.0
    mean = diag.mean(-1, keepdim=True)
    diag += DAMP * mean
    lower = torch.linalg.cholesky(h)
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
