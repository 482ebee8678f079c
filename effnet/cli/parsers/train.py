"""`effnet train`'s parser: one flag per TrainConfig field, from a static table (no torch).

``TRAIN_FIELDS`` is ``effnet.cli.train.field_table(TrainConfig)`` written out: a test checks that
they agree, so a new config field needs its row here (the test prints the table to paste).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from effnet.cli import CLIError
from effnet.cli.parsers import device_check
from effnet.cli.weights_flags import WEIGHTS_SOURCES

EPILOG = """examples:
  effnet train                                   # small B0 on built-in digits, ~3 min on 2 CPUs
  effnet train --data ~/flower_photos --model efficientnet_lite0 --pretrained pip \\
      --image-size 224 --epochs 5 --freeze-epochs 1
  effnet train --config b0_imagenet --data /data/imagenet --device cuda
  effnet train --resume runs/my-run             # continue a stopped or killed run exactly
  torchrun --nproc_per_node 2 -m effnet train --batch-size 128
"""

# (field, kind, section, help from its comment) per TrainConfig field, in order.
TRAIN_FIELDS: tuple[tuple[str, str, str, str | None], ...] = (
    ("data", "str", "data", "'digits', an ImageFolder dir, or a CIFAR-10/100 folder"),
    ("val_fraction", "float", "data", "held-out share when the data has no val split"),
    ("strict", "switch", "data", "refuse unreadable images up front instead of skipping them"),
    ("max_train_samples", "int", "data", "0 = all; a (stratified) subset for quick experiments"),
    ("max_val_samples", "int", "data", None),
    ("workers", "int", "data", None),
    ("model", "str", "model", None),
    ("model_kwargs", "yaml", "model", "passed to create_model"),
    ("pretrained", "str", "model", "any create_model(pretrained=...) source; new head"),
    ("weights_source", "str", "model", "how --pretrained weights were trained: auto, tf or torch"),
    ("image_size", "int", "model", "default: the model's published (training) resolution"),
    ("crop_pct", "float", "model", "eval crop fraction (default: the model's data config)"),
    ("drop_rate", "float", "model", "classifier dropout; None = the variant's default"),
    ("drop_path_rate", "float", "model", "stochastic depth"),
    ("freeze_epochs", "int", "model", "train only the head for the first N epochs"),
    ("freeze_bn", "switch", "model", "keep BatchNorm in eval mode (fine-tuning)"),
    ("sync_bn", "switch", "model", "BatchNorm statistics over all processes' batches (torchrun)"),
    ("epochs", "int", "optimisation", None),
    ("batch_size", "int", "optimisation", "global batch (split across processes)"),
    ("optimizer", "str", "optimisation", None),
    ("lr", "float", "optimisation", None),
    ("lr_per_256", "switch", "optimisation", "lr is per 256 images and scales with the batch size"),
    ("momentum", "float", "optimisation", "SGD / RMSProp momentum"),
    ("opt_eps", "float", "optimisation", "optimizer epsilon (default: 1e-3 RMSProp, 1e-8 AdamW)"),
    ("weight_decay", "float", "optimisation", None),
    ("schedule", "str", "optimisation", None),
    ("warmup_epochs", "float", "optimisation", None),
    (
        "decay_rate",
        "float",
        "optimisation",
        "exponential schedule: x decay_rate every decay_epochs",
    ),
    ("decay_epochs", "float", "optimisation", None),
    ("min_lr", "float", "optimisation", None),
    ("label_smoothing", "float", "optimisation", None),
    ("clip_grad", "float", "optimisation", "max global grad norm"),
    ("ema_decay", "float", "optimisation", "0 = no EMA of weights"),
    ("augment", "str", "augmentation", None),
    ("hflip", "float", "augmentation", "horizontal flip probability"),
    ("crop_scale_min", "float", "augmentation", "smallest area share of a random crop"),
    ("randaugment_magnitude", "float", "augmentation", "0-30, as in the papers"),
    ("mixup_alpha", "float", "augmentation", None),
    ("cutmix_alpha", "float", "augmentation", None),
    ("progressive", "switch", "progressive learning (EfficientNetV2 Algorithm 1)", None),
    ("stages", "int", "progressive learning (EfficientNetV2 Algorithm 1)", None),
    (
        "prog_image_size",
        "pair",
        "progressive learning (EfficientNetV2 Algorithm 1)",
        "default: from the paper or the model",
    ),
    ("prog_magnitude", "pair", "progressive learning (EfficientNetV2 Algorithm 1)", None),
    ("prog_mixup", "pair", "progressive learning (EfficientNetV2 Algorithm 1)", None),
    ("prog_dropout", "pair", "progressive learning (EfficientNetV2 Algorithm 1)", None),
    ("seed", "int", "machinery", None),
    ("device", "str", "machinery", "auto, cpu, cuda, cuda:N"),
    ("amp", "str", "machinery", None),
    ("channels_last", "switch", "machinery", None),
    ("grad_checkpointing", "switch", "machinery", None),
    (
        "activation_recompute",
        "switch",
        "machinery",
        "rebuild SiLU(BN(x)) in backward: less memory, slower",
    ),
    ("compile", "switch", "machinery", None),
    (
        "threads",
        "int",
        "machinery",
        "torch intra-op threads for the run (put back after); 0 = torch's default",
    ),
    ("out", "str", "machinery", "run folder; default runs/<model>-<data>-<time>"),
    (
        "checkpoint_every",
        "int",
        "machinery",
        "also checkpoint every N optimizer steps (0 = epoch ends only)",
    ),
    ("progress", "str", "machinery", "auto (bar on a terminal), bar, log, none"),
    ("loggers", "yaml", "machinery", "csv, tensorboard, mlflow (several: a,b)"),
)

# Only where a flag differs from what its TrainConfig field gives: every field gets
# --NAME-WITH-DASHES, a type from its kind (switch: store_true; bool: --X/--no-X; pair:
# START,END; yaml: YAML), its help from the field's comment and its group from its section.
FLAGS: dict[str, dict] = {
    "out": {"metavar": "RUN_DIR", "help": "run folder (default: runs/MODEL-DATA-TIME)"},
    "device": {"help": "auto (default), cpu, cuda, cuda:N"},
    "workers": {"help": "data-loading processes (default 0)"},
    "threads": {"help": "torch CPU threads (0 = torch default)"},
    "checkpoint_every": {
        "metavar": "STEPS",
        "help": "also checkpoint every N steps (default: epoch ends only)",
    },
    "data": {"help": "'digits', an ImageFolder tree, or a CIFAR-10/100 folder"},
    "val_fraction": {"help": "held-out share without a val/ folder"},
    "strict": {"help": "refuse unreadable images instead of skipping them"},
    "max_train_samples": {"metavar": "N"},
    "max_val_samples": {"metavar": "N"},
    "model": {"help": "a name from `effnet models`"},
    "model_kwargs": {"help": "create_model options, e.g. '{width_mult: 0.5, bn_momentum: 0.1}'"},
    "pretrained": {
        "metavar": "SOURCE",
        "help": "start from weights (a file, run folder, pip, timm, torchvision); new head",
    },
    "drop_rate": {"help": "classifier dropout"},
    "drop_path_rate": {"help": "stochastic depth rate"},
    "freeze_epochs": {"help": "train only the head for the first N epochs"},
    "freeze_bn": {"help": "keep BatchNorm statistics frozen (fine-tuning)"},
    "batch_size": {"help": "global batch size"},
    "clip_grad": {"metavar": "NORM"},
    "ema_decay": {"help": "EMA of weights (0 = off)"},
    "amp": {"help": "autocast dtype"},
    "activation_recompute": {
        "help": "rebuild SiLU(BN(x)) in backward instead of storing it (less memory, ~10%% slower)"
    },
    "compile": {"help": "torch.compile the model"},
    "mixup_alpha": {"flag": "--mixup"},
    "cutmix_alpha": {"flag": "--cutmix"},
    "progressive": {"help": "EfficientNetV2 progressive learning (sizes and regularisation grow)"},
    "stages": {"help": "progressive stages (default 4)"},
    "loggers": {
        "flag": "--logger",
        "metavar": "NAME[,NAME]",
        "help": "experiment tracking: csv, tensorboard, mlflow (several: tensorboard,csv)",
    },
}
# The choices of TrainConfig's options (effnet.training.config's OPTIMIZERS etc.; a test checks).
CHOICES = {
    "optimizer": ("rmsprop", "sgd", "adamw"),
    "schedule": ("cosine", "exponential", "constant"),
    "augment": ("none", "basic", "randaugment", "autoaugment"),
    "amp": ("none", "bf16", "fp16"),
    "progress": ("auto", "bar", "log", "none"),
    "weights_source": WEIGHTS_SOURCES,
}
MODEL_KWARGS_FLAGS = ("width_mult", "depth_mult")  # shorthands that merge into model_kwargs


def _pair(text: str) -> list[float]:
    parts = text.replace(",", " ").split()
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected START,END, got {text!r}")
    try:
        return [int(p) if p.lstrip("-").isdigit() else float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers START,END, got {text!r}") from None


def _kv(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def _mapping(text: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"expected a YAML value, got {text!r}") from None


def field_kwargs(name: str, kind: str, comment: str | None) -> dict:
    """argparse keyword arguments for one config field of the given kind."""
    spec = dict(FLAGS.get(name, {}))
    spec.pop("flag", None)
    kw: dict = {"dest": name, "default": None, "help": comment}
    kw.update(spec)
    if name in CHOICES:
        kw["choices"] = CHOICES[name]
    if kind == "switch":
        kw["action"] = "store_true"
    elif kind == "bool":
        kw["action"] = argparse.BooleanOptionalAction
    elif kind in ("int", "float"):
        kw["type"] = int if kind == "int" else float
    elif kind == "pair":
        kw.update(type=_pair, metavar=kw.get("metavar", "START,END"))
    elif kind == "yaml":  # mappings, lists: YAML, as --set reads values
        kw.update(type=_mapping, metavar=kw.get("metavar", "YAML"))
    return kw


def add_fields(p: argparse.ArgumentParser, table) -> dict[str, argparse._ArgumentGroup]:
    """One flag per (field, kind, section, help) row, in argument groups named by section."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, kind, section, comment in table:
        group = groups.get(section) or groups.setdefault(section, p.add_argument_group(section))
        flag = FLAGS.get(name, {}).get("flag", "--" + name.replace("_", "-"))
        group.add_argument(flag, **field_kwargs(name, kind, comment and comment.replace("%", "%%")))
    return groups


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model (default: built-in digits)",
        description="Train or fine-tune an EfficientNet. Options come from --config (a YAML "
        "file or a built-in name: digits, b0_imagenet, v2s_progressive, finetune_lite0), then "
        "from these flags (one per config option). The run folder gets config.yaml, "
        "metrics.jsonl/csv, curves.png, summary.json, model_best/last.safetensors and "
        "checkpoint_last.pt.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--config", metavar="YAML", help="config file or built-in name (default: digits)"
    )
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    g.add_argument(
        "--set",
        action="append",
        type=_kv,
        metavar="KEY=VALUE",
        default=[],
        help="any config option, e.g. --set model_kwargs={width_mult: 0.5}",
    )
    groups = add_fields(p, TRAIN_FIELDS)
    model = groups[next(row[2] for row in TRAIN_FIELDS if row[0] == "model")]
    for name in MODEL_KWARGS_FLAGS:
        model.add_argument(
            "--" + name.replace("_", "-"), type=float, help=f"model_kwargs {name} (shorthand)"
        )
    p.set_defaults(func="effnet.cli.train:main", checks=(device_check(auto=True), check_paths))


def check_paths(args: argparse.Namespace) -> None:
    """--data and --resume name folders that exist (checked before torch loads)."""
    if args.resume and not Path(args.resume).exists():
        raise CLIError(
            f"cannot resume: {args.resume} not found "
            "(--resume takes a run folder written by effnet train)"
        )
    if args.data not in (None, "digits") and not Path(os.path.expanduser(args.data)).exists():
        raise CLIError(
            f"--data {args.data}: no such folder "
            "(use 'digits', an ImageFolder tree or a CIFAR folder)"
        )
