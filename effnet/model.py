"""The EfficientNet network: stem -> stages of MBConv / Fused-MBConv blocks -> head -> FC."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from effnet.blocks import BLOCKS
from effnet.layers import ConvBNAct
from effnet.scaling import ModelPlan, from_fields

# Global pooling of the head, by timm's names: "" keeps the map (B, C, H, W); "avgmax" is
# (avg + max) / 2; "catavgmax" concatenates both (2C features). The others are (B, C).
POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


class GlobalPool(nn.Module):
    """The head's global pooling, selected by ``pool_type`` (``POOL_TYPES``), flattened to
    (B, C) unless ``pool_type`` is ``""`` (the feature map passes through unpooled)."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")
        self.pool_type = pool_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "":
            return x
        if self.pool_type == "avg":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.pool_type == "max":
            return F.adaptive_max_pool2d(x, 1).flatten(1)
        avg, peak = F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)
        if self.pool_type == "avgmax":
            return (0.5 * (avg + peak)).flatten(1)
        return torch.cat((avg, peak), 1).flatten(1)

    def feat_mult(self) -> int:
        """Pooled features per channel: 2 for ``catavgmax``, else 1."""
        return 2 if self.pool_type == "catavgmax" else 1

    def is_identity(self) -> bool:
        return self.pool_type == ""

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


class FeatureInfo(list):
    """The feature maps a model offers, as timm's ``FeatureInfo``: a list of the selected
    entries (dicts with ``module``, ``num_chs``, ``reduction``, ``stage``), so effnet's list
    API keeps working, plus ``channels()`` / ``reduction()`` / ``module_name()`` /
    ``get_dicts()`` / ``get()`` / ``from_other()``.

    ``info`` holds every entry and ``out_indices`` the selected ones. As in timm, an ``idx``
    argument to the accessors indexes ``info`` (all entries), ignoring the selection; indexing
    and iterating the object itself give the selected entries (effnet's API; the same as
    timm's for the default ``out_indices``). ``stage`` is the entry's position in
    ``as_sequential()`` (the stem is 0), which is what torchvision's ``return_layers`` name.
    """

    def __init__(self, info: list[dict[str, Any]], out_indices: tuple[int, ...] | None = None):
        self.info = [dict(f) for f in info]
        n = len(self.info)
        self.out_indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        for i in self.out_indices:
            if not 0 <= i < n:
                raise ValueError(f"feature index must be in [0, {n - 1}], got {i}")
        super().__init__(self.info[i] for i in self.out_indices)

    def from_other(self, out_indices: tuple[int, ...]) -> FeatureInfo:
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | list[int] | tuple[int, ...] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, list | tuple):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: list[str] | None = None, idx: Any = None) -> Any:
        def pick(i: int) -> dict[str, Any]:
            return self.info[i] if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, list | tuple):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: Any = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: Any = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: Any = None) -> Any:
        return self.get("module", idx)


def feature_take_indices(n: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple:
    """(absolute indices, the largest) of ``n`` feature points, as timm reads them:
    ``None`` all, an int the last n, a list those (negative from the end)."""
    if indices is None:
        indices = n
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"indices (the last n) must be in [1, {n}], got {indices}")
        take = list(range(n - indices, n))
    else:
        take = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
                raise ValueError(f"feature indices must be integers in [{-n}, {n - 1}], got {i!r}")
            take.append(i % n)
        if not take:
            raise ValueError("indices must name at least one feature point, got an empty list")
    return take, max(take)


