"""``torch.export`` (.pt2) export: an ExportedProgram with a dynamic batch axis, for AOT tools.

The example batch is 2 because torch.export specialises a dimension traced at size 1.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.export.common import (
    ExportResult,
    compare,
    eval_mode,
    example_input,
    first_line,
    input_spec,
    metadata,
    one_line_errors,
)

EXTRA_FILE = "effnet.json"
MAX_BATCH = 4096


def export_pt2(
    model: nn.Module, path: str | os.PathLike, image_size: int | None = None, *, verify: bool = True
) -> ExportResult:
    """Export with ``torch.export`` and save to ``path`` atomically, verified after reloading."""
    from effnet.weights.serialize import atomic_write

    in_chans, size = input_spec(model, image_size)
    result = ExportResult(Path(path), "pt2", size)
    start = time.perf_counter()

    def write(tmp: str) -> None:
        with eval_mode(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
            with one_line_errors("torch.export"):
                program = torch.export.export(
                    model, (example_input(2, in_chans, size),), dynamic_shapes=({0: batch},)
                )
            extra = {EXTRA_FILE: json.dumps(metadata(model, size))}
            # torch.export wants a ".pt2" name or a buffer; the atomic temporary has neither.
            buffer = io.BytesIO()
            torch.export.save(program, buffer, extra_files=extra)
            Path(tmp).write_bytes(buffer.getvalue())
            if verify:
                loaded, _ = load_pt2(tmp)
                result.max_abs_diff = compare(model, loaded, in_chans, size)

    atomic_write(path, write)
    result.seconds = time.perf_counter() - start
    return result


def load_pt2(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """(callable module, effnet metadata) of a .pt2 file; one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such .pt2 file")
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(io.BytesIO(p.read_bytes()), extra_files=extra)
    except Exception as e:  # corrupt archives surface as assorted errors from torch internals
        raise ValueError(f"{p}: not a loadable torch.export file ({first_line(e)})") from None
    meta = json.loads(extra[EXTRA_FILE]) if extra[EXTRA_FILE] else {}
    return program.module(), meta
