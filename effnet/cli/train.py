"""`effnet train`: train or fine-tune an EfficientNet (defaults: a small B0 on built-in digits)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from effnet.cli import CLIError

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
    import yaml

    return key, yaml.safe_load(value)


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model (default: built-in digits)",
        description="Train or fine-tune an EfficientNet. Options come from --config (a YAML "
        "file or a built-in name: digits, b0_imagenet, v2s_progressive, finetune_lite0), then "
        "from these flags. The run folder gets config.yaml, metrics.jsonl/csv, curves.png, "
        "summary.json, model_best/last.safetensors and checkpoint_last.pt.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--config", metavar="YAML", help="config file or built-in name (default: digits)"
    )
    g.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/MODEL-DATA-TIME)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--workers", type=int, help="data-loading processes (default 0)")
    g.add_argument("--threads", type=int, help="torch CPU threads (0 = torch default)")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="STEPS",
        help="also checkpoint every N steps (default: epoch ends only)",
    )
    g.add_argument("--progress", choices=("auto", "bar", "log", "none"))
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    g.add_argument(
        "--set",
        action="append",
        type=_kv,
        metavar="KEY=VALUE",
        default=[],
        help="any other config option, e.g. --set model_kwargs={width_mult: 0.5}",
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", help="'digits', an ImageFolder tree, or a CIFAR-10/100 folder")
    g.add_argument("--val-fraction", type=float, help="held-out share without a val/ folder")
    g.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="refuse unreadable images instead of skipping them",
    )
    g.add_argument("--max-train-samples", type=int, metavar="N")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="a name from `effnet models`")
    g.add_argument(
        "--pretrained",
        metavar="SOURCE",
        help="start from weights (a file, run folder, pip, timm, torchvision); new head",
    )
    g.add_argument("--image-size", type=int)
    g.add_argument("--width-mult", type=float)
    g.add_argument("--depth-mult", type=float)
    g.add_argument("--drop-rate", type=float, help="classifier dropout")
    g.add_argument("--drop-path-rate", type=float, help="stochastic depth rate")
    g.add_argument("--freeze-epochs", type=int, help="train only the head for the first N epochs")
    g.add_argument(
        "--freeze-bn",
        action="store_true",
        default=None,
        help="keep BatchNorm statistics frozen (fine-tuning)",
    )
    g.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm (torchrun)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch size")
    g.add_argument("--lr", type=float)
    g.add_argument("--optimizer", choices=("rmsprop", "sgd", "adamw"))
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=("cosine", "exponential", "constant"))
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--clip-grad", type=float, metavar="NORM")
    g.add_argument("--ema-decay", type=float, help="EMA of weights (0 = off)")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), help="autocast dtype")
    g.add_argument("--channels-last", action="store_true", default=None)
    g.add_argument("--grad-checkpointing", action="store_true", default=None)
    g.add_argument(
        "--activation-recompute",
        action="store_true",
        default=None,
        help="rebuild SiLU(BN(x)) in backward instead of storing it (less memory, ~10%% slower)",
    )
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g = p.add_argument_group("augmentation and progressive learning")
    g.add_argument("--augment", choices=("none", "basic", "randaugment", "autoaugment"))
    g.add_argument("--mixup", type=float, dest="mixup_alpha")
    g.add_argument("--cutmix", type=float, dest="cutmix_alpha")
    g.add_argument(
        "--progressive",
        action="store_true",
        default=None,
        help="EfficientNetV2 progressive learning (sizes and regularisation grow)",
    )
    g.add_argument("--stages", type=int, help="progressive stages (default 4)")
    g.add_argument("--prog-image-size", type=_pair, metavar="START,END")
    g.add_argument("--prog-magnitude", type=_pair, metavar="START,END")
    g.add_argument("--prog-mixup", type=_pair, metavar="START,END")
    g.add_argument("--prog-dropout", type=_pair, metavar="START,END")
    p.set_defaults(func=main)


OPTION_FLAGS = (
    "out",
    "seed",
    "device",
    "workers",
    "threads",
    "checkpoint_every",
    "progress",
    "data",
    "val_fraction",
    "strict",
    "max_train_samples",
    "model",
    "pretrained",
    "image_size",
    "drop_rate",
    "drop_path_rate",
    "freeze_epochs",
    "freeze_bn",
    "sync_bn",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "label_smoothing",
    "clip_grad",
    "ema_decay",
    "amp",
    "channels_last",
    "grad_checkpointing",
    "activation_recompute",
    "compile",
    "augment",
    "mixup_alpha",
    "cutmix_alpha",
    "progressive",
    "stages",
    "prog_image_size",
    "prog_magnitude",
    "prog_mixup",
    "prog_dropout",
)


def overrides_from(args) -> dict:
    over = {k: getattr(args, k) for k in OPTION_FLAGS if getattr(args, k) is not None}
    for key, value in args.set:
        over[key] = value
    mk = {k: getattr(args, k) for k in ("width_mult", "depth_mult") if getattr(args, k) is not None}
    if mk:
        over["model_kwargs"] = {**over.get("model_kwargs", {}), **mk}
    return over


def main(args) -> int:
    from effnet.training import resolve_config
    from effnet.training.loop import NonFiniteLoss
    from effnet.training.trainer import Interrupted, run

    over = overrides_from(args)
    try:
        if args.resume:
            if args.config:
                raise CLIError("--resume continues the run's own config; drop --config")
            summary = run(None, resume=args.resume, resume_overrides=over)
        else:
            summary = run(resolve_config(args.config or "digits", over))
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