@dataclass(frozen=True, slots=True)
class BuildRecord:
    """How a model was built: its plan and its head, enough to rebuild the architecture exactly.

    ``name`` is the registry name for ``create_model`` models, else the plan's family name.
    ``to_dict`` is what model files store; ``from_dict`` reads it back (one-line ValueError).
    """

    plan: ModelPlan
    num_classes: int = 1000
    in_chans: int = 3
    drop_rate: float = 0.2
    name: str = ""
    global_pool: str = "avg"

    def __post_init__(self) -> None:
        if not isinstance(self.plan, ModelPlan):
            raise ValueError(f"plan must be a ModelPlan, got {type(self.plan).__name__}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {self.in_chans}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if self.global_pool not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {self.global_pool!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "drop_rate": self.drop_rate,
            "plan": self.plan.to_dict(),
        }
        if self.global_pool != "avg":  # files of the default head stay readable by older effnet
            out["global_pool"] = self.global_pool
        return out

    @classmethod
    def from_dict(cls, data: Any) -> BuildRecord:
        if not isinstance(data, dict) or "plan" not in data:
            raise ValueError(f"a build record must be a dict with a plan, got {data!r:.80}")
        return from_fields(cls, {**data, "plan": ModelPlan.from_dict(data["plan"])})

    @property
    def build_args(self) -> dict[str, Any]:
        """The flat summary effnet 0.1 stored (``create_model`` keywords), for readers of it."""
        p = self.plan
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "width_mult": p.width,
            "depth_mult": p.depth,
            "drop_rate": self.drop_rate,
            "drop_path_rate": p.drop_path_rate,
            "act": p.act,
            "se": any(b.se_ch for b in p.blocks),
            "bn_eps": p.bn_eps,
            "bn_momentum": p.bn_momentum,
            "padding": p.padding,
            "shortcut": p.shortcut,
        }


