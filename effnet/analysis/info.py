"""``model_info``: parameters and MACs, in total and per stage, read from the model's plan."""

from __future__ import annotations

from typing import Any

from torch import nn

from effnet.analysis.flops import plan_macs
from effnet.api import create_model
from effnet.model import EfficientNet


def model_info(name_or_model: str | nn.Module, image_size: int | None = None) -> dict[str, Any]:
    """Params, MACs (conv + linear multiply-accumulates, the papers' "FLOPs") and a per-stage table.

    A name is built on the meta device, so even L2 costs no memory.
    """
    base = (
        create_model(name_or_model, device="meta")
        if isinstance(name_or_model, str)
        else name_or_model
    )
    if not isinstance(base, EfficientNet):
        raise ValueError(
            f"model_info needs an effnet EfficientNet (create_model or EfficientNet(plan)), "
            f"got {type(base).__name__}"
        )
    p = base.plan
    res = image_size or base.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    if not isinstance(res, int) or res < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {res}")
    in_chans, num_classes = base.in_chans, base.num_classes
    macs = plan_macs(p, res, num_classes, in_chans)

    def params(mod: nn.Module | None) -> int:
        return sum(t.numel() for t in mod.parameters()) if mod is not None else 0

    stages = []
    for s, stage in enumerate(base.stages):
        blocks = p.stage_blocks(s)
        b0 = blocks[0]
        stages.append(
            {
                "stage": s + 1,
                "block": b0.kind,
                "kernel": b0.kernel,
                "stride": b0.stride,
                "expand": b0.mid_ch // b0.in_ch,
                "in_ch": b0.in_ch,
                "out_ch": b0.out_ch,
                "repeats": len(blocks),
                "se": b0.se_ch > 0,
                "params": params(stage),
                "macs": macs[f"stages.{s}"],
            }
        )
    return {
        "name": base.record.name,
        "params": params(base),
        "macs": sum(macs.values()),
        "image_size": res,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "act": p.act,
        "stem": {"out_ch": p.stem_ch, "params": params(base.stem), "macs": macs["stem"]},
        "stages": stages,
        "head": {"out_ch": p.head_ch, "params": params(base.head), "macs": macs["head"]},
        "classifier": {"params": params(base.classifier), "macs": macs["classifier"]},
        "drop_path": [round(b.drop_path, 6) for b in p.blocks],
        "data_config": dict(base.pretrained_cfg),
    }
