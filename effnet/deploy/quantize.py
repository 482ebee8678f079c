"""INT8 post-training quantization with ONNX Runtime: static, QDQ format, per-channel weights.

``quantize_onnx(model_or_run, calibrate=DIR, output=FILE)`` exports the fp32 graph with effnet's
verified ONNX export, feeds calibration images through the model's own preprocessing
(``eval_transform(model.pretrained_cfg)``) into ONNX Runtime's calibrator (percentile by default,
entropy or min-max histograms), quantizes weights per output channel and activations per tensor,
and keeps the ops named in ``keep_float`` in float (by default the squeeze-excite pooling and
gate, whose wide activation ranges are what wrecks naive INT8 EfficientNets, and the stem conv,
whose weight rounding cost Lite0 the most agreement of any single layer). Before the file takes
its name it must contain QuantizeLinear/DequantizeLinear nodes and agree with the fp32 graph on the
calibration images (top-1 agreement and largest logit difference are reported). See
docs/deploy.md for the measured accuracy and speed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effnet.api import resolve_model
from effnet.data.datasets import load_data
from effnet.deploy.calibration import agreement_figures, calibration_arrays, preprocessing
from effnet.deploy.export.common import first_line, input_spec, op_groups
from effnet.deploy.export.onnx import (
    METADATA_KEY,
    _add_metadata,
    export_onnx,
    load_onnx,
    require_onnx,
)
from effnet.deploy.onnx_bias import correct_biases
from effnet.deploy.onnx_rounding import round_weights
from effnet.env import MissingDependency, require
from effnet.training.evaluation import _check_classes, split_options
from effnet.weights.serialize import atomic_write

# CLI word -> onnxruntime.quantization.CalibrationMethod member; nncf is NNCF's own post-training
# quantization (its ONNX backend, the optional extra effnet[nncf]), see _quantize_nncf.
METHODS = {"entropy": "Entropy", "percentile": "Percentile", "minmax": "MinMax", "nncf": None}
# Op groups that may stay in float; see float_nodes().
KEEP_FLOAT = ("se_pool", "se_gate", "se_conv", "head", "stem")
# Every conv quantized: with gptq rounding a float stem no longer helps (on the real Lite0-2
# weights, unseen crops: the logit error is lower with the stem quantized for all three; see
# docs/deploy.md). A float head only costs speed here.
DEFAULT_KEEP_FLOAT = ("se_pool", "se_gate")
DEFAULT_METHOD = "percentile"  # 20/22 photos and 95.5% of unseen crops; entropy 19/22, 93.8%
DEFAULT_IMAGES = 128
# weight rounding: error-compensating (effnet.deploy.onnx_rounding) or ONNX Runtime's nearest
ROUNDINGS = ("gptq", "nearest")
DEFAULT_ROUNDING = "gptq"
BATCH = 8  # calibration / verification batch
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class QuantizeReport:
    """What ``quantize_onnx`` wrote and how the INT8 graph compares with the fp32 one."""

    path: Path
    method: str
    per_channel: bool
    keep_float: tuple[str, ...]
    image_size: int
    calibration_images: int = 0
    skipped_images: int = 0
    bias_correction: bool = True  # effnet's correction (effnet.deploy.onnx_bias); nncf: its own
    bias_layers: int = 0  # layers whose bias effnet corrected
    # how the INT8 weights were rounded: "gptq" (effnet.deploy.onnx_rounding) or "nearest"
    rounding: str = "gptq"
    rounded_layers: int = 0  # layers whose weights the gptq rounding chose
    float_nodes: int = 0  # nodes left in float by keep_float
    qdq_nodes: int = 0  # QuantizeLinear + DequantizeLinear nodes in the written graph
    agreement: float = 0.0  # top-1 agreement with fp32 on the calibration images, in [0, 1]
    # ... on those where fp32's top-2 probabilities are >= 0.05 apart (None: none), how many
    decided_agreement: float | None = None
    decided_images: int = 0
    max_logit_diff: float = 0.0
    fp32_bytes: int = 0
    int8_bytes: int = 0
    seconds: float = 0.0
    eval: dict[str, Any] = field(default_factory=dict)  # with eval=DATA: see evaluate_pair
    # the default method fell back (percentile -> entropy): why, as warned; "" when it did not
    fallback: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def quantize_onnx(
    model_or_run: Any,
    *,
    calibrate: str | os.PathLike,
    output: str | os.PathLike,
    images: int = DEFAULT_IMAGES,
    method: str | None = None,
    per_channel: bool = True,
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
    min_agreement: float = 0.0,
    eval: str | os.PathLike | None = None,
    image_size: int | None = None,
    threads: int | None = None,
    pretrained: Any = None,
    weights_source: str = "auto",
    bias_correction: bool = True,
    rounding: str | None = None,
) -> QuantizeReport:
    """Write an INT8 (QDQ) ONNX file of ``model_or_run`` (a model, name, model file or run).

    ``calibrate``: a folder of images (searched recursively; class sub-folders are fine) or
    ``digits``; the first ``images`` readable ones calibrate. ``method``: entropy, percentile,
    minmax (ONNX Runtime's calibrators) or nncf (NNCF with bias correction; ``effnet[nncf]``).
    The default (None) is percentile; if ONNX Runtime's percentile histogram cannot bin a
    tensor (one whose values span less than float32 resolution, such as a saturated gate), it
    falls back to entropy with a warning, recorded in the report's ``method`` and ``fallback``.
    ``keep_float``: op groups left in float (``KEEP_FLOAT``). The file is written only if its
    graph holds quantize nodes and its top-1 agreement with fp32 on the calibration
    images is at least ``min_agreement``. With ``eval`` (``digits`` or a labelled folder, split
    as ``effnet eval`` splits it), the report's ``eval`` has top-1 of both graphs, file sizes and
    interleaved throughput at batch 16 on ``threads`` threads (default: torch's).
    ONNX Runtime's methods only (nncf does both its own way): ``rounding`` (None: gptq) re-rounds
    the INT8 weights to keep each layer's output closest to fp32 (``effnet.deploy.onnx_rounding``)
    or keeps ``nearest``; then ``bias_correction`` moves each Conv/Gemm's output mean back to
    fp32's (``effnet.deploy.onnx_bias``).
    """
    defaulted, method = method is None, DEFAULT_METHOD if method is None else method
    keep = _check_options(images, method, keep_float, min_agreement)
    rounding = _check_weights(method, rounding, bias_correction)
    require_onnx()
    require("onnxruntime.quantization")
    if method == "nncf":
        _require_nncf()
    model = resolve_model(model_or_run, pretrained=pretrained, weights_source=weights_source)
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(f"{output} is a folder; give a file name, e.g. model-int8.onnx")
    _, size = input_spec(model, image_size)
    transform = preprocessing(model, size)
    calib, skipped = calibration_arrays(calibrate, images, transform)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="effnet-quant-") as tmpdir:
        fp32 = Path(tmpdir) / "fp32.onnx"
        export_onnx(model, fp32, size)
        report = QuantizeReport(output, method, per_channel, keep, size, len(calib), skipped,
                                bias_correction=bias_correction and method != "nncf",
                                rounding=rounding, fp32_bytes=fp32.stat().st_size)  # fmt: skip

        def write(tmp: str) -> None:
            try:
                _quantize(fp32, tmp, calib, report)
            except ValueError as e:
                if not (defaulted and report.method == "percentile" and "bins" in str(e)):
                    raise
                report.method = "entropy"
                report.fallback = (
                    f"percentile calibration failed ({first_line(e)}); calibrated with entropy"
                )
                warnings.warn(report.fallback, stacklevel=4)
                _quantize(fp32, tmp, calib, report)
            _verify(fp32, tmp, calib, report, min_agreement)

        atomic_write(output, write)
        report.int8_bytes = output.stat().st_size
        if eval is not None:
            report.eval = evaluate_pair(
                model_or_run, model, fp32, output, eval, transform, threads=threads
            )
    report.seconds = time.perf_counter() - start
    return report


def _check_weights(method: str, rounding: str | None, bias_correction: bool) -> str:
    """The rounding to record (None: gptq, or nearest for nncf, which rounds its own weights
    to nearest); a ValueError for what nncf cannot take."""
    if rounding is not None and rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if method == "nncf" and not bias_correction:
        raise ValueError("nncf always corrects biases (its own way); drop --no-bias-correction")
    if method == "nncf" and rounding == "gptq":
        raise ValueError("nncf rounds its weights its own way; drop --rounding gptq")
    if rounding is None:
        return "nearest" if method == "nncf" else DEFAULT_ROUNDING
    return rounding


def _check_options(images, method, keep_float, min_agreement) -> tuple[str, ...]:
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"images must be a positive integer, got {images!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    keep = op_groups(keep_float)
    for k in keep:
        if k not in KEEP_FLOAT:
            raise ValueError(f"keep_float entries must be among {', '.join(KEEP_FLOAT)}, got {k!r}")
    if not isinstance(min_agreement, int | float) or not 0 <= min_agreement <= 1:
        raise ValueError(f"min_agreement must be in [0, 1], got {min_agreement!r}")
    return keep


# -- calibration data ----------------------------------------------------------------------------


def _batches(array: np.ndarray, size: int = BATCH) -> Iterator[np.ndarray]:
    for i in range(0, len(array), size):
        yield np.ascontiguousarray(array[i : i + size])


def _reader(array: np.ndarray, input_name: str):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``array`` in batches."""
    base = require("onnxruntime.quantization").CalibrationDataReader

    class Reader(base):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self):
            batch = next(self.it, None)
            return None if batch is None else {input_name: batch}

        def rewind(self) -> None:
            # one image at a time: ORT's histogram collector stacks equal-shaped outputs only
            self.it = _batches(array, 1)

    return Reader()


# -- which nodes stay float ----------------------------------------------------------------------


def float_nodes(graph, keep_float: Sequence[str]) -> list[str]:
    """Names of the nodes of an effnet ONNX ``graph`` in the ``keep_float`` groups.

    se_pool: the squeeze-excite GlobalAveragePool; se_gate: its final Sigmoid and the Mul that
    scales the features; se_conv: the reduce/expand convs and the activation between them;
    head: the final pooling and classifier; stem: the first conv and its activation. Found by
    structure, not by name.
    """
    producer = {out: n for n in graph.node for out in n.output}
    groups: dict[str, list[str]] = {k: [] for k in KEEP_FLOAT}
    se_pools = set()
    for mul in (n for n in graph.node if n.op_type == "Mul" and len(n.input) == 2):
        for x, g in (mul.input, mul.input[::-1]):
            sig = producer.get(g)
            if sig is None or sig.op_type != "Sigmoid" or sig.input[0] == x:
                continue  # x * sigmoid(x) is SiLU, not a gate
            inner = _walk_back(producer, sig.input[0], x)
            if inner is None:
                continue
            pool, convs = inner
            se_pools.add(pool.name)
            groups["se_pool"].append(pool.name)
            groups["se_gate"] += [sig.name, mul.name]
            groups["se_conv"] += [n.name for n in convs]
    for n in graph.node:
        if n.op_type in ("GlobalAveragePool", "ReduceMean") and n.name not in se_pools:
            groups["head"].append(n.name)
        if n.op_type in ("Gemm", "MatMul", "Flatten"):
            groups["head"].append(n.name)
    groups["stem"] = _stem(graph, producer)
    return [name for k in keep_float for name in groups[k]]


def _stem(graph, producer) -> list[str]:
    """The first Conv, the Pad that feeds it (TF "SAME" padding) and its activation: ReLU6
    (Clip), ReLU, or SiLU (Sigmoid and the Mul of the conv output by it)."""
    conv = next((n for n in graph.node if n.op_type == "Conv"), None)
    if conv is None:
        return []
    pad = producer.get(conv.input[0])
    names = ([pad.name] if pad is not None and pad.op_type == "Pad" else []) + [conv.name]
    y = conv.output[0]
    readers = [n for n in graph.node if y in n.input]
    for n in readers:
        if n.op_type in ("Clip", "Relu", "HardSwish", "Sigmoid"):
            names.append(n.name)
    sig = {n.output[0] for n in readers if n.op_type == "Sigmoid"}
    names += [n.name for n in readers if n.op_type == "Mul" and sig & set(n.input)]
    return names


def _walk_back(producer, tensor: str, features: str, depth: int = 8):
    """(pool node, nodes between) when ``tensor`` comes from a pooling of ``features``."""
    between = []
    for _ in range(depth):
        node = producer.get(tensor)
        if node is None:
            return None
        if node.op_type in ("GlobalAveragePool", "ReduceMean"):
            return (node, between) if node.input[0] == features else None
        between.append(node)
        tensor = node.input[0]
    return None


# -- quantize and verify -------------------------------------------------------------------------


def _quantize(fp32: Path, out: str, calib: np.ndarray, report: QuantizeReport) -> None:
    onnx = require("onnx")
    q = require("onnxruntime.quantization")
    shape = require("onnxruntime.quantization.shape_inference")
    prepared = fp32.with_name("prepared.onnx")
    try:
        with quiet_ort():
            # ORT's own recipe: shape inference and graph optimisation (folds the exporter's
            # Identity nodes, so every conv bias is an initializer the quantizer can see)
            if report.method == "nncf":  # NNCF takes the exported graph as it is
                prepared = fp32
            elif not prepared.exists():
                shape.quant_pre_process(str(fp32), str(prepared))
            graph = onnx.load(str(prepared)).graph
            exclude = float_nodes(graph, report.keep_float)
            report.float_nodes = len(exclude)
            if report.method == "nncf":
                _quantize_nncf(prepared, out, calib, exclude)
            else:
                keep, name = reads_activation(graph, exclude), graph.input[0].name
                _quantize_static(q, prepared, out, calib, name, exclude, keep, report)
                if report.rounding == "gptq":
                    report.rounded_layers = round_weights(str(prepared), out, calib)
                if report.bias_correction:
                    report.bias_layers = correct_biases(str(prepared), out, calib)
    except (ValueError, OSError, ImportError):
        raise
    except Exception as e:  # ORT's calibrator (and NNCF) raise assorted types
        tool = "NNCF" if report.method == "nncf" else "ONNX Runtime"
        raise ValueError(f"{tool} quantization failed: {first_line(e)}") from None
    props = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    meta = json.loads(props[METADATA_KEY])
    meta["quantization"] = {
        "format": "QDQ",
        "method": report.method,
        "per_channel": report.per_channel,
        "keep_float": list(report.keep_float),
        "bias_correction": report.method == "nncf" or report.bias_correction,
        "rounding": report.rounding,
        "rounded_layers": report.rounded_layers,  # gptq: layers it re-rounded (others: nearest)
        "calibration_images": len(calib),
    }
    _add_metadata(out, meta)


def _quantize_static(q, prepared, out: str, calib, input_name, exclude, keep_acts, report) -> None:
    q.quantize_static(
        str(prepared),
        out,
        _reader(calib, input_name),
        quant_format=q.QuantFormat.QDQ,
        per_channel=report.per_channel,
        activation_type=q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        calibrate_method=getattr(q.CalibrationMethod, METHODS[report.method]),
        nodes_to_exclude=exclude,
        extra_options={
            "CalibMaxIntermediateOutputs": 16,
            "WeightSymmetric": True,
            # a float node must read the real activation (see float_inputs), so no Relu/Clip
            # may be folded into a quantization range when a float node reads one
            "QDQKeepRemovableActivations": keep_acts,
        },
    )
    float_inputs(out, exclude)


def reads_activation(graph, exclude: Sequence[str]) -> bool:
    """Whether a node in ``exclude`` reads a Relu or Clip output. Only then must the quantizer
    keep those activations as nodes (QDQKeepRemovableActivations), which costs every ReLU6 of
    a Lite model a separate op: the float stem reads the image, B0's SE pool a SiLU's Mul."""
    producer = {out: n for n in graph.node for out in n.output}
    names = set(exclude)
    return any(
        producer[i].op_type in ("Relu", "Clip")
        for n in graph.node
        if n.name in names
        for i in n.input
        if i in producer
    )


def float_inputs(path: str, exclude: Sequence[str]) -> int:
    """Feed the float Conv/Gemm nodes of the QDQ file at ``path`` (those in ``exclude``) the
    activation itself instead of a QuantizeLinear -> DequantizeLinear copy of it; returns how
    many inputs were rewired. Needed for the file to keep them float: ONNX Runtime's
    WeightBiasQuantization optimizer (on by default when a session loads a file) quantizes, to
    per-tensor INT8, the float weights of any Conv/Gemm whose input comes from a
    DequantizeLinear, so a node kept float on purpose would silently run with coarser weights
    than the quantized ones around it."""
    onnx = require("onnx")
    model = onnx.load(path)
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    weights = {i.name for i in graph.initializer}
    keep = set(exclude)
    rewired = 0
    for node in graph.node:
        if node.name not in keep or node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
            continue
        if len(node.input) < 2 or node.input[1] not in weights:
            continue  # weights already quantized or computed: not what WeightBiasQuantization takes
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == QDQ_OPS[1] else None
        if q is None or q.op_type != QDQ_OPS[0]:
            continue
        node.input[0] = q.input[0]
        rewired += 1
    while rewired:  # drop the Q/DQ nodes nobody reads any more, DQ first, then its Q
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in QDQ_OPS and not set(n.output) & used]
        if not dead:
            onnx.save(model, path)
            break
        for node in dead:
            graph.node.remove(node)
        read = {i for n in graph.node for i in n.input}
        for init in [i for i in graph.initializer if i.name not in read]:
            graph.initializer.remove(init)  # the dropped pairs' scales and zero points
    return rewired


