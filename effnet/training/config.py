"""Training configuration: one dataclass, resolved from defaults <- YAML file <- overrides.

``validate`` rejects every invalid value or combination with a ValueError that names the option
and the value received, before any data is read or any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from effnet.registry import canonical_name, get_variant
from effnet.weights.pretrained import WEIGHTS_SOURCES

OPTIMIZERS = ("rmsprop", "sgd", "adamw")
SCHEDULES = ("cosine", "exponential", "constant")
AUGMENTS = ("none", "basic", "randaugment", "autoaugment")
AMP_MODES = ("none", "bf16", "fp16")
PROGRESS_MODES = ("auto", "bar", "log", "none")
LOGGERS = ("csv", "tensorboard", "mlflow")
MIN_IMAGE_SIZE = 32
# Options that describe a config file's own model: they apply only while the run trains that model
# (`--model OTHER` gets OTHER as published unless these are given along with it).
MODEL_BOUND = ("model_kwargs", "image_size", "crop_pct")


@dataclass
class TrainConfig:
    """Everything a run needs. Field comments are the CLI help texts' source of truth."""

    # data
    data: str = "digits"  # 'digits', an ImageFolder dir, or a CIFAR-10/100 folder
    val_fraction: float = 0.2  # held-out share when the data has no val split
    strict: bool = False  # refuse unreadable images up front instead of skipping them
    max_train_samples: int = 0  # 0 = all; a (stratified) subset for quick experiments
    max_val_samples: int = 0
    workers: int = 0
    # model
    model: str = "efficientnet_b0"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to create_model
    pretrained: str | None = None  # any create_model(pretrained=...) source; new head
    weights_source: str = "auto"  # how --pretrained weights were trained: auto, tf or torch
    image_size: int = 224  # default: the model's published (training) resolution
    crop_pct: float | None = None  # eval crop fraction (default: the model's data config)
    drop_rate: float | None = None  # classifier dropout; None = the variant's default
    drop_path_rate: float = 0.2  # stochastic depth
    freeze_epochs: int = 0  # train only the head for the first N epochs
    freeze_bn: bool = False  # keep BatchNorm in eval mode (fine-tuning)
    sync_bn: bool = False  # BatchNorm statistics over all processes' batches (torchrun)
    # optimisation
    epochs: int = 30
    batch_size: int = 64  # global batch (split across processes)
    optimizer: str = "adamw"
    lr: float = 4e-3
    lr_per_256: bool = False  # lr is per 256 images and scales with the batch size
    momentum: float = 0.9  # SGD / RMSProp momentum
    opt_eps: float | None = None  # optimizer epsilon (default: 1e-3 RMSProp, 1e-8 AdamW)
    weight_decay: float = 0.05
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    decay_rate: float = 0.97  # exponential schedule: x decay_rate every decay_epochs
    decay_epochs: float = 2.4
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    clip_grad: float | None = None  # max global grad norm
    ema_decay: float = 0.0  # 0 = no EMA of weights
    # augmentation
    augment: str = "basic"
    hflip: float = 0.5  # horizontal flip probability
    crop_scale_min: float = 0.08  # smallest area share of a random crop
    randaugment_magnitude: float = 9.0  # 0-30, as in the papers
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # progressive learning (EfficientNetV2 Algorithm 1)
    progressive: bool = False
    stages: int = 4
    prog_image_size: tuple[int, int] | None = None  # default: from the paper or the model
    prog_magnitude: tuple[float, float] | None = None
    prog_mixup: tuple[float, float] | None = None
    prog_dropout: tuple[float, float] | None = None
    # machinery
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: str = "none"
    channels_last: bool = False
    grad_checkpointing: bool = False
    activation_recompute: bool = False  # rebuild SiLU(BN(x)) in backward: less memory, slower
    compile: bool = False
    threads: int = 0  # torch intra-op threads for the run (put back after); 0 = torch's default
    out: str | None = None  # run folder; default runs/<model>-<data>-<time>
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps (0 = epoch ends only)
    progress: str = "auto"  # auto (bar on a terminal), bar, log, none
    loggers: list[str] = field(default_factory=list)  # csv, tensorboard, mlflow (several: a,b)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_PAIRS = ("prog_image_size", "prog_magnitude", "prog_mixup", "prog_dropout")


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        builtin = Path(__file__).resolve().parent.parent / "configs" / f"{p.stem}.yaml"
        if p.suffix in ("", ".yaml") and builtin.is_file() and len(p.parts) == 1:
            p = builtin
        else:
            raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        line = str(e).splitlines()[0]
        raise ValueError(f"{p}: not valid YAML ({line})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{p}: a config must be a mapping of option: value, got {type(data).__name__}"
        )
    return data


