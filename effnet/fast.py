"""``effnet.accelerate``: effnet's fast paths, as one explicit, reversible, in-place transform.

``create_model`` returns plain ``nn`` modules. ``accelerate(model)`` changes the class of the
units it knows (conv -> BN -> act, squeeze-excite, the MBConv / Fused-MBConv residual, the
network) to subclasses whose ``forward`` computes the same values faster, on the kernels in
``effnet.fused``:

- training: BN + SiLU as one memory-lean autograd node, the SE scale saving only its output
  (fp32) with a one-buffer backward, the drop-path scale fused into the residual add,
  activation recompute when asked for, and under CPU bf16 autocast the depthwise convs in
  fp32 (their bf16 backward is the slower one);
- inference: BatchNorm folded into the conv weights on every call (nothing is cached, so the
  parameters are always the truth), activations, the SE channel scale and residual adds in
  place where nobody else can see the intermediate, and on CPU the high-resolution stages run
  on slices of a large batch (``_prefix_split``) where each sample is computed on its own;
- channels-last on CPU, with outputs returned in the input's memory format.

Each fast ``forward`` first checks that it may run: the fast paths are on (``plain_ops()``
turns them off), the call is ordinary eager code (not a trace, script, export, compile or
torch.func transform), the child modules are exactly the types the kernel assumes, and no hook
watches a module the kernel would skip. Otherwise it runs the plain modules, so a child swapped
after ``accelerate`` (SyncBatchNorm, FrozenBatchNorm2d, GroupNorm, another activation) runs.
``torch.jit.script`` compiles a plain twin that shares the parameters (``plain_twin``).
State dict keys, parameters and modules are unchanged; ``accelerate(model, enable=False)``
restores the plain classes.
"""

from __future__ import annotations

import copy
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module

from effnet.blocks import FusedMBConv, MBConv
from effnet.fused import bn_silu, bn_silu_eligible, channel_scale, fast_ops, recompute_activations
from effnet.layers import Conv2dSame, ConvBNAct, DropPath, SqueezeExcite, fold_bn
from effnet.model import EfficientNet, EfficientNetFeatures

_CONVS = (nn.Conv2d, Conv2dSame)
# torch's own activations: none keeps a reference to its output.
_ACTS = (nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.GELU, nn.Identity)
# Per thread: the one tensor the squeeze-excite now being called may scale in place
# (``tensor``), or whose scaled output only a plain conv reads (``conv_reads``).
_FRESH = threading.local()


def _hooked(*modules: nn.Module) -> bool:
    """Whether a hook may watch one of ``modules`` (or every module): a fast path that skips a
    module or overwrites its output must then step aside."""
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    if _module._global_backward_hooks or _module._global_backward_pre_hooks:
        return True
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in modules
    )


