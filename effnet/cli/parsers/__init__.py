"""The sub-commands' parsers: standard library only, so that parsing never imports torch.

Each module's ``register(subparsers)`` adds one command. Its parser's defaults name the
implementation as ``func="module:function"`` (``effnet.cli.main`` imports it after parsing) and
may list ``checks``: light functions of the parsed arguments, run first, that raise ``CLIError``
(or ValueError) for what a user mistyped: a missing file, a misspelt device.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from effnet.cli import CLIError
from effnet.env import parse_device

# Suffixes of model files (weights, checkpoints), not images or names; predict also takes .onnx.
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
PROGRESS = ("auto", "bar", "log", "none")
PROGRESS_HELP = "auto (a bar on a terminal), bar, log (lines with throughput and ETA), none"


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--progress auto|bar|log|none``, as in `effnet train` (progress goes to stderr)."""
    p.add_argument("--progress", choices=PROGRESS, default="auto", help=PROGRESS_HELP)


def device_check(*, auto: bool = False) -> Callable[[argparse.Namespace], None]:
    """A check of ``--device``'s spelling (the command checks that the machine has it)."""

    def check(args: argparse.Namespace) -> None:
        if args.device is not None:
            parse_device(args.device, auto=auto, label="--device")

    return check


def looks_like_file(arg: str) -> bool:
    """True for an argument that can only be a model file or folder (by its suffix, or a folder
    separator), not a model name."""
    has_sep = "/" in arg or (os.sep in arg) or (os.altsep is not None and os.altsep in arg)
    return has_sep or Path(arg).suffix.lower() in (*MODEL_SUFFIXES, ".onnx")


def exists_check(dest: str, *, only_files: bool = False) -> Callable[[argparse.Namespace], None]:
    """A check that the path in ``args.<dest>`` exists; with ``only_files``, only where the
    argument has a model file's suffix (elsewhere it may be a model name)."""

    def check(args: argparse.Namespace) -> None:
        value = getattr(args, dest)
        if value is None or (only_files and not looks_like_file(value)):
            return
        if not Path(value).exists():
            raise CLIError(f"{value}: no such file or folder")

    return check


def images_check(dest: str) -> Callable[[argparse.Namespace], None]:
    """A check that at least one of the image paths in ``args.<dest>`` exists (missing ones
    among others are skipped with a warning by the command)."""

    def check(args: argparse.Namespace) -> None:
        paths = getattr(args, dest)
        missing = [p for p in paths if not Path(p).exists()]
        if missing and len(missing) == len(paths):
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise CLIError(f"no such image file: {missing[0]}{more}")

    return check
