"""The ``effnet`` command line: a thin layer over the Python API.

Each sub-command has a light parser module, ``effnet.cli.parsers.<name>``, that imports only the
standard library: its ``register(subparsers)`` adds the parser and names the implementation as a
string (``func="effnet.cli.<name>:run"``), which ``main`` imports only after the arguments
parsed. So ``effnet --help``, ``effnet CMD --help`` and usage errors never import torch. Errors
a user can cause (bad flags, files, names, missing optional packages) print one line, exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import os
import re
import sys

from effnet import __version__
from effnet.cli.weights_flags import one_line_warnings
from effnet.env import MissingDependency, missing_message

# Sub-command modules, in the order `effnet --help` lists them. A module not present yet is
# skipped (commands land one by one); a module that is present but broken still raises.
COMMANDS = (
    "train",
    "eval",
    "predict",
    "demo",
    "models",
    "info",
    "export",
    "quantize",
    "benchmark",
    "scale",
    "search",
    "sweep",
    "nas",
    "cam",
)
PARSERS = "effnet.cli.parsers"


class CLIError(Exception):
    """An error to show the user as one line (no traceback)."""


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``effnet train: error: ...``), exit status 2,
    with a did-you-mean for a misspelt choice. Sub-parsers are ``CommandParser``s."""

    def error(self, message: str):  # type: ignore[override]
        message = message.splitlines()[0]
        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if bad:
            message += did_you_mean(bad.group(1), re.findall(r"'([^']*)'", bad.group(2)))
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class CommandParser(OneLineParser):
    """A sub-command's parser: options may come between positionals (``cam MODEL --pretrained
    FILE IMAGE``), and unknown arguments are this command's error, with a did-you-mean."""

    _inner = False  # parse_known_intermixed_args calls parse_known_args itself

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            namespace, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._hint(extras)}")
        return namespace, []

    def _hint(self, extras: list[str]) -> str:
        flags = [s for a in self._actions for s in a.option_strings]
        for word in extras:
            if word.startswith("-") and not re.fullmatch(r"-\d.*", word):
                hint = did_you_mean(word.split("=")[0], flags)
                if hint:
                    return hint
        return ""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="effnet",
        description="EfficientNet models, compound scaling, training and analysis.",
    )
    parser.add_argument("--version", action="version", version=f"effnet {__version__}")
    debug = "show full tracebacks instead of one-line errors (also EFFNET_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name in COMMANDS:
        if importlib.util.find_spec(f"{PARSERS}.{name}") is None:
            continue
        importlib.import_module(f"{PARSERS}.{name}").register(sub)
    for command in sub.choices.values():  # `effnet train --debug` works as `effnet --debug train`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    return parser


def implementation(func):
    """The callable behind a parser's ``func``: itself, or ``"module:function"`` imported now."""
    if not isinstance(func, str):
        return func
    module, _, name = func.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False) or bool(os.environ.get("EFFNET_DEBUG"))
    try:
        for check in getattr(args, "checks", ()):  # light checks (files exist) before torch
            check(args)
        with one_line_warnings(args.command):
            return int(implementation(args.func)(args) or 0)
    except KeyboardInterrupt:
        print("effnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    # OSError: a full disk or failed write (effnet's WriteError says the previous file is intact).
    # ModuleNotFoundError: an optional dependency is missing (effnet's own modules excepted).
    except (CLIError, ValueError, OSError, ModuleNotFoundError) as e:
        missing = isinstance(e, ModuleNotFoundError) and not isinstance(e, MissingDependency)
        if debug or (missing and (e.name or "effnet").split(".")[0] == "effnet"):
            raise
        text = missing_message(e.name) if missing else str(e)
        msg = text.splitlines()[0] if text else type(e).__name__
        print(f"effnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
