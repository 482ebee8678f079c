"""``optimize_for_inference``: a copy of a model prepared for fast fp32 inference.

BatchNorm is folded into the preceding convolution for good (one conv with a bias instead of a
conv and a normalisation pass), effnet's fast inference paths are installed (``effnet.accelerate``:
in-place activations and residual adds), weights and inputs use the channels-last layout on CPU,
and the result can go through ``torch.compile``. Outputs match the plain model in eval mode to float
reassociation error (tested below 1e-4).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from effnet.fast import accelerate
from effnet.layers import ConvBNAct, fold_bn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ConvBNAct's BatchNorm into its conv, in place; returns how many were folded."""
    n = 0
    for m in model.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            with torch.no_grad():
                weight, bias = fold_bn(m.conv, m.bn)
                m.conv.weight.copy_(weight)
                if m.conv.bias is None:
                    m.conv.bias = nn.Parameter(bias, requires_grad=False)
                else:
                    m.conv.bias.copy_(bias)
            m.bn = nn.Identity().train(m.training)  # in the model's mode, like its siblings
            n += 1
    return n


def optimize_for_inference(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool | None = None,
    compile: bool | str = False,
) -> nn.Module:
    """Return an eval-mode copy of ``model`` tuned for inference; ``model`` itself is untouched.

    Args:
        fold_bn: fold BatchNorm into the convolutions (the copy can no longer be trained).
        channels_last: NHWC weights and inputs; ``None`` picks it where it is faster (CPU).
        compile: ``True`` or a ``torch.compile`` mode name (``"max-autotune-no-cudagraphs"``...)
            to compile the copy; compilation happens on the first call.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"optimize_for_inference needs an nn.Module, got {type(model).__name__}")
    if compile is not False and compile is not True and compile not in COMPILE_MODES:
        raise ValueError(f"compile must be True, False or one of {COMPILE_MODES}, got {compile!r}")
    out = copy.deepcopy(model).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    if fold_bn:
        fold_batchnorm(out)
    device = next(out.parameters()).device
    use_cl = device.type == "cpu" if channels_last is None else channels_last
    accelerate(out, channels_last=use_cl)
    if not use_cl:  # a model accelerated before the copy has channels-last weights
        out = out.to(memory_format=torch.contiguous_format)
    if compile:
        mode = None if compile is True else compile
        out = torch.compile(out, mode=mode)
    return out
