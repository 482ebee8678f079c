"""What every export format shares: preparing the model, example inputs and output checks."""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.weights.serialize import atomic_write, model_metadata

# fp32 tolerance for an exported graph against eager PyTorch (the model-zoo acceptance).
TOLERANCE = 1e-4
# Batch sizes checked after export: 1, and one above it to prove the batch axis is dynamic.
VERIFY_BATCHES = (1, 3)


@dataclass
class ExportResult:
    """Where a model went, and how closely the exported file reproduces PyTorch."""

    path: Path
    format: str
    image_size: int
    max_abs_diff: dict[int, float] = field(default_factory=dict)  # batch size -> diff
    size_diffs: dict[int, float] = field(default_factory=dict)  # other input size -> diff
    seconds: float = 0.0
    # Edge formats (executorch, tflite): INT8, and the check on real (calibration) images.
    int8: bool = False
    calibration_images: int = 0
    skipped_images: int = 0
    agreement: float | None = None  # top-1 agreement with PyTorch on those images
    # ... on those of them where PyTorch's top-2 probabilities are >= 0.05 apart, and how many
    decided_agreement: float | None = None
    decided_images: int = 0
    max_logit_diff: float | None = None  # their largest logit difference
    max_batch: int | None = None  # ExecuTorch: the largest batch the file takes in one call
    bias_images: int = 0  # INT8: calibration images its biases were corrected on (0: not)
    bias_layers: int = 0  # INT8: layers whose bias was corrected
    float_layers: tuple[str, ...] = ()  # INT8: the convs / linears left in float (keep_float)


def input_channels(model: nn.Module) -> int:
    """Input channels of an effnet model (or an ``OnnxClassifier``); 3 for other modules."""
    return int(getattr(model, "in_chans", 3))


def input_spec(model: nn.Module, image_size: int | None) -> tuple[int, int]:
    """(in_chans, image size): the size defaults to the model's data config resolution."""
    in_chans = input_channels(model)
    if image_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        image_size = int(cfg.get("input_size", (3, 224))[-1])
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}")
    return in_chans, image_size


def example_input(batch: int, in_chans: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + batch)
    return torch.randn(batch, in_chans, size, size, generator=g)


def metadata(model: nn.Module, image_size: int, dynamic: bool = False) -> dict[str, Any]:
    """effnet's model description (build record, data config, class names) for any format.

    A fixed-size graph takes ``image_size`` pixels, so the data config's ``input_size`` says so
    too: it and ``export_image_size`` cannot disagree. A ``dynamic`` graph keeps the model's own.
    """
    try:
        meta = model_metadata(model)
    except ValueError:  # a plain nn.Module: export it, with what little is known
        meta = {"build_args": {"name": type(model).__name__}, "data_config": {}}
    cfg = meta["data_config"]
    if cfg and not dynamic:
        cfg["input_size"] = (input_channels(model), image_size, image_size)
    meta["export_image_size"] = image_size
    return json.loads(json.dumps(meta, default=list))  # tuples -> lists, checked serialisable


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode on CPU for the export, the caller's mode and device restored afterwards."""
    was_training = model.training
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    model.eval().cpu()
    try:
        yield model
    finally:
        model.to(device).train(was_training)


def compare(
    model: nn.Module,
    run: Callable[[torch.Tensor], torch.Tensor],
    in_chans: int,
    size: int,
    batches: tuple[int, ...] = VERIFY_BATCHES,
) -> dict[int, float]:
    """Max abs difference between eager PyTorch and ``run`` at each of ``batches``.

    Raises ValueError when a difference reaches TOLERANCE x max(1, largest |logit|), so a bad
    export is never kept. The bound scales with the logits: a trained model's logits of 10-30
    carry fp32 reassociation errors (other conv algorithms) of a few 1e-4 that are not faults.
    """
    diffs: dict[int, float] = {}
    for batch in batches:
        x = example_input(batch, in_chans, size, seed=1)
        with torch.inference_mode():
            want = model(x)
        got = run(x)
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(
                f"exported model gives shape {tuple(got.shape)} at batch {batch}, size {size}; "
                f"PyTorch {tuple(want.shape)}"
            )
        diffs[batch] = float((got.float() - want.float()).abs().max())
        limit = TOLERANCE * max(1.0, float(want.float().abs().max()))
        if not diffs[batch] < limit:
            raise ValueError(
                f"exported model differs from PyTorch by {diffs[batch]:.3g} at batch {batch}, "
                f"size {size} (tolerance {limit:.3g}: {TOLERANCE} x the largest |logit|); the "
                "file was not written"
            )
    return diffs


@contextlib.contextmanager
def one_line_errors(what: str) -> Iterator[None]:
    """Exporters fail with assorted exception types and pages of text: make that one line."""
    try:
        yield
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"{what} failed: {first_line(e)}") from None


def write_export(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str,
    image_size: int | None,
    save: Callable[[str, int, int], None],
    load: Callable[[str], Callable[[torch.Tensor], torch.Tensor]],
    verify: bool,
    check: Callable[[ExportResult, Callable], None] | None = None,
    random_inputs: bool = True,
) -> ExportResult:
    """The frame every graph format shares: eval mode, exporter warnings silenced, an atomic
    write, and (with ``verify``) the reloaded file compared with PyTorch before it is renamed.

    ``save(tmp, in_chans, size)`` writes the file; ``load(tmp)`` returns something callable.
    With ``verify``, ``check(result, run)`` runs after the comparison on random inputs (which
    ``random_inputs=False`` skips, for INT8 files that cannot meet the fp32 bound).
    """
    in_chans, size = input_spec(model, image_size)
    result = ExportResult(Path(path), fmt, size)
    start = time.perf_counter()

    def write(tmp: str) -> None:
        with eval_mode(model), warnings.catch_warnings():
            # Exporters warn about their own deprecation and shape arithmetic frozen by tracing.
            warnings.simplefilter("ignore")
            save(tmp, in_chans, size)
            if verify:
                run = load(tmp)
                if random_inputs:
                    result.max_abs_diff = compare(model, run, in_chans, size)
                if check is not None:
                    check(result, run)

    atomic_write(path, write)
    result.seconds = time.perf_counter() - start
    return result


def load_archive(path: str | os.PathLike, kind: str, extra_file: str, loader) -> tuple[Any, dict]:
    """(``loader(path, extra_files)``, effnet metadata) for TorchScript / pt2; one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such {kind} file")
    extra = {extra_file: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = loader(p, extra)
    except Exception as e:  # corrupt archives surface as assorted errors from torch internals
        raise ValueError(f"{p}: not a loadable {kind} file ({first_line(e)})") from None
    return obj, (json.loads(extra[extra_file]) if extra[extra_file] else {})


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def op_groups(value: str | Sequence[str]) -> tuple[str, ...]:
    """``keep_float`` as a tuple: a sequence of group names, a comma-separated string of them,
    or ``"none"`` (the CLI's spelling) for no group."""
    if isinstance(value, str):
        return () if value == "none" else tuple(k for k in value.split(",") if k)
    return tuple(value)