class EfficientNet(nn.Module):
    """An EfficientNet built from a ``ModelPlan``.

    ``forward_features`` returns the head conv output (B, C_head, H/32, W/32); ``forward_head``
    pools (``global_pool``, timm's pool types), applies dropout and classifies, or returns the
    pooled vector with ``pre_logits=True``; ``num_classes=0, global_pool=""`` makes ``forward``
    return the unpooled map. ``record`` (a ``BuildRecord``) says how it was built;
    ``pretrained_cfg`` (alias ``default_cfg``) is the preprocessing of its weights
    (``effnet.data_config``; none for a model built straight from a plan) plus timm's
    architecture keys ``first_conv``, ``classifier``, ``num_classes`` and ``pool_size``.
    """

    # Python-side descriptions of the build; TorchScript compiles only the forward paths.
    __jit_unused_properties__: ClassVar[list[str]] = [
        "plan",
        "num_classes",
        "in_chans",
        "variant",
        "build_args",
        "global_pool",
        "head_hidden_size",
        "pretrained_cfg",
        "default_cfg",
    ]

    def __init__(
        self,
        plan: ModelPlan,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        *,
        name: str | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self.record = BuildRecord(
            plan, num_classes, in_chans, drop_rate, name or plan.name, global_pool
        )
        self.num_features = plan.head_ch
        self.grad_checkpointing = False
        # Rebuild BN+SiLU outputs in backward instead of storing them (less memory, more time);
        # a fast-path feature: it takes effect once effnet.accelerate has run on the model.
        self.activation_recompute = False
        # Run the network in channels-last (NHWC) inside; outputs keep the input's layout.
        self.channels_last = False
        bn = {"bn_eps": plan.bn_eps, "bn_momentum": plan.bn_momentum}
        conv = {"act": plan.act, "padding": plan.padding}
        self.stem = ConvBNAct(in_chans, plan.stem_ch, 3, 2, **conv, **bn)
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    *(
                        BLOCKS[b.kind](
                            b, plan.act, padding=plan.padding, shortcut=plan.shortcut, **bn
                        )
                        for b in plan.stage_blocks(s)
                    )
                )
                for s in range(plan.num_stages)
            )
        )
        self.head = ConvBNAct(plan.blocks[-1].out_ch, plan.head_ch, 1, act=plan.act, **bn)
        self.pool = GlobalPool(global_pool)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = self._new_classifier(num_classes, self.head_hidden_size)
        self.pretrained_cfg = {}
        self.feature_info = _feature_info(plan)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return _like_input(self._features(x), x, self._run_channels_last())

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self._run_channels_last():
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            x = self._checkpointed_stages(x)
        else:
            x = self.stages(x)
        return self.head(x)

    def _run_channels_last(self) -> bool:
        return self.channels_last

    @torch.jit.unused
    def _checkpointed_stages(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = _checkpointed(stage, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Unpooled (global_pool="") outputs are feature maps: in the input's layout too.
        return _like_input(self.forward_head(self._features(x)), x, self._run_channels_last())

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 removes it) and, if
        ``global_pool`` is given, the pooling (timm's names; ``None`` keeps the current one)."""
        pool = GlobalPool(self.pool.pool_type if global_pool is None else global_pool)
        fc = self._new_classifier(num_classes, self.num_features * pool.feat_mult())
        self.record = replace(self.record, num_classes=num_classes, global_pool=pool.pool_type)
        self.pool = pool.train(self.training)
        self.classifier = fc.train(self.training)
        self._sync_cfg()

    def _new_classifier(self, num_classes: int, in_features: int) -> nn.Module:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise ValueError(f"num_classes must be an integer, got {num_classes!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if not num_classes:
            return nn.Identity()
        param = next(self.parameters(), None)  # the new head lives where the model does
        like = {} if param is None else {"device": param.device, "dtype": param.dtype}
        fc = nn.Linear(in_features, num_classes, **like)
        init_weights(fc)
        return fc

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def _stage_ends(self) -> list[int]:
        """Positions (stem 0, stage s at s + 1) of the stage outputs ``feature_info`` lists."""
        return [f["stage"] for f in self.feature_info.info if f["module"] != "head"]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        extra_blocks: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm 1.0's ``forward_intermediates``: the feature maps at ``indices`` of the stage
        ends ``feature_info`` lists (the head excluded; ``extra_blocks=True``: the stem, then
        every stage), plus the final features unless ``intermediates_only``.

        ``indices``: None (all), an int (the last n) or a list (negative from the end).
        ``stop_early`` runs no stage past the last one asked for; the final features are then
        that stage's output (the head runs only after the last stage). ``norm`` is accepted
        for timm's signature: EfficientNet has no norm that applies to intermediates.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        ends = list(range(len(self.stages) + 1)) if extra_blocks else self._stage_ends()
        take, last = feature_take_indices(len(ends), indices)
        take, last = [ends[i] for i in take], ends[last]
        h = x.contiguous(memory_format=torch.channels_last) if self._run_channels_last() else x
        h = self.stem(h)
        out = [h] if 0 in take else []
        stages = self.stages[:last] if stop_early else self.stages
        checkpointed = self.grad_checkpointing and torch.is_grad_enabled()
        for i, stage in enumerate(stages, start=1):
            h = _checkpointed(stage, h) if checkpointed else stage(h)
            if i in take:
                out.append(h)
        out = [_like_input(t, x, self._run_channels_last()) for t in out]
        if intermediates_only:
            return out
        if len(stages) == len(self.stages):
            h = self.head(h)
        return _like_input(h, x, self._run_channels_last()), out

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
        extra_blocks: bool = False,
    ) -> list[int]:
        """timm's ``prune_intermediate_layers``: drop the stages after the last of ``indices``
        (as ``forward_intermediates`` reads them) and, when stages go, ``prune_head`` or
        ``prune_norm``, the head conv and classifier (``num_classes=0, global_pool=""``);
        ``num_features`` becomes the last kept map's channels. Returns the kept indices.

        A pruned model no longer matches its ``record``: keep its state dict, not a model file.
        """
        ends = list(range(len(self.stages) + 1)) if extra_blocks else self._stage_ends()
        take, last = feature_take_indices(len(ends), indices)
        last = ends[last]
        num_chs = self.plan.stage_blocks(last - 1)[-1].out_ch if last else self.plan.stem_ch
        prune_end = prune_norm or prune_head or last < len(self.stages)
        self.stages = self.stages[:last]
        if prune_end:
            self.head = nn.Identity()
            self.num_features = num_chs
            self.reset_classifier(0, "")
        return take

    def as_sequential(self) -> nn.Sequential:
        """The network as one ``nn.Sequential`` of its modules (shared, not copied): stem,
        each stage, head, pool, dropout, classifier; position ``feature_info[i]["stage"]`` is
        that feature's module, as torchvision's ``return_layers`` want it."""
        return nn.Sequential(
            self.stem, *self.stages, self.head, self.pool, self.dropout, self.classifier
        )

    @property
    def global_pool(self) -> GlobalPool:
        """The pooling module (timm's name for it); its ``pool_type`` is the pool's name."""
        return self.pool

    @property
    def head_hidden_size(self) -> int:
        """Width of the vector the classifier reads: ``num_features`` x the pool's multiple."""
        return self.num_features * self.pool.feat_mult()

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return self._cfg

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, Any]) -> None:
        self._cfg = dict(cfg)
        self._sync_cfg()

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name for ``pretrained_cfg`` (the same dict)."""
        return self._cfg

    def _sync_cfg(self) -> None:
        """Keep timm's architecture keys of ``pretrained_cfg`` true to the model."""
        for key in ARCH_CFG_KEYS:  # pool_size goes with an input_size that went
            self._cfg.pop(key, None)
        self._cfg.update(arch_cfg(self.num_classes, self._cfg.get("input_size")))

    @classmethod
    def from_record(cls, record: BuildRecord) -> EfficientNet:
        """The architecture ``record`` describes, freshly initialised."""
        return cls(
            record.plan,
            record.num_classes,
            record.in_chans,
            record.drop_rate,
            name=record.name,
            global_pool=record.global_pool,
        )

    @property
    def plan(self) -> ModelPlan:
        return self.record.plan

    @property
    def num_classes(self) -> int:
        return self.record.num_classes

    @property
    def in_chans(self) -> int:
        return self.record.in_chans

    @property
    def variant(self) -> str:
        """The registry name (or the plan's family name): ``record.name``."""
        return self.record.name

    @property
    def build_args(self) -> dict[str, Any]:
        """``record.build_args``: the flat ``create_model`` keywords effnet 0.1 stored."""
        return self.record.build_args

    def set_dropout(self, p: float) -> None:
        """Change the pre-classifier dropout rate (progressive learning raises it per stage)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.dropout.p = p

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Store only each stage's input and run the stage again in backward (least memory)."""
        self.grad_checkpointing = enable

    def set_activation_recompute(self, enable: bool = True) -> None:
        """Rebuild each SiLU(BN(x)) output from x in backward instead of storing it: about a
        third less training memory for about a tenth more time (docs/performance.md). It is
        part of the fused training path, so it takes effect after ``effnet.accelerate(model)``
        (which ``effnet train`` applies)."""
        if enable and not getattr(self, "fast", False):
            warnings.warn(
                "activation recompute runs on effnet's fused training path: call "
                "effnet.accelerate(model) for it to take effect",
                stacklevel=2,
            )
        self.activation_recompute = enable


