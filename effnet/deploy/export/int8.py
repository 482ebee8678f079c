"""INT8 through PT2E (``torchao.quantization.pt2e``; PT2E left torch in 2.14) for the edge
exports, with two corrections the stock XNNPACK and litert-torch quantizers lack.

- **Clamps fused.** Both quantizers fuse a ReLU into the conv before it, but not a ReLU6
  (``hardtanh``): the conv's output was quantized on its own wide, signed range and then again
  after the clamp. Lite0 has 33 such pairs; with the stock quantizers its real weights agreed
  with fp32 on 57% of 171 real photo crops (PyTorch reference, docs/deploy.md). Here a clamp
  that follows a quantized conv, linear or add (its only user) carries the output quantization
  and the producer none, as XNNPACK and LiteRT run them fused anyway.
- **Bias correction** (empirical, sequential: Nagel et al. 2019, "Data-Free Quantization",
  section 4.2, and NNCF's BiasCorrection): in the converted graph, each conv and linear in turn
  gets the per-channel mean of its output over the calibration images moved back to the float
  model's, with every layer before it already corrected. With both, ExecuTorch's file agrees
  on 95.5% of 176 unseen crops (86.4% without bias correction; benchmarks/edge_accuracy.py).

``keep_float`` leaves the stem conv (it reads raw pixels, with 27 weights per output channel)
and the classifier in float, the usual first-and-last-layer exception; on the real Lite0
weights that took both runtimes from 18 to 20 of the 22 real photos (docs/deploy.md).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from effnet.env import require

KEY = "quantization_annotation"  # where PT2E quantizers put a node's annotation
BIAS_IMAGES = 32  # calibration images used for bias correction, in one batch
ATEN = torch.ops.aten
CLAMPS = (ATEN.hardtanh.default, ATEN.hardtanh_.default)
LAYERS = (ATEN.conv2d.default, ATEN.linear.default)
PRODUCERS = (*LAYERS, ATEN.add.Tensor)
ACTIVATIONS = (*CLAMPS, ATEN.relu.default, ATEN.relu_.default)
FLOAT_GROUPS = ("stem", "head")  # what keep_float can leave in float


def pt2e_quantize(
    model: nn.Module,
    quantizer,
    images,
    example: torch.Tensor,
    *,
    dynamic=None,
    fold: bool = True,
    bias_correction: bool = True,
    keep_float: tuple[str, ...] = (),
) -> nn.Module:
    """``model`` quantized with PT2E: exported (batch axis ``dynamic``, a ``torch.export.Dim``,
    or static), annotated by ``quantizer`` with ReLU6 clamps fused and the ``keep_float``
    groups (``FLOAT_GROUPS``) left unannotated, observed on ``images`` (a float array,
    N x C x H x W) one at a time (a static graph's example is a batch of 1), converted,
    bias-corrected on the first ``BIAS_IMAGES`` of them, and put in eval mode.
    ``graph.meta["bias_layers"]`` says how many layers had their bias corrected,
    ``graph.meta["float_layers"]`` which convs and linears stayed float."""
    pt2e = require("torchao.quantization.pt2e")
    quantize_pt2e = require("torchao.quantization.pt2e.quantize_pt2e")
    shapes = None if dynamic is None else ({0: dynamic},)
    graph = torch.export.export(model, (example,), dynamic_shapes=shapes).module()
    floats: list[str] = []
    graph = quantize_pt2e.prepare_pt2e(graph, fused_clamps(quantizer, keep_float, floats))
    batch = torch.from_numpy(images[:BIAS_IMAGES])
    with torch.no_grad():
        for i in range(len(images)):
            graph(torch.from_numpy(images[i : i + 1]))
        want = layer_means(graph, batch) if bias_correction else {}
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=fold)
    correct = _Correct(graph, want)
    if want:
        with torch.no_grad():
            correct.run(batch)
    graph.meta["bias_layers"] = correct.corrected
    graph.meta["float_layers"] = floats
    pt2e.move_exported_model_to_eval(graph)
    return graph


def fused_clamps(quantizer, keep: tuple[str, ...] = (), floats: list[str] | None = None):
    """``quantizer`` (a PT2E ``Quantizer``) with ReLU6 clamps fused into what feeds them and the
    ``keep`` groups left float (their layer names appended to ``floats``)."""
    base = require("torchao.quantization.pt2e.quantizer").Quantizer

    class FusedClamps(base):
        def transform_for_annotation(self, model: fx.GraphModule) -> fx.GraphModule:
            return quantizer.transform_for_annotation(model)

        def annotate(self, model: fx.GraphModule) -> fx.GraphModule:
            model = quantizer.annotate(model)
            fuse_clamps(model)
            left = leave_float(model, keep)
            if floats is not None:
                floats[:] = left
            return model

        def validate(self, model: fx.GraphModule) -> None:
            quantizer.validate(model)

    return FusedClamps()


def fuse_clamps(graph: fx.GraphModule) -> int:
    """Move the output quantization of each conv / linear / add whose only user is a ReLU6
    clamp onto the clamp, in an annotated graph; returns how many moved."""
    moved = 0
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target not in CLAMPS:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or src.target not in PRODUCERS or len(src.users) != 1:
            continue
        have = src.meta.get(KEY)
        if have is None or have.output_qspec is None:
            continue
        spec, have.output_qspec = have.output_qspec, None
        node.meta[KEY] = type(have)(input_qspec_map={}, output_qspec=spec, _annotated=True)
        moved += 1
    return moved


def leave_float(graph: fx.GraphModule, groups: tuple[str, ...]) -> list[str]:
    """Drop the quantization annotations of the ``groups`` in an annotated graph, so that PT2E
    leaves them float: ``stem``, the first conv and the ReLU / ReLU6 after it; ``head``, every
    linear. Their consumers still quantize what they read. Returns the conv / linear names."""
    unknown = [g for g in groups if g not in FLOAT_GROUPS]
    if unknown:
        raise ValueError(f"keep_float groups are {', '.join(FLOAT_GROUPS)}, not {unknown}")
    calls = [n for n in graph.graph.nodes if n.op == "call_function"]
    layers = []
    if "stem" in groups:
        layers += [n for n in calls if n.target == ATEN.conv2d.default][:1]
    if "head" in groups:
        layers += [n for n in calls if n.target == ATEN.linear.default]
    acts = [u for n in layers for u in n.users if u.target in ACTIVATIONS]
    for n in layers + acts:
        n.meta.pop(KEY, None)
    return [n.name for n in layers]


def layer_means(graph: fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel output mean of every conv and linear of an exported graph (float, observed
    with its observers passed through, or converted) on the batch ``x``, by node name."""
    return _Means(graph).means_of(x)


def _channel_mean(t: torch.Tensor) -> torch.Tensor:
    return t.mean(0) if t.dim() == 2 else t.mean((0, *range(2, t.dim())))


class _Batch(fx.Interpreter):
    """Runs an exported graph on a whole batch: its shape guards (batch range) are skipped."""

    def call_module(self, target, args, kwargs):
        if str(target).startswith("_guards"):
            return None
        return super().call_module(target, args, kwargs)


class _Means(_Batch):
    """The float model's per-channel output mean of every conv and linear: the prepared
    (observed) graph, run with its observers passed through."""

    def means_of(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.means: dict[str, torch.Tensor] = {}
        self.run(x)
        return self.means

    def run_node(self, n: fx.Node):
        if n.op == "call_module" and "Observer" in type(self.fetch_attr(n.target)).__name__:
            return self.env[n.args[0]]
        out = super().run_node(n)
        if n.op == "call_function" and n.target in LAYERS:
            self.means[n.name] = _channel_mean(out)
        return out


class _Correct(_Batch):
    """Runs the converted graph once, in order: each conv / linear with a bias gets the gap
    between the float mean (``want``) and its own output mean added to the bias, and passes on
    its output with that bias, so later layers are corrected for what is before them."""

    def __init__(self, graph: fx.GraphModule, want: dict[str, torch.Tensor]):
        super().__init__(graph)
        self.want = want
        self.corrected = 0

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        layer = n.op == "call_function" and n.target in LAYERS
        bias = n.args[2] if layer and len(n.args) > 2 else None
        if not isinstance(bias, fx.Node) or bias.op != "get_attr" or n.name not in self.want:
            return out
        new = self.fetch_attr(bias.target).detach() + self.want[n.name] - _channel_mean(out)
        _replace_attr(self.module, bias.target, new)
        self.env[bias] = new
        self.corrected += 1
        return super().run_node(n)  # run again with the new bias: what the saved graph computes


def _replace_attr(graph: nn.Module, target: str, value: torch.Tensor) -> None:
    """Point ``graph``'s attribute ``target`` at a new tensor. Never in place: an exported
    graph's tensors can be the user's model's own parameters (the classifier's bias is)."""
    owner, _, name = target.rpartition(".")
    module = graph.get_submodule(owner)
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(value, requires_grad=False)
    elif name in module._buffers:
        module._buffers[name] = value
    else:
        setattr(module, name, value)
