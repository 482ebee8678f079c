"""The EfficientNet network: stem -> stages of MBConv / Fused-MBConv blocks -> head -> FC."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from effnet.blocks import BLOCKS
from effnet.layers import ConvBNAct
from effnet.scaling import ModelPlan, from_fields


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

    def __post_init__(self) -> None:
        if not isinstance(self.plan, ModelPlan):
            raise ValueError(f"plan must be a ModelPlan, got {type(self.plan).__name__}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {self.in_chans}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "drop_rate": self.drop_rate,
            "plan": self.plan.to_dict(),
        }

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
    pools, applies dropout and classifies, or returns the pooled vector with ``pre_logits=True``.
    ``record`` (a ``BuildRecord``) says how it was built; ``pretrained_cfg`` is the preprocessing
    of its weights (``effnet.data_config``), empty for a model built straight from a plan.
    """

    # Python-side descriptions of the build; TorchScript compiles only the forward paths.
    __jit_unused_properties__: ClassVar[list[str]] = [
        "plan",
        "num_classes",
        "in_chans",
        "variant",
        "build_args",
    ]

    def __init__(
        self,
        plan: ModelPlan,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.record = BuildRecord(plan, num_classes, in_chans, drop_rate, name or plan.name)
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
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(plan.head_ch, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg: dict[str, Any] = {}
        self.feature_info = _feature_info(plan)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return _like_input(self._features(x), x, self.channels_last)

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
            # Non-reentrant checkpointing restores the RNG state, so drop-path masks match; the
            # recompute must not count the batch twice in the BN running statistics.
            x = checkpoint(stage, x, use_reentrant=False, context_fn=partial(_recompute_ctx, stage))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self._features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 removes it)."""
        self.record = replace(self.record, num_classes=num_classes)
        self.classifier = (
            nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        )
        if num_classes:
            init_weights(self.classifier)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    @classmethod
    def from_record(cls, record: BuildRecord) -> EfficientNet:
        """The architecture ``record`` describes, freshly initialised."""
        return cls(
            record.plan, record.num_classes, record.in_chans, record.drop_rate, name=record.name
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


def _feature_info(plan: ModelPlan) -> list[dict[str, Any]]:
    """One tap per reduction (the last stage at each stride), then the head conv."""
    info: list[dict[str, Any]] = []
    reduction = 2
    for s in range(plan.num_stages):
        blocks = plan.stage_blocks(s)
        reduction *= blocks[0].stride
        entry = {"module": f"stages.{s}", "num_chs": blocks[-1].out_ch, "reduction": reduction}
        if info and info[-1]["reduction"] == reduction:
            info[-1] = entry
        else:
            info.append(entry)
    info.append({"module": "head", "num_chs": plan.head_ch, "reduction": reduction})
    return info


class EfficientNetFeatures(nn.Module):
    """Multi-scale backbone: returns the feature maps listed in ``out_indices``.

    Indices 0..4 are the stage outputs at strides 2, 4, 8, 16, 32; index 5 (or -1) is the head conv.
    """

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
        self.feature_info = [model.feature_info[i] for i in self.out_indices]
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

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [_like_input(f, x, self.channels_last) for f in self._forward(x)]

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