def _quantize_nncf(fp32: Path, out: str, calib: np.ndarray, exclude: Sequence[str]) -> None:
    """NNCF's post-training quantization of the ONNX graph (``nncf.quantize``, ONNX backend, no
    OpenVINO): per-channel symmetric INT8 weights, symmetric INT8 activations (its PERFORMANCE
    preset), and full bias correction, which measured better than the fast one (docs/deploy.md).
    """
    nncf = _require_nncf()
    onnx = require("onnx")
    model = onnx.load(str(fp32))
    name = model.graph.input[0].name
    data = nncf.Dataset([{name: b} for b in _batches(calib, 1)])
    scope = nncf.IgnoredScope(names=list(exclude), validate=False)
    logging.getLogger("nncf").setLevel(logging.ERROR)
    quantized = nncf.quantize(
        model,
        data,
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(calib),
        fast_bias_correction=False,
        ignored_scope=scope,
    )
    onnx.save(quantized, out)
    float_inputs(out, exclude)


def _require_nncf():
    """``nncf``, or the one-line MissingDependency naming effnet's nncf extra. ``NNCF_CI`` is
    set before the import: with it NNCF sends no telemetry (nncf/telemetry/wrapper.py)."""
    os.environ.setdefault("NNCF_CI", "1")
    try:
        return require("nncf")
    except MissingDependency:
        raise MissingDependency(
            'method nncf needs nncf; install it with: pip install "effnet[nncf]"', name="nncf"
        ) from None


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice through the root logger and prints its calibration
    progress; keep the log to errors and the prints out of the user's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _verify(fp32: Path, path: str, calib, report: QuantizeReport, min_agreement: float) -> None:
    onnx = require("onnx")
    ops = [n.op_type for n in onnx.load(path).graph.node]
    report.qdq_nodes = sum(op in QDQ_OPS for op in ops)
    if "QuantizeLinear" not in ops or "DequantizeLinear" not in ops:
        raise ValueError(
            "quantization left the graph in float (no QuantizeLinear/DequantizeLinear nodes); "
            "the file was not written"
        )
    want, got = _logits(fp32, calib), _logits(path, calib)
    report.agreement, report.decided_agreement, report.decided_images = agreement_figures(
        want, got
    )
    report.max_logit_diff = float(np.abs(want - got).max())
    if report.agreement < min_agreement:
        raise ValueError(
            f"the INT8 graph agrees with fp32 on {report.agreement:.1%} of the calibration images "
            f"(< {min_agreement:.0%}); the file was not written (try another --method or "
            "more --images)"
        )


