"""`effnet train`: the implementation (the parser is ``effnet.cli.parsers.train``).

The flags come from TrainConfig's fields; the parser reads them from a static table,
``effnet.cli.parsers.train.TRAIN_FIELDS``, which ``field_table(TrainConfig)`` reproduces (a test
checks that they agree), so that parsing does not import torch.
"""

from __future__ import annotations

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

from effnet.cli import CLIError
from effnet.cli.parsers.train import MODEL_KWARGS_FLAGS, add_fields
from effnet.env.device import check_device
from effnet.training import config as C
from effnet.training import trainer
from effnet.training.loop import NonFiniteLoss
from effnet.training.trainer import Interrupted


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


def field_kind(f: dataclasses.Field, hint) -> str:
    """How a field's flag parses: switch (a bool that is False by default), bool (--X/--no-X),
    int, float, pair (START,END), str or yaml (mappings, lists)."""
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    base = options[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    base = typing.get_origin(base) or base
    if base is bool:
        return "switch" if f.default is False else "bool"
    if base in (int, float):
        return base.__name__
    return {tuple: "pair", str: "str"}.get(base, "yaml")


def field_table(cls: type = C.TrainConfig) -> tuple[tuple[str, str, str, str | None], ...]:
    """(field, kind, section, help) per field of the dataclass ``cls``, in order: what
    ``add_fields`` makes flags of (``TRAIN_FIELDS`` is this for TrainConfig)."""
    hints = typing.get_type_hints(cls)
    helps, sections = field_comments(cls)
    return tuple(
        (f.name, field_kind(f, hints[f.name]), sections.get(f.name, "options"), helps.get(f.name))
        for f in dataclasses.fields(cls)
    )


def add_config_flags(p, cls: type = C.TrainConfig) -> dict:
    """One flag per field of ``cls``, in argument groups named by its section comments."""
    return add_fields(p, field_table(cls))


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
    if args.device is not None:
        check_device(args.device, auto=True, label="--device")
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
        peer = type(e).__name__ == "DistBackendError" or any(
            w in str(e).lower() for w in ("gloo", "nccl", "connection", "peer", "timed out")
        )
        what = "a peer process failed" if peer else "training failed on this process"
        print(
            f"effnet train: rank {os.environ.get('RANK', '?')}: {what} "
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
