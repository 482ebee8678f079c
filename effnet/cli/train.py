"""`effnet train`: train or fine-tune an EfficientNet (defaults: a small B0 on built-in digits)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import os
import sys
import textwrap
import tokenize
import types
import typing

import yaml

from effnet.cli import CLIError
from effnet.training import config as C
from effnet.training import trainer
from effnet.training.loop import NonFiniteLoss
from effnet.training.trainer import Interrupted

EPILOG = """examples:
  effnet train                                   # small B0 on built-in digits, ~3 min on 2 CPUs
  effnet train --data ~/flower_photos --model efficientnet_lite0 --pretrained pip \\
      --image-size 224 --epochs 5 --freeze-epochs 1
  effnet train --config b0_imagenet --data /data/imagenet --device cuda
  effnet train --resume runs/my-run             # continue a stopped or killed run exactly
  torchrun --nproc_per_node 2 -m effnet train --batch-size 128
"""


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


# Only where a flag differs from what its TrainConfig field gives: every field gets
# --NAME-WITH-DASHES, a type from its annotation (bool: a switch; (a, b) pair: START,END;
# dict: YAML), its help from the field's comment and its group from the section comment above it.
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
}
CHOICES = {
    "optimizer": C.OPTIMIZERS,
    "schedule": C.SCHEDULES,
    "augment": C.AUGMENTS,
    "amp": C.AMP_MODES,
    "progress": C.PROGRESS_MODES,
    "weights_source": C.WEIGHTS_SOURCES,
}


def _mapping(text: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"expected a YAML value, got {text!r}") from None


def field_comments(cls) -> tuple[dict[str, str], dict[str, str]]:
    """(field -> its end-of-line comment, field -> the comment line above its section) of a
    dataclass and its dataclass bases, read from their source (empty where it is missing)."""
    helps: dict[str, str] = {}
    sections: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            h, s = _class_comments(klass)
            helps.update(h)
            sections.update(s)
    return helps, sections


def _class_comments(cls) -> tuple[dict[str, str], dict[str, str]]:
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}, {}
    comments = {
        tok.start[0]: (tok.string.lstrip("#").strip(), tok.line.strip().startswith("#"))
        for tok in tokenize.generate_tokens(io.StringIO(src).readline)
        if tok.type == tokenize.COMMENT
    }
    helps, sections, section = {}, {}, "options"
    for node in ast.parse(src).body[0].body:
        for line in range(getattr(node, "lineno", 0) - 1, 0, -1):  # the nearest section above
            if line in comments and comments[line][1]:
                section = comments[line][0]
                break
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            sections[name] = section
            text, own_line = comments.get(node.end_lineno, ("", True))
            if text and not own_line:
                helps[name] = text
    return helps, sections


def _field_kwargs(f: dataclasses.Field, hint, comment: str | None) -> dict:
    """argparse keyword arguments for one TrainConfig field."""
    spec = dict(FLAGS.get(f.name, {}))
    spec.pop("flag", None)
    kw: dict = {"dest": f.name, "default": None, "help": comment}
    kw.update(spec)
    if f.name in CHOICES:
        kw["choices"] = CHOICES[f.name]
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    base = options[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    base = typing.get_origin(base) or base
    if base is bool:
        default = f.default
        kw["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
    elif base in (int, float):
        kw["type"] = base
    elif base is tuple:
        kw.update(type=_pair, metavar=kw.get("metavar", "START,END"))
    elif base is not str:  # mappings, lists: YAML, as --set reads values
        kw.update(type=_mapping, metavar=kw.get("metavar", "YAML"))
    return kw


def add_config_flags(
    p: argparse.ArgumentParser, cls: type = C.TrainConfig
) -> dict[str, argparse._ArgumentGroup]:
    """One flag per field of ``cls``, in argument groups named by its section comments."""
    hints = typing.get_type_hints(cls)
    helps, sections = field_comments(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        section = sections.get(f.name, "options")
        group = groups.get(section) or groups.setdefault(section, p.add_argument_group(section))
        comment = helps.get(f.name)
        flag = FLAGS.get(f.name, {}).get("flag", "--" + f.name.replace("_", "-"))
        kw = _field_kwargs(f, hints[f.name], comment and comment.replace("%", "%%"))
        group.add_argument(flag, **kw)
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
    groups = add_config_flags(p)
    model = groups[field_comments(C.TrainConfig)[1].get("model", "options")]
    for name in MODEL_KWARGS_FLAGS:
        model.add_argument(
            "--" + name.replace("_", "-"), type=float, help=f"model_kwargs {name} (shorthand)"
        )
    p.set_defaults(func=main)


MODEL_KWARGS_FLAGS = ("width_mult", "depth_mult")  # shorthands that merge into model_kwargs


def overrides_from(args) -> dict:
    """Config overrides from the flags, then --set (which wins), then the model_kwargs
    shorthands merged into model_kwargs."""
    over = {k: getattr(args, k) for k in C.FIELDS if getattr(args, k, None) is not None}
    for key, value in args.set:
        over[key] = value
    mk = {k: getattr(args, k) for k in MODEL_KWARGS_FLAGS if getattr(args, k) is not None}
    if mk:
        over["model_kwargs"] = {**(over.get("model_kwargs") or {}), **mk}
    return over


def config_from(args) -> C.TrainConfig:
    """The TrainConfig a new run gets from its flags: --config (default: the built-in digits
    recipe), then the flags. ``--model NAME`` drops the recipe's options for its own model
    (model_kwargs, image_size, crop_pct) unless flags give them too."""
    return C.resolve_config(args.config or "digits", overrides_from(args))


def main(args) -> int:

    try:
        if args.resume:
            if args.config:
                raise CLIError("--resume continues the run's own config; drop --config")
            summary = trainer.run(None, resume=args.resume, resume_overrides=overrides_from(args))
        else:
            summary = trainer.run(config_from(args))
    except NonFiniteLoss as e:
        raise CLIError(str(e)) from None
    except Interrupted as e:
        print(f"effnet train: {e}", file=sys.stderr)
        return e.exit_code
    except RuntimeError as e:  # torch.distributed.DistBackendError is a RuntimeError
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or getattr(args, "debug", False):
            raise
        # Under torchrun a dead peer surfaces here as a gloo/nccl error: say so in one line;
        # the last checkpoint is intact and --resume continues.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(
            f"effnet train: rank {os.environ.get('RANK', '?')}: a peer process failed "
            f"({first[:200]}); continue with --resume RUN_DIR",
            file=sys.stderr,
        )
        return 1
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports for everyone
        return 0
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        ema = summary.get("final_top1_ema")
        ema_txt = f" (EMA {ema:.2f}%)" if ema is not None else ""
        print(
            f"done: {summary['epochs']} epochs in {summary['wall_time_s']:.0f} s; "
            f"final val top-1 {summary['final_top1']:.2f}%{ema_txt}, top-5 "
            f"{summary['final_top5']:.2f}%; best top-1 {summary['best_top1']:.2f}% "
            f"(epoch {summary['best_epoch']}, {summary['best_weights']} weights)\n"
            f"run folder: {summary['run_dir']}\n"
            f"predict with: effnet predict {summary['run_dir']} IMAGE"
        )
    return 0
