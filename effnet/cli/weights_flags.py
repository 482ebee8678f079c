"""The ``--weights-source`` option that every command taking ``--pretrained`` shares, and the
one-line display of effnet's warnings (such as the one that says which weights source it assumed).

Kept free of heavy imports so that building the parser stays fast; the values equal
``effnet.weights.pretrained.WEIGHTS_SOURCES`` (a test checks).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator

WEIGHTS_SOURCES = ("auto", "tf", "torch")
WEIGHTS_SOURCE_HELP = (
    "how the --pretrained weights were trained: tf (TensorFlow / TF-ported: SAME padding, "
    "BN eps 1e-3), torch (PyTorch: symmetric padding), or auto (default: detected where the file "
    "tells, else PyTorch with a warning)"
)
PRETRAINED_DEFAULT = (
    "default: the model's own weights when they are on this machine (the pip packages for "
    "Lite0-2, earlier downloads); none = random weights"
)


def add_weights_source(parser: argparse.ArgumentParser) -> None:
    """Add ``--weights-source {auto,tf,torch}`` (dest ``weights_source``, default ``auto``)."""
    parser.add_argument(
        "--weights-source",
        choices=WEIGHTS_SOURCES,
        default="auto",
        help=WEIGHTS_SOURCE_HELP,
    )


def add_pretrained(parser: argparse.ArgumentParser) -> None:
    """Add ``--pretrained SRC`` (the one weights rule's help) and ``--weights-source``."""
    parser.add_argument(
        "--pretrained",
        metavar="SRC",
        default=None,
        help="weights for a model name: pip, timm, torchvision, a weight file or none; "
        + PRETRAINED_DEFAULT,
    )
    add_weights_source(parser)


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Show effnet's own warnings (``WeightsSourceWarning`` ...) as ``effnet CMD: warning: ...``.

    Python's default display takes two lines and names a source file; other warnings keep it.
    """
    with warnings.catch_warnings():
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not category.__module__.startswith("effnet"):
                return original(message, category, filename, lineno, file, line)
            text = str(message).splitlines()[0] if str(message) else category.__name__
            print(f"effnet {command}: warning: {text}", file=file or sys.stderr)

        warnings.showwarning = show
        yield
