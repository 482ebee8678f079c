"""Subjects and instruments for tests/test_contracts.py (the nn.Module contract suite).

A ``Subject`` is one model under test: an effnet registered name (tiny or native size), an
effnet model passed through ``effnet.accelerate``, or a control (torchvision's or timm's own
EfficientNet). It knows how to build the model and the few things that differ between the three
libraries (where the feature maps are, how to convert norms, whether ``in_chans`` exists).

The instruments count module calls WITHOUT hooks: each module's ``forward`` is wrapped on the
instance, so code that behaves differently when hooks are present cannot hide a skipped module.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

import effnet
from effnet.registry import resolve

NUM_CLASSES = 10
ACCELERATE = effnet.accelerate

# The four big V2 families repeat their blocks 2-32 times per stage; V1, Lite and V2-B 1-4 times.
_DEEP_V2 = ("efficientnetv2_s", "efficientnetv2_m", "efficientnetv2_l", "efficientnetv2_xl")
# One registered model per family (V1, Lite, V2-B, V2); the default run tests these.
FAMILIES = ("efficientnet_b0", "efficientnet_lite0", "efficientnetv2_b0", "efficientnetv2_s")
# Also tested at their native width and depth (slow part).
NATIVE = ("efficientnet_b0", "efficientnet_lite0", "efficientnetv2_b0")
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def tiny_kwargs(name: str) -> dict[str, float]:
    """A quarter of the variant's width and about a third of its depth (capped), so every stage,
    block kind, SE, activation and identity-skip block of the family is still there."""
    _, width, depth, _ = resolve(name)
    depth_scale = 0.2 if name in _DEEP_V2 else 0.3
    return {"width_mult": min(0.25 * width, 0.35), "depth_mult": min(depth_scale * depth, 0.5)}


@dataclass(frozen=True)
class Subject:
    id: str
    kind: str  # "effnet", "torchvision" or "timm"
    name: str
    tiny: bool = True
    accelerated: bool = False

    @property
    def effnet(self) -> bool:
        return self.kind == "effnet"

    @property
    def has_in_chans(self) -> bool:
        return self.kind != "torchvision"

    def build(self, **overrides) -> nn.Module:
        """A fresh copy of the model (built once, then deep-copied), BN statistics randomised."""
        return copy.deepcopy(_pristine(self, tuple(sorted(overrides.items()))))

    def build_kwargs(self, **overrides) -> dict:
        kw = {"num_classes": NUM_CLASSES}
        if self.effnet and self.tiny:
            kw.update(tiny_kwargs(self.name))
        kw.update(overrides)
        return kw

    def forward_features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "torchvision":
            return model.features(x)
        return model.forward_features(x)

    def features_only(self, **overrides) -> nn.Module:
        """The library's multi-scale backbone (torchvision: its FX feature extractor)."""
        if self.kind == "torchvision":
            from torchvision.models.feature_extraction import create_feature_extractor

            model = self.build(**overrides)
            return _ListOutput(create_feature_extractor(model, {t: t for t in self.taps(model)}))
        return self.build(features_only=True, **overrides)

    def taps(self, model: nn.Module) -> list[str]:
        """Qualified names of the modules whose outputs are the feature maps."""
        if self.kind == "torchvision":
            return [f"features.{i}" for i in range(1, len(model.features))]
        return [f["module"] for f in model.feature_info]

    def convert_sync_bn(self, model: nn.Module) -> nn.Module:
        if self.kind == "timm":
            # timm's BatchNormAct2d carries its activation; timm's own helper keeps it.
            from timm.layers import convert_sync_batchnorm

            return convert_sync_batchnorm(model)
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def freeze_bn(self, model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
        """Every BatchNorm replaced by a frozen one with the same statistics; (model, frozen)."""
        if self.kind == "timm":
            from timm.layers import FrozenBatchNormAct2d, freeze_batch_norm_2d

            model = freeze_batch_norm_2d(model)
            return model, [m for m in model.modules() if isinstance(m, FrozenBatchNormAct2d)]
        from torchvision.ops import FrozenBatchNorm2d

        def frozen(bn: nn.Module) -> nn.Module:
            f = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(f, key).copy_(getattr(bn, key).detach())
            return f

        return model, swap_modules(model, is_batchnorm, frozen)

    def make(self, **overrides) -> nn.Module:
        """Build uncached at the test size (BN statistics as the library leaves them)."""
        tiny = self.tiny and not self.effnet
        return self.construct(tiny=tiny, **self.build_kwargs(**overrides))

    def construct(self, device: str | None = None, tiny: bool = False, **kw) -> nn.Module:
        """Build uncached: the library's defaults, plus ``kw``; ``tiny`` gives the controls the
        size of the tiny effnet builds (effnet's come through ``build_kwargs``)."""
        if self.kind == "effnet":
            return effnet.create_model(self.name, device=device, **kw)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            if self.kind == "torchvision":
                return _torchvision_model(self.name, tiny, **kw)
            import timm

            if tiny:  # timm's efficientnet_b0 pins its multipliers; its generator takes them
                from timm.models.efficientnet import _gen_efficientnet

                return _gen_efficientnet(self.name, **CONTROL_TINY_TIMM, **kw)
            return timm.create_model(self.name, **kw)

    def num_features(self, model: nn.Module) -> int:
        if self.kind == "torchvision":
            return model.classifier[-1].in_features
        return model.num_features

    def resolution(self) -> int:
        if self.effnet:
            return effnet.data_config(self.name)["input_size"][-1]
        return 384 if "v2" in self.name else 224


@functools.lru_cache(maxsize=64)
def _pristine(subject: Subject, overrides: tuple) -> nn.Module:
    torch.manual_seed(zlib.crc32(subject.id.encode()))
    model = subject.make(**dict(overrides))
    randomize_norm_stats(model)
    if subject.accelerated:
        out = ACCELERATE(model)
        assert out is model, "effnet.accelerate must work in place and return the model"
    return model


class _ListOutput(nn.Module):
    """A dict-returning feature extractor as a list of maps (effnet's and timm's convention)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.inner(x).values())


def effnet_subjects(tiny: bool = True, names: Iterable[str] | None = None) -> list[Subject]:
    names = effnet.list_models() if names is None else names
    suffix = "" if tiny else "-native"
    return [Subject(f"{n}{suffix}", "effnet", n, tiny=tiny) for n in names]


CONTROL_TINY_TIMM = {"channel_multiplier": 0.25, "depth_multiplier": 0.3}


def _torchvision_model(name: str, tiny: bool, **kw) -> nn.Module:
    import torchvision
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf

    kw.pop("features_only", None)
    if not tiny:
        return getattr(torchvision.models, name)(weights=None, **kw)
    # torchvision's own builder at effnet's tiny B0 size (width 0.25, depth 0.3).
    setting, last = _efficientnet_conf(name, width_mult=0.25, depth_mult=0.3)
    return EfficientNet(setting, dropout=0.2, last_channel=last, **kw)


CONTROLS = [
    Subject("tv_efficientnet_b0-tiny", "torchvision", "efficientnet_b0"),
    Subject("timm_efficientnet_b0-tiny", "timm", "efficientnet_b0"),
    Subject("tv_efficientnet_b0", "torchvision", "efficientnet_b0", tiny=False),
    Subject("tv_efficientnet_v2_s", "torchvision", "efficientnet_v2_s", tiny=False),
    Subject("timm_efficientnet_b0", "timm", "efficientnet_b0", tiny=False),
]
ACCELERATED = [
    Subject(f"accel-{n}", "effnet", n, accelerated=True)
    for n in ("efficientnet_b0", "efficientnet_lite0", "efficientnetv2_b0")
]


# ----------------------------------------------------------------------------- model surgery


def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if is_batchnorm(m)]


def swap_modules(
    model: nn.Module, pick: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]
) -> list[nn.Module]:
    """Replace every module for which ``pick`` holds by ``make(old)``; returns the new ones."""
    new = []
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if pick(child):
                repl = make(child)
                setattr(parent, child_name, repl)
                new.append(repl)
    return new


@torch.no_grad()
def randomize_norm_stats(model: nn.Module) -> None:
    """Random BN affine terms, running statistics measured on random images (one train-mode
    pass with momentum 1), then perturbed: every BN matters in eval mode and the network stays
    well conditioned (fresh statistics would make eval BNs nearly the identity, random ones
    would make the outputs blow up or stop depending on the input)."""
    bns = batchnorms(model)
    g = torch.Generator().manual_seed(11)
    for bn in bns:
        if bn.weight is not None:
            bn.weight.copy_(torch.empty(bn.weight.shape).uniform_(0.7, 1.3, generator=g))
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 1.0
    was_training = model.training
    model.train()
    torch.manual_seed(12)
    in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    model(images(4, 64, chans=in_chans, seed=13))
    model.train(was_training)
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
        if bn.running_var is not None:
            std = bn.running_var.sqrt()
            bn.running_mean.add_(torch.randn(std.shape, generator=g) * 0.1 * std)
            bn.running_var.mul_(torch.empty(std.shape).uniform_(0.8, 1.25, generator=g))
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.zero_()


# --------------------------------------------------------------------------------- inputs


def images(batch: int, size: int | tuple[int, int] = 32, chans: int = 3, seed: int = 1):
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, chans, h, w, generator=g)


def labels(batch: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, NUM_CLASSES, (batch,), generator=g)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.detach().abs().max().clamp_min(1e-12)
    return float((actual.detach() - expected.detach()).abs().max() / scale)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = rel_err(actual, expected)
    assert err <= tol, f"{what}: max error {err:.2e} of the largest value (tolerance {tol:.0e})"


def assert_differs(actual: torch.Tensor, expected: torch.Tensor, what: str, tol: float = 1e-3):
    err = rel_err(actual, expected)
    assert err > tol, f"{what}: output did not change (max change {err:.2e} of the largest value)"


def flat_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


# ----------------------------------------------------------------------- hook-free instruments


@contextmanager
def count_calls(modules: Iterable[nn.Module]) -> Iterator[dict[int, int]]:
    """Count how often each module's forward runs, by wrapping ``forward`` on the instance (no
    hooks are registered). Yields {id(module): calls}."""
    counts: dict[int, int] = {}
    wrapped = []
    for m in modules:
        if id(m) in counts:
            continue
        key = id(m)
        counts[key] = 0
        inner = m.forward

        def forward(*args, _inner=inner, _key=key, **kwargs):
            counts[_key] += 1
            return _inner(*args, **kwargs)

        m.forward = forward
        wrapped.append(m)
    try:
        yield counts
    finally:
        for m in wrapped:
            del m.forward


@contextmanager
def record_outputs(model: nn.Module, names: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    """The last output of each named submodule (instance-level forward wrappers, no hooks)."""
    seen: dict[str, torch.Tensor] = {}
    wrapped = []
    for name in names:
        m = model.get_submodule(name)
        inner = m.forward

        def forward(*args, _inner=inner, _name=name, **kwargs):
            out = _inner(*args, **kwargs)
            seen[_name] = out
            return out

        m.forward = forward
        wrapped.append(m)
    try:
        yield seen
    finally:
        for m in wrapped:
            del m.forward


@contextmanager
def hook_calls(modules: Iterable[nn.Module], pre: bool = False) -> Iterator[dict[int, int]]:
    """Count calls with forward (or pre-forward) hooks, what profilers and feature taps use."""
    counts: dict[int, int] = {}
    handles = []
    for m in modules:
        key = id(m)
        counts[key] = 0

        def hook(mod, *args, _key=key):
            counts[_key] += 1

        register = m.register_forward_pre_hook if pre else m.register_forward_hook
        handles.append(register(hook))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


# Standard activation classes; "activation-like" also catches a library's own SiLU/Swish class.
ACT_TYPES = (nn.SiLU, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Mish)
_ACT_NAMES = ("silu", "swish", "relu", "gelu", "elu", "mish", "hardswish")
_DROP_PATH_NAMES = ("droppath", "stochasticdepth")


def is_activation(m: nn.Module) -> bool:
    if isinstance(m, ACT_TYPES):
        return True
    return is_stateless(m) and any(k in type(m).__name__.lower() for k in _ACT_NAMES)


def is_drop_path(m: nn.Module) -> bool:
    return any(k in type(m).__name__.lower() for k in _DROP_PATH_NAMES)


def is_stateless(m: nn.Module) -> bool:
    return next(m.parameters(), None) is None and next(m.buffers(), None) is None


def called_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose forward must run in every forward of ``model``: every module holding
    parameters or buffers, and every activation. Exempt: plain nn.Sequential / ModuleList /
    ModuleDict (a parent may iterate or index them instead; their children must still run), and
    other stateless modules (Identity, Dropout, pooling, drop path), which hide no computation:
    torchvision's and timm's MBConv keep a StochasticDepth / Identity drop path in blocks without
    a residual and never call it. Whether drop path runs where it matters is checked by
    replacing it (test_drop_path_replacement_changes_output)."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if type(m) not in CONTAINERS and (not is_stateless(m) or is_activation(m))
    ]


def missing_calls(named: list[tuple[str, nn.Module]], counts: dict[int, int]) -> list[str]:
    return [f"{n or '<root>'} ({type(m).__name__})" for n, m in named if counts[id(m)] == 0]


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)


def feature_specs(module: nn.Module) -> list[tuple[int, int]] | None:
    """(channels, reduction) per feature map from ``feature_info`` (a list of dicts, or timm's
    FeatureInfo object); None where the module has none (torchvision)."""
    info = getattr(module, "feature_info", None)
    if info is None:
        return None
    if hasattr(info, "channels"):
        return list(zip(info.channels(), info.reduction(), strict=True))
    return [(f["num_chs"], f["reduction"]) for f in info]