def _recording(t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad


def _activate(act: nn.Module, y: torch.Tensor) -> torch.Tensor:
    # ``y`` is a fresh conv output that nobody else holds: SiLU may overwrite it when no
    # gradient is recorded (the ReLUs are in-place modules already).
    if type(act) is nn.SiLU:
        return F.silu(y, inplace=not _recording(y))
    return act(y)


def _cpu_bf16_depthwise(conv: nn.Module, x: torch.Tensor) -> bool:
    """A depthwise conv with fp32 weights, recorded for backward under CPU bf16 autocast."""
    return (
        conv.groups > 1
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.weight.dtype == torch.float32
        and x.device.type == "cpu"
        and _recording(x)
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def _depthwise_fp32(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` in fp32 with autocast off. oneDNN's bf16 depthwise backward is slower than
    its fp32 one for most of EfficientNet's depthwise shapes on the CPU we measured (AVX-512
    BF16, no AMX: 5x5 and strided ones up to 14x; the profile is in docs/performance.md), so
    under CPU bf16 autocast the fast path trains the depthwise convs in fp32 (more precise, not
    less) and everything else in bf16; the next conv takes the fp32 output back to bf16 as
    autocast does."""
    with torch.autocast("cpu", enabled=False):
        return conv(x.float())


def plain_twin(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s tree in which every module is a new object of its plain class
    (effnet's fast classes become the ones ``create_model`` builds), sharing every parameter
    and buffer tensor with ``module``; ``module`` itself is left as it is."""
    memo: dict[int, nn.Module] = {}

    def twin(m: nn.Module) -> nn.Module:
        if id(m) not in memo:
            t = object.__new__(PLAIN_CLASSES.get(type(m), type(m)))
            t.__dict__.update(
                {k: copy.copy(v) if isinstance(v, dict | set) else v for k, v in vars(m).items()}
            )
            memo[id(m)] = t
            t._modules = {k: None if c is None else twin(c) for k, c in m._modules.items()}
        return memo[id(m)]

    return twin(module)


class _Fast:
    fast = True

    def __prepare_scriptable__(self) -> nn.Module:
        # TorchScript cannot compile the fast forwards (they ask Python about types, hooks and
        # autograd): ``torch.jit.script`` compiles a plain twin that shares the parameters, and
        # this model keeps its fast paths.
        return plain_twin(self)


class FastConvBNAct(_Fast, ConvBNAct):
    """``ConvBNAct`` with BN folded into the conv in eval and BN+SiLU fused in training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, act = self.conv, self.bn, self.act
        if (
            not fast_ops()
            or x.is_meta
            or type(conv) not in _CONVS
            or type(bn) not in (nn.BatchNorm2d, nn.Identity)
            or _hooked(conv, bn, act)
        ):
            return super().forward(x)
        if type(bn) is nn.Identity:  # folded for good (optimize_for_inference)
            return _activate(act, conv(x))
        if bn.training:
            y = _depthwise_fp32(conv, x) if _cpu_bf16_depthwise(conv, x) else conv(x)
            if type(act) is nn.SiLU and bn_silu_eligible(bn, y):
                return bn_silu(y, bn)
            return act(bn(y))
        if not bn.track_running_stats or bn.running_var is None:
            return super().forward(x)  # eval on batch statistics: nothing to fold
        weight, bias = fold_bn(conv, bn)
        return _activate(act, conv._conv_forward(x, weight, bias))


class FastSqueezeExcite(_Fast, SqueezeExcite):
    """``SqueezeExcite`` whose channel scale keeps one buffer in backward, not two, and in
    inference scales in place the one input its block has marked as nobody else's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate(x)
        if fast_ops() and _recording(x) and not x.is_meta and x.dim() == 4:
            return channel_scale(x, gate, getattr(_FRESH, "conv_reads", None) is x)
        if getattr(_FRESH, "tensor", None) is x and gate.dtype == x.dtype:
            return x.mul_(gate)
        return x * gate


def _conv_unit(unit: nn.Module) -> bool:
    """Whether ``unit`` is an effnet conv -> BN -> act whose conv (of torch's own types, no
    forward replaced on an instance) reads its input and changes nothing in place."""
    return (
        type(unit) is FastConvBNAct
        and type(unit.conv) in _CONVS
        and not any("forward" in vars(m) for m in (unit, unit.conv))
    )


def _fresh_output(unit: nn.Module) -> bool:
    """Whether ``unit``'s output is a new tensor that nothing keeps: a ``_conv_unit`` whose BN
    and activation are torch's own types too, neither with a forward replaced (a wrapper could
    keep the tensor)."""
    return (
        _conv_unit(unit)
        and type(unit.bn) in (nn.BatchNorm2d, nn.Identity)
        and type(unit.act) in _ACTS
        and not any("forward" in vars(m) for m in (unit.bn, unit.act))
    )


def _excite(block: nn.Module, producer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``block.se(h)``. In inference it may scale ``h`` in place when ``h`` is ``producer``'s
    fresh output (one activation buffer and its write saved per block); in training it may
    keep its output instead of ``h`` for backward when only the block's projection conv reads
    that output (one stored map less per block). Either needs no hook in the block."""
    se = block.se
    if (
        type(se) is not FastSqueezeExcite
        or "forward" in vars(se)
        or not fast_ops()
        or h.is_meta
        or h.dim() != 4
        or _hooked(*block.modules())
    ):
        return se(h)
    if _recording(h):
        mark, ok = "conv_reads", _conv_unit(block.project)
    else:
        mark, ok = "tensor", _fresh_output(producer)
    if not ok:
        return se(h)
    setattr(_FRESH, mark, h)
    try:
        return se(h)
    finally:
        setattr(_FRESH, mark, None)


class _FastResidual(_Fast):
    """The residual add of MBConv / Fused-MBConv with drop path fused in (training) or done in
    place on the branch output (inference, when no hook can see that output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if not self.has_skip:
            return out
        skip = self.shortcut(x)
        dp = self.drop_path
        if not fast_ops() or type(dp) is not DropPath or _hooked(dp):
            return dp(out) + skip
        if dp.training and dp.p > 0.0:
            return dp.add(out, skip)
        if not _recording(out) and not out.is_meta and not _hooked(*self.modules()):
            return out.add_(skip)
        return out + skip


class FastMBConv(_FastResidual, MBConv):
    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(_excite(self, self.dw, self.dw(self.expand(x))))


class FastFusedMBConv(_FastResidual, FusedMBConv):
    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(_excite(self, self.conv, self.conv(x)))


class _FastNet(_Fast):
    def _run_channels_last(self) -> bool:
        # torch.func transforms cannot change memory formats: NCHW there.
        return self.channels_last and fast_ops()


# CPU inference runs the high-resolution prefix of the network (the stem and the stages whose
# output is at stride <= _PREFIX_STRIDE) a few images at a time and the rest at the full
# batch, when the prefix's largest map for the whole batch would reach glibc's largest mmap
# threshold (32 MiB): such a map is a fresh mmap on every call, its pages fault on first touch,
# and slices of at most _CHUNK_BYTES come from the heap and stay near the cache. On the AMD EPYC
# we measured (2 MiB L2 per core, 32 MiB L3), B0 at 224 px, batch 16, ran 1.23-1.25x as fast
# in a fresh process and 1.03-1.13x after training steps, Lite0 1.26-1.42x and 1.24-1.25x
# (two runs of benchmarks/prefix_chunks.py); the values are the unchunked ones.
_PREFIX_STRIDE = 4
_CHUNK_BYTES = 20 * 2**20
_MMAP_BYTES = 32 * 2**20
# The modules that compute each sample on its own (BN on running statistics, BN and drop path
# not training; the others behave the same in either mode).
_PER_SAMPLE = (
    FastConvBNAct,
    FastMBConv,
    FastFusedMBConv,
    FastSqueezeExcite,
    nn.Sequential,
    nn.BatchNorm2d,
    DropPath,
    *_CONVS,
    *_ACTS,
)
_OWN_METHODS = ("forward", "branch", "gate", "_conv_forward")


def _per_sample(m: nn.Module) -> bool:
    if type(m) not in _PER_SAMPLE or any(k in vars(m) for k in _OWN_METHODS):
        return False
    if type(m) is nn.BatchNorm2d:
        return not m.training and m.track_running_stats and m.running_var is not None
    return type(m) is not DropPath or not m.training


def _prefix_split(net: nn.Module, x: torch.Tensor) -> tuple[int, int] | None:
    """``(stages in the prefix, chunks)`` when ``net(x)`` may run its high-resolution prefix
    in chunks of the batch: CPU inference with no gradient recorded and no hook anywhere, every
    prefix module one that computes each sample on its own; otherwise None."""
    if (
        not fast_ops()  # first: a tracer warns on the shape test below
        or x.dim() != 4
        or x.shape[0] < 2
        or x.device.type != "cpu"
        or x.is_meta
        or torch.is_grad_enabled()
        or type(net.stem) is not FastConvBNAct
        or not isinstance(net.stem.conv, nn.Conv2d)
        or type(net.stages) is not nn.Sequential
        or "forward" in vars(net.stages)
    ):
        return None
    height, width = x.shape[-2:]

    def elems(channels: int, stride: int) -> int:
        return channels * -(-height // stride) * -(-width // stride)

    stride = net.stem.conv.stride[0]
    most, stages = max(elems(x.shape[1], 1), elems(net.stem.conv.out_channels, stride)), 0
    for stage in net.stages:
        if type(stage) is not nn.Sequential:
            break
        at, sizes = stride, []
        for block in stage:
            convs = [c for c in block.modules() if isinstance(c, nn.Conv2d)]
            sizes += [elems(c.out_channels, at * c.stride[0]) for c in convs]
            at *= max((c.stride[0] for c in convs), default=1)
        if at > _PREFIX_STRIDE:
            break
        most, stride, stages = max([most, *sizes]), at, stages + 1
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    batch, most = x.shape[0], most * dtype.itemsize
    chunks = -(-batch // min(max(1, _CHUNK_BYTES // most), -(-batch // 2)))
    if stages == 0 or most * batch < _MMAP_BYTES or _hooked(*net.modules()):
        return None
    prefix = [net.stem, *(net.stages[i] for i in range(stages))]
    if not all(_per_sample(m) for unit in prefix for m in unit.modules()):
        return None
    return stages, chunks


def _sliced_prefix(
    net: nn.Module, x: torch.Tensor, stages: int, chunks: int, keep: set[int]
) -> dict[int, torch.Tensor]:
    """The stem and the first ``stages`` stages run on ``chunks`` slices of ``x``: the output
    of each stage in ``keep``, joined from its slices."""
    if net._run_channels_last():
        x = x.contiguous(memory_format=torch.channels_last)
    parts: dict[int, list[torch.Tensor]] = {i: [] for i in keep}
    for part in x.tensor_split(chunks):
        h = net.stem(part)
        for i in range(stages):
            h = net.stages[i](h)
            if i in keep:
                parts[i].append(h)
    return {i: torch.cat(p) for i, p in parts.items()}


class FastEfficientNet(_FastNet, EfficientNet):
    """``EfficientNet`` whose training forward records activation recompute when asked for,
    and whose CPU inference runs the high-resolution prefix a few images at a time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_recompute and self.training and torch.is_grad_enabled():
            with recompute_activations():
                return super().forward(x)
        return super().forward(x)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        split = _prefix_split(self, x)
        if split is None:
            return super()._features(x)
        stages, chunks = split
        h = _sliced_prefix(self, x, stages, chunks, {stages - 1})[stages - 1]
        for i in range(stages, len(self.stages)):
            h = self.stages[i](h)
        return self.head(h)


class FastEfficientNetFeatures(_FastNet, EfficientNetFeatures):
    """``EfficientNetFeatures`` with the same fast paths as ``FastEfficientNet``; a tapped
    prefix stage's map is joined from its slices like the one the next stage reads."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.activation_recompute and self.training and torch.is_grad_enabled():
            with recompute_activations():
                return super().forward(x)
        return super().forward(x)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        split = _prefix_split(self, x)
        if split is None:
            return super()._forward(x)
        stages, chunks = split
        keep = {i for i in self._taps if i < stages} | {stages - 1}
        joined = _sliced_prefix(self, x, stages, chunks, keep)
        out = [joined[i] for i in range(stages) if i in self._taps]
        h = joined[stages - 1]
        for i in range(stages, len(self.stages)):
            h = self.stages[i](h)
            if i in self._taps:
                out.append(h)
        if self.head is not None:
            out.append(self.head(h))
        return out


FAST_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    ConvBNAct: FastConvBNAct,
    SqueezeExcite: FastSqueezeExcite,
    MBConv: FastMBConv,
    FusedMBConv: FastFusedMBConv,
    EfficientNet: FastEfficientNet,
    EfficientNetFeatures: FastEfficientNetFeatures,
}
PLAIN_CLASSES = {fast: plain for plain, fast in FAST_CLASSES.items()}


def accelerate(
    model: nn.Module, enable: bool = True, *, channels_last: bool | None = None
) -> nn.Module:
    """Install (or with ``enable=False`` remove) effnet's fast paths in ``model``, in place.

    Only modules of exactly effnet's own classes change; a user subclass or a swapped-in module
    keeps its own ``forward``. ``channels_last=None`` picks NHWC where it is faster (a model on
    the CPU); it converts the conv weights and makes the network run NHWC inside, while its
    outputs keep the input's memory format. Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"accelerate needs an nn.Module, got {type(model).__name__}")
    table = FAST_CLASSES if enable else PLAIN_CLASSES
    nets = []
    for m in model.modules():
        new = table.get(type(m))
        if new is not None:
            m.__class__ = new
        if isinstance(m, EfficientNet | EfficientNetFeatures):
            nets.append(m)
    if not enable:
        return model
    if channels_last is None:
        param = next(model.parameters(), None)
        channels_last = param is not None and param.device.type == "cpu"
    for net in nets:
        net.channels_last = channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def is_accelerated(model: nn.Module) -> bool:
    """Whether ``accelerate`` has installed the fast paths in ``model``."""
    return any(type(m) in PLAIN_CLASSES for m in model.modules())