def _logits(path, array: np.ndarray, threads: int | None = None) -> np.ndarray:
    session = load_onnx(path, threads=threads)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: b})[0] for b in _batches(array)])


# -- evaluation and speed ------------------------------------------------------------------------


def evaluate_pair(
    model_or_run: Any, model: nn.Module, fp32: Path, int8: Path, data, transform, *, threads=None
) -> dict[str, Any]:
    """Top-1 of the fp32 and INT8 graphs on ``data``'s validation split (a run's own split for
    a run), file sizes, and their throughput at batch 16 measured in one interleaved run."""
    source = os.fspath(model_or_run) if isinstance(model_or_run, str | os.PathLike) else ""
    opts = split_options(source, os.fspath(data), None, None, None)
    split = load_data(opts["data"], val_fraction=opts["val_fraction"], seed=opts["seed"])
    _check_classes(source or "model", model, split, opts["data"])
    ds = split.val
    ds.transform = transform
    items = [ds[i] for i in range(len(ds))]
    items = [it for it in items if it is not None]
    x = torch.stack([im for im, _ in items]).numpy()
    y = np.array([t for _, t in items])
    top1 = {
        k: float(100.0 * (_logits(p, x, threads).argmax(1) == y).mean())
        for k, p in (("fp32", fp32), ("int8", int8))
    }
    speed = throughput({"fp32": fp32, "int8": int8}, x, batch=16, threads=threads)
    return {
        "data": opts["data"],
        "images": len(y),
        "top1": top1,
        "bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
        **speed,
    }