def _checkpointed(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # Non-reentrant checkpointing restores the RNG state, so drop-path masks match; the
    # recompute must not count the batch twice in the BN running statistics.
    return checkpoint(stage, x, use_reentrant=False, context_fn=partial(_recompute_ctx, stage))


# The keys of ``pretrained_cfg`` that describe the architecture, not the data: always
# recomputed from the model, so model files do not store them.
ARCH_CFG_KEYS = ("first_conv", "classifier", "num_classes", "pool_size")


def arch_cfg(num_classes: int, input_size: Any = None) -> dict[str, Any]:
    """timm's architecture keys of a pretrained config, for effnet's module paths."""
    cfg: dict[str, Any] = {"first_conv": "stem.conv", "classifier": "classifier"}
    cfg["num_classes"] = num_classes
    if input_size:  # the head's map at the config's size: every model reduces by 32
        cfg["pool_size"] = tuple(math.ceil(int(n) / 32) for n in input_size[-2:])
    return cfg


def _like_input(out: torch.Tensor, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4D output in the memory format of the input: NCHW in, NCHW out."""
    if channels_last and not x.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous()
    return out


@contextmanager
def _keep_bn_stats(module: nn.Module):
    """Restore BN running statistics after a checkpoint recompute (they were updated once)."""
    saved = [
        (b, b.clone())
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b in (m.running_mean, m.running_var, m.num_batches_tracked)
        if b is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def _recompute_ctx(module: nn.Module):
    return nullcontext(), _keep_bn_stats(module)


def _feature_info(plan: ModelPlan) -> FeatureInfo:
    """One tap per reduction (the last stage at each stride), then the head conv. ``stage``
    is the tap's position in ``as_sequential()``: stage s at s + 1, the head after them."""
    info: list[dict[str, Any]] = []
    reduction = 2
    for s in range(plan.num_stages):
        blocks = plan.stage_blocks(s)
        reduction *= blocks[0].stride
        entry = {
            "module": f"stages.{s}",
            "num_chs": blocks[-1].out_ch,
            "reduction": reduction,
            "stage": s + 1,
        }
        if info and info[-1]["reduction"] == reduction:
            info[-1] = entry
        else:
            info.append(entry)
    head = {"module": "head", "num_chs": plan.head_ch, "reduction": reduction}
    info.append({**head, "stage": plan.num_stages + 1})
    return FeatureInfo(info)


class EfficientNetFeatures(nn.Module):
    """Multi-scale backbone: returns the feature maps listed in ``out_indices``.

    Indices 0..4 are the stage outputs at strides 2, 4, 8, 16, 32; index 5 (or -1) is the head conv.
    """

    # TorchScript compiles the forward path only (``pretrained_cfg`` mixes value types).
    __jit_unused_properties__: ClassVar[list[str]] = ["default_cfg"]

    def __init__(self, model: EfficientNet, out_indices: tuple[int, ...] = (0, 1, 2, 3, 4)) -> None:
        super().__init__()
        n = len(model.feature_info)
        idx = []
        for i in out_indices:
            if not -n <= i < n:
                raise ValueError(f"out_indices entries must be in [{-n}, {n - 1}], got {i}")
            idx.append(i % n)
        if not idx:
            raise ValueError("out_indices must name at least one feature level")
        self.out_indices = tuple(sorted(set(idx)))
        self.feature_info = model.feature_info.from_other(self.out_indices)
        self.plan = model.plan
        self.channels_last = model.channels_last
        self.activation_recompute = model.activation_recompute
        self.pretrained_cfg = model.pretrained_cfg
        self.stem = model.stem
        taps = [info["module"] for info in self.feature_info]
        last = max(self.out_indices)
        self.head = model.head if last == n - 1 else None
        n_stages = len(model.stages) if self.head is not None else int(taps[-1].split(".")[1]) + 1
        # Stages past the last tap are left out, so that every child module runs.
        self.stages = model.stages if n_stages == len(model.stages) else model.stages[:n_stages]
        self._taps = sorted({int(t.split(".")[1]) for t in taps if t.startswith("stages.")})
        # torchvision's IntermediateLayerGetter (BackboneWithFPN) over ``as_sequential()``:
        # child name -> output name, one per feature map.
        self.return_layers = {str(f["stage"]): str(i) for i, f in enumerate(self.feature_info)}

    def as_sequential(self) -> nn.Sequential:
        """stem, the kept stages and (if tapped) the head as one ``nn.Sequential`` of the same
        modules: ``BackboneWithFPN(feats.as_sequential(), feats.return_layers, ...)``."""
        head = [] if self.head is None else [self.head]
        return nn.Sequential(self.stem, *self.stages, *head)

    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [_like_input(f, x, self._run_channels_last()) for f in self._forward(x)]

    def _run_channels_last(self) -> bool:
        return self.channels_last

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        if self._run_channels_last():
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self._taps:
                out.append(x)
        if self.head is not None:
            out.append(self.head(x))
        return out


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """TF reference init: conv N(0, sqrt(2 / fan_out)) with fan_out = kh*kw*out/groups,
    linear U(+-1/sqrt(out)), BN gamma 1 / beta 0 (arXiv:1905.11946 code, tensorflow/tpu)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            fan_out = kh * kw * m.out_channels // m.groups
            m.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, nn.Linear):
            r = 1.0 / math.sqrt(m.out_features)
            m.weight.uniform_(-r, r)
            m.bias.zero_()