def resolve_config(
    yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the YAML file, then ``overrides`` (None values in overrides are ignored).

    The file's ``MODEL_BOUND`` options (model_kwargs, image_size, crop_pct) belong to the model
    it names: when ``overrides`` pick another model they are dropped unless ``overrides`` set them
    too, so ``model=NAME`` trains NAME as published. An image size given nowhere is the model's
    published training resolution.
    """
    values: dict[str, Any] = {}
    if yaml_path is not None:
        values.update(load_yaml(yaml_path))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "model" in values and "model" in given and not _same_model(values["model"], given["model"]):
        for k in MODEL_BOUND:
            if k in values and k not in given:
                del values[k]
    values.update(given)
    if "image_size" not in values and isinstance(values.get("model", TrainConfig.model), str):
        variant = get_variant(values.get("model", TrainConfig.model))
        values["image_size"] = variant.train_resolution or variant.resolution
    # `--epochs 1` on a config with a 1-epoch warmup: shorten the inherited warmup to half the
    # run instead of refusing; a warmup the user set explicitly is still validated as given.
    warmup = values.get("warmup_epochs", TrainConfig.warmup_epochs)
    epochs = values.get("epochs")
    if (
        "epochs" in given
        and "warmup_epochs" not in given
        and _num(warmup)
        and _num(epochs)
        and epochs > 0
        and warmup >= epochs
    ):
        values["warmup_epochs"] = epochs / 2
    return from_dict(values)


def _same_model(a: Any, b: Any) -> bool:
    """Whether two model names (aliases included) name the same variant."""
    if not (isinstance(a, str) and isinstance(b, str)):
        return a == b
    try:
        return get_variant(a) is get_variant(b)
    except ValueError:
        return a == b


def from_dict(values: dict[str, Any]) -> TrainConfig:
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(FIELDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown training option {unknown[0]!r}{hint}")
    values = dict(values)
    for k in _PAIRS:
        v = values.get(k)
        if v is not None:
            if not isinstance(v, list | tuple) or len(v) != 2:
                raise ValueError(f"{k} must be a pair [start, end], got {v!r}")
            values[k] = tuple(v)
    if values.get("model_kwargs") is None:
        values["model_kwargs"] = {}
    values["loggers"] = _names(values.get("loggers"))
    if isinstance(values.get("model"), str):  # efficientnet-lite0 -> efficientnet_lite0
        values["model"] = canonical_name(values["model"])
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def _names(v: Any) -> list[str]:
    """A list of names from a list or a comma/space-separated string (``"csv,tensorboard"``)."""
    if v is None:
        return []
    if isinstance(v, str):
        v = v.replace(",", " ").split()
    _check(isinstance(v, list | tuple), "loggers", v, "a list of names")
    return list(dict.fromkeys(str(x).strip().lower() for x in v))


def _check(ok: bool, name: str, value: Any, need: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {need}, got {value!r}")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise ValueError naming the first invalid option (and its value); return ``cfg``."""
    for check in (_check_basics, _check_ranges, _check_model_options, _check_progressive):
        check(cfg)
    return cfg


def _check_basics(c: TrainConfig) -> None:
    """Names, choices and sizes."""
    get_variant(c.model)  # unknown model -> ValueError with suggestions
    _check(isinstance(c.data, str) and bool(c.data), "data", c.data, "a dataset name or folder")
    _check(_int(c.epochs) and c.epochs > 0, "epochs", c.epochs, "a positive integer")
    _check(
        _int(c.batch_size) and c.batch_size > 0, "batch_size", c.batch_size, "a positive integer"
    )
    _check(_num(c.lr) and c.lr > 0, "lr", c.lr, "a positive number")
    _check(c.optimizer in OPTIMIZERS, "optimizer", c.optimizer, f"one of {', '.join(OPTIMIZERS)}")
    _check(c.schedule in SCHEDULES, "schedule", c.schedule, f"one of {', '.join(SCHEDULES)}")
    _check(c.augment in AUGMENTS, "augment", c.augment, f"one of {', '.join(AUGMENTS)}")
    _check(c.amp in AMP_MODES, "amp", c.amp, f"one of {', '.join(AMP_MODES)}")
    _check(
        c.weights_source in WEIGHTS_SOURCES,
        "weights_source",
        c.weights_source,
        f"one of {', '.join(WEIGHTS_SOURCES)}",
    )
    _check(
        c.progress in PROGRESS_MODES,
        "progress",
        c.progress,
        "auto, bar, log or none",
    )
    bad = [n for n in c.loggers if n not in LOGGERS]
    _check(not bad, "loggers", bad[0] if bad else None, f"among {', '.join(LOGGERS)}")
    _check(
        _int(c.image_size) and c.image_size >= MIN_IMAGE_SIZE,
        "image_size",
        c.image_size,
        f"an integer >= {MIN_IMAGE_SIZE}",
    )
    _check(
        _num(c.val_fraction) and 0 < c.val_fraction < 1, "val_fraction", c.val_fraction, "in (0, 1)"
    )


def _check_ranges(c: TrainConfig) -> None:
    """Numbers within their domains, and the bounds one option sets on another."""
    for name in (
        "max_train_samples",
        "max_val_samples",
        "workers",
        "freeze_epochs",
        "threads",
        "checkpoint_every",
        "seed",
    ):
        v = getattr(c, name)
        _check(_int(v) and v >= 0, name, v, "an integer >= 0")
    for name in (
        "momentum",
        "weight_decay",
        "warmup_epochs",
        "min_lr",
        "label_smoothing",
        "hflip",
        "randaugment_magnitude",
        "mixup_alpha",
        "cutmix_alpha",
        "drop_path_rate",
        "ema_decay",
    ):
        v = getattr(c, name)
        _check(_num(v) and v >= 0, name, v, "a number >= 0")
    _check(c.momentum < 1, "momentum", c.momentum, "below 1")
    _check(c.label_smoothing < 1, "label_smoothing", c.label_smoothing, "below 1")
    _check(c.hflip <= 1, "hflip", c.hflip, "a probability in [0, 1]")
    _check(c.drop_path_rate < 1, "drop_path_rate", c.drop_path_rate, "in [0, 1)")
    _check(c.ema_decay < 1, "ema_decay", c.ema_decay, "in [0, 1)")
    _check(c.randaugment_magnitude <= 30, "randaugment_magnitude", c.randaugment_magnitude, "<= 30")
    _check(c.min_lr <= c.lr, "min_lr", c.min_lr, f"<= lr ({c.lr})")
    _check(
        c.warmup_epochs < c.epochs, "warmup_epochs", c.warmup_epochs, f"below epochs ({c.epochs})"
    )
    _check(_num(c.decay_rate) and 0 < c.decay_rate <= 1, "decay_rate", c.decay_rate, "in (0, 1]")
    _check(_num(c.decay_epochs) and c.decay_epochs > 0, "decay_epochs", c.decay_epochs, "positive")
    _check(
        _num(c.crop_scale_min) and 0 < c.crop_scale_min <= 1,
        "crop_scale_min",
        c.crop_scale_min,
        "in (0, 1]",
    )
    if c.crop_pct is not None:
        _check(_num(c.crop_pct) and 0 < c.crop_pct <= 1, "crop_pct", c.crop_pct, "in (0, 1]")
    if c.drop_rate is not None:
        _check(_num(c.drop_rate) and 0 <= c.drop_rate < 1, "drop_rate", c.drop_rate, "in [0, 1)")
    if c.opt_eps is not None:
        _check(_num(c.opt_eps) and c.opt_eps > 0, "opt_eps", c.opt_eps, "a positive number")
    if c.clip_grad is not None:
        _check(_num(c.clip_grad) and c.clip_grad > 0, "clip_grad", c.clip_grad, "a positive number")


def _check_model_options(c: TrainConfig) -> None:
    """model_kwargs, freezing and the device."""
    _check(isinstance(c.model_kwargs, dict), "model_kwargs", c.model_kwargs, "a mapping")
    reserved = {"num_classes", "pretrained", "weights_source", "image_size", "drop_rate"}
    reserved |= {"drop_path_rate", "device"}
    bad = sorted(reserved & set(c.model_kwargs))
    _check(not bad, "model_kwargs", c.model_kwargs, f"free of {bad} (set them as options)")
    _check(
        c.freeze_epochs == 0 or c.freeze_epochs < c.epochs,
        "freeze_epochs",
        c.freeze_epochs,
        f"below epochs ({c.epochs})",
    )
    _check(
        c.freeze_epochs == 0 or c.pretrained is not None,
        "freeze_epochs",
        c.freeze_epochs,
        "0 unless --pretrained is given (a random backbone would stay random)",
    )
    dev = c.device
    _check(
        dev in ("auto", "cpu", "cuda") or (isinstance(dev, str) and dev.startswith("cuda:")),
        "device",
        dev,
        "auto, cpu, cuda or cuda:N",
    )


def _check_progressive(c: TrainConfig) -> None:
    """Progressive-learning stages and (start, end) pairs, checked only when it is on."""
    if not c.progressive:
        return
    _check(_int(c.stages) and c.stages >= 1, "stages", c.stages, "an integer >= 1")
    _check(c.stages <= c.epochs, "stages", c.stages, f"at most epochs ({c.epochs})")
    if c.prog_image_size is not None:
        lo, hi = c.prog_image_size
        _check(
            _int(lo) and _int(hi) and MIN_IMAGE_SIZE <= lo <= hi,
            "prog_image_size",
            list(c.prog_image_size),
            f"integers start <= end, both >= {MIN_IMAGE_SIZE}",
        )
    for name in ("prog_magnitude", "prog_mixup", "prog_dropout"):
        pair = getattr(c, name)
        if pair is not None:
            _check(
                all(_num(v) and v >= 0 for v in pair),
                name,
                list(pair),
                "two numbers >= 0",
            )
    if c.prog_dropout is not None:
        _check(max(c.prog_dropout) < 1, "prog_dropout", list(c.prog_dropout), "below 1")
