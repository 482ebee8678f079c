"""Build the pieces of a run from its config: model, transforms, criterion, progressive stages."""

from __future__ import annotations

import torch
from torch import nn

from effnet.api import create_model
from effnet.data.transforms import batch_mixer, eval_transform, train_transform
from effnet.training.config import TrainConfig
from effnet.training.schedule import V2_PROGRESSIVE, Stage, progressive_stages


def build_model(cfg: TrainConfig, num_classes: int, class_names: list[str]) -> nn.Module:
    kwargs = dict(cfg.model_kwargs)
    if cfg.drop_rate is not None:
        kwargs["drop_rate"] = cfg.drop_rate
    try:
        model = create_model(
            cfg.model,
            num_classes=num_classes,
            pretrained=cfg.pretrained,
            weights_source=cfg.weights_source,
            drop_path_rate=cfg.drop_path_rate,
            **kwargs,
        )
    except TypeError as e:  # a model_kwargs key create_model does not take
        raise ValueError(f"model_kwargs {cfg.model_kwargs!r} not accepted: {e}") from None
    if cfg.pretrained is not None:
        # A new head on pretrained features: start near zero so the first steps do not push
        # large gradients from random logits into the pretrained backbone.
        head = model.get_classifier()
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
    data_cfg = dict(model.pretrained_cfg)
    data_cfg["input_size"] = (3, cfg.image_size, cfg.image_size)
    if cfg.crop_pct is not None:
        data_cfg["crop_pct"] = cfg.crop_pct
    model.pretrained_cfg = data_cfg
    model.class_names = list(class_names)
    return model


def head_parameters(model: nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith("classifier.")}


def set_trainable(model: nn.Module, frozen_backbone: bool, freeze_bn: bool) -> None:
    """Frozen backbone: only the classifier learns and backbone BN keeps its statistics."""
    head = head_parameters(model)
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen_backbone or name in head)
    model.train()
    if frozen_backbone or freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def transforms_for(cfg: TrainConfig, data_cfg: dict, image_size: int, magnitude: float):
    train = train_transform(
        data_cfg,
        image_size,
        augment=cfg.augment,
        hflip=cfg.hflip,
        scale_min=cfg.crop_scale_min,
        magnitude=magnitude,
    )
    return train, eval_transform(data_cfg, image_size)


def mixer_for(cfg: TrainConfig, mixup: float, num_classes: int):
    return batch_mixer(mixup, cfg.cutmix_alpha if mixup > 0 or cfg.cutmix_alpha else 0, num_classes)


def stages_for(cfg: TrainConfig, default_dropout: float) -> list[Stage]:
    """Progressive stages (or one stage holding the fixed settings)."""
    if not cfg.progressive:
        return [
            Stage(
                0,
                0,
                cfg.epochs,
                cfg.image_size,
                cfg.randaugment_magnitude,
                cfg.mixup_alpha,
                default_dropout,
            )
        ]
    paper = V2_PROGRESSIVE.get(cfg.model)
    size = cfg.prog_image_size or (
        paper["image_size"] if paper else (max(32, int(cfg.image_size * 0.6)), cfg.image_size)
    )
    magnitude = cfg.prog_magnitude or (paper["magnitude"] if paper else (5, 15))
    mixup = cfg.prog_mixup or (paper["mixup"] if paper else (0.0, cfg.mixup_alpha))
    dropout = cfg.prog_dropout or (paper["dropout"] if paper else (0.1, 0.3))
    return progressive_stages(cfg.epochs, cfg.stages, size, magnitude, mixup, dropout)


def criterion_for(cfg: TrainConfig) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "none":
        return None
    if cfg.amp == "fp16" and device.type == "cpu":
        raise ValueError("amp 'fp16' needs a GPU; use --amp bf16 on CPU")
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16
