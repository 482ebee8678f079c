"""The ``effnet`` command line: a thin layer over the Python API.

Each sub-command lives in its own module exposing ``register(subparsers)``; the module sets
``func`` on its parser. Errors a user can cause (bad flags, files, names) print one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from effnet import __version__
from effnet.cli.weights_flags import one_line_warnings

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
    "benchmark",
    "scale",
    "search",
    "sweep",
    "cam",
)


class CLIError(Exception):
    """An error to show the user as one line (no traceback)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``effnet train: error: ...``), exit status 2.

    Sub-parsers inherit the class, so every command's bad flag reads the same way.
    """

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message.splitlines()[0]} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="effnet",
        description="EfficientNet models, compound scaling, training and analysis.",
    )
    parser.add_argument("--version", action="version", version=f"effnet {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if importlib.util.find_spec(f"effnet.cli.{name}") is None:
            continue
        importlib.import_module(f"effnet.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = args.debug or bool(os.environ.get("EFFNET_DEBUG"))
    try:
        with one_line_warnings(args.command):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("effnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    # OSError: a full disk or failed write (effnet's WriteError says the previous file is intact).
    except (CLIError, ValueError, OSError) as e:
        if debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"effnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
