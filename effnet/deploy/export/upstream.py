"""Export a model's weights in timm's or torchvision's names (``effnet.convert``), verified.

The file is a state dict for the upstream model ``timm_name`` / ``torchvision_name`` names:
safetensors by default (timm's Hugging Face format), ``torch.save`` for a ``.pth`` / ``.pt`` /
``.bin`` name. Verification reads the file back, converts it to effnet names and requires every
tensor to be bit-identical to the model's, then compares outputs (batch 1 and 3).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import safetensors.torch
import torch
from safetensors.torch import load_file
from torch import nn

from effnet.deploy.export.common import ExportResult, compare, eval_mode, input_spec
from effnet.model import EfficientNet
from effnet.weights.convert import convert_state_dict
from effnet.weights.export_keys import to_timm, to_torchvision
from effnet.weights.serialize import atomic_write

CONVERTERS = {"timm": to_timm, "torchvision": to_torchvision}
TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def export_upstream(model: nn.Module, output: Path, fmt: str, *, verify: bool) -> ExportResult:
    start = time.perf_counter()
    state = {k: v.detach().cpu().contiguous() for k, v in CONVERTERS[fmt](model).items()}
    in_chans, size = input_spec(model, None)
    result = ExportResult(output, fmt, size)

    def write(tmp: str) -> None:
        if output.suffix in TORCH_SUFFIXES:
            torch.save(state, tmp)
        else:
            safetensors.torch.save_file(state, tmp, metadata={"format": "pt"})
        if verify:
            torch_file = output.suffix in TORCH_SUFFIXES
            load = partial(torch.load, weights_only=True) if torch_file else load_file
            result.max_abs_diff = _verify(model, load(tmp), in_chans, size)

    atomic_write(output, write)
    result.seconds = time.perf_counter() - start
    return result


def _verify(model: nn.Module, written: dict, in_chans: int, size: int) -> dict[int, float]:
    """Back to effnet names bit for bit, and the same outputs from a model built from them."""
    back = convert_state_dict(written).state_dict
    own = model.state_dict()
    if set(back) != set(own) or any(not torch.equal(back[k], own[k].cpu()) for k in own):
        raise ValueError("the written weights do not convert back to the model's; not written")
    reloaded = EfficientNet.from_record(model.record)
    reloaded.load_state_dict(back)
    with eval_mode(model), torch.inference_mode():
        return compare(model, reloaded.eval(), in_chans, min(size, 64))