def throughput(
    paths: dict[str, str | os.PathLike],
    images: np.ndarray,
    *,
    batch: int = 16,
    threads: int | None = None,
    rounds: int = 10,
) -> dict[str, Any]:
    """Images per second of each ONNX file at ``batch``, timed in interleaved rounds (each
    round runs every file once, so load on a shared machine hits all of them alike); the
    median round per file counts. ``images`` is tiled to fill the batch."""
    if len(images) == 0:
        raise ValueError("throughput needs at least one image")
    reps = -(-batch // len(images))
    x = np.ascontiguousarray(np.concatenate([images] * reps)[:batch])
    sessions = {k: load_onnx(p, threads=threads) for k, p in paths.items()}
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for k, s in sessions.items():  # warm-up
        s.run(None, feeds[k])
    for _ in range(rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - t)
    ips = {k: batch / float(np.median(v)) for k, v in times.items()}
    return {"batch": batch, "threads": threads or torch.get_num_threads(), "images_per_s": ips}


def is_quantized(path: str | os.PathLike) -> bool:
    """Whether an effnet ONNX file says it was quantized (its metadata's ``quantization``)."""
    onnx = require("onnx")
    props = {p.key: p.value for p in onnx.load(os.fspath(path)).metadata_props}
    return "quantization" in json.loads(props.get(METADATA_KEY, "{}"))
