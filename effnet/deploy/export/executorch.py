"""ExecuTorch export: a ``.pte`` program with the XNNPACK delegate, fp32 or INT8, checked in
ExecuTorch's own runtime (``executorch.runtime``) before it takes its name.

INT8 goes through PT2E (``torchao.quantization.pt2e``) with XNNPACK's quantizer: symmetric
per-channel INT8 weights, per-tensor activations observed on calibration images. The batch axis
is dynamic up to ``MAX_BATCH`` (ExecuTorch plans its memory for the largest batch).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from effnet.deploy.export.common import (
    TOLERANCE,
    ExportResult,
    example_input,
    first_line,
    input_spec,
    one_line_errors,
    write_export,
)
from effnet.deploy.export.edge import (
    EdgeOptions,
    calibration_images,
    check_on_images,
    quiet_native,
    record_images,
)
from effnet.deploy.export.int8 import pt2e_quantize
from effnet.env import require

MAX_BATCH = 32
XNNPACK = "executorch.backends.xnnpack"


def require_executorch() -> None:
    """One-line advice (``effnet.env.MissingDependency``) when the executorch extra is missing."""
    for module in ("executorch.exir", "executorch.runtime", "torchao.quantization.pt2e"):
        require(module)


def export_executorch(
    model: nn.Module,
    path: str | os.PathLike,
    image_size: int | None = None,
    *,
    verify: bool = True,
    options: EdgeOptions = EdgeOptions(),  # noqa: B008 (frozen)
) -> ExportResult:
    """Lower ``model`` to ExecuTorch with XNNPACK and write the ``.pte`` to ``path`` atomically.

    With ``verify`` the file runs in ExecuTorch's runtime: fp32 against eager PyTorch at batch 1
    and 3 (and on the calibration images when ``options.calibrate`` is given), INT8 by top-1
    agreement on the calibration images (see ``effnet.deploy.export.edge``).
    """
    opts = options.check("ExecuTorch")
    with quiet_native():  # importing them logs native start-up lines
        require_executorch()
    images, skipped = calibration_images(model, opts, input_spec(model, image_size)[1])
    quantized: dict = {}  # the meta of pt2e_quantize's graph, once saved

    def save(tmp: str, in_chans: int, size: int) -> None:
        example = example_input(2, in_chans, size)  # batch 1 would be specialised
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        with quiet_native(), one_line_errors("ExecuTorch export"):
            module = model
            if opts.int8:
                module = pt2e_quantize(
                    model, _quantizer(), images, example, dynamic=batch,
                    bias_correction=opts.bias_correction, keep_float=opts.keep_float,
                )  # fmt: skip
                quantized.update(module.meta)
                _check_quantized(module)
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            Path(tmp).write_bytes(_lower(program).buffer)

    def check(result: ExportResult, run: Callable) -> None:
        record_images(result, opts, images, skipped, quantized)
        check_on_images(model, run, images, result, opts.min_agreement)
        c, s = input_spec(model, image_size)
        big = torch.randn(MAX_BATCH, c, s, s, generator=torch.Generator().manual_seed(0))
        got = run(big)  # the largest batch: chunked where the file holds fewer at once
        with torch.inference_mode():
            want = model(big)
        if opts.int8:  # random inputs: INT8 agreement would be noise, so finite logits only
            same = bool(torch.isfinite(got).all())
        else:
            same = float((got - want).abs().max()) < TOLERANCE * max(1.0, float(want.abs().max()))
        if got.shape != want.shape or not same:
            raise ValueError(f"the ExecuTorch file gives wrong results at batch {MAX_BATCH}")
        result.max_batch = run.capacity()

    result = write_export(
        model, path, "executorch", image_size, save, load_executorch, verify, check,
        random_inputs=not opts.int8,
    )  # fmt: skip
    if not verify:  # check (which records them) did not run
        record_images(result, opts, images, skipped, quantized)
    return result


def _quantizer():
    q = require(f"{XNNPACK}.quantizer.xnnpack_quantizer")
    return q.XNNPACKQuantizer().set_global(q.get_symmetric_quantization_config(is_per_channel=True))


def _check_quantized(graph: nn.Module) -> None:
    if not any("quantize_per" in str(n.target) for n in graph.graph.nodes):
        raise ValueError("PT2E quantization left the graph in float (no quantize nodes)")


def _lower(program):
    exir = require("executorch.exir")
    partitioner = require(f"{XNNPACK}.partition.xnnpack_partitioner").XnnpackPartitioner
    edge = exir.to_edge_transform_and_lower(program, partitioner=[partitioner()])
    delegated = sum(
        1
        for n in edge.exported_program().graph_module.graph.nodes
        if n.op == "call_function" and "executorch_call_delegate" in str(n.target)
    )
    if not delegated:
        raise ValueError("XNNPACK took no part of the model; the file was not written")
    return edge.to_executorch()


def load_executorch(
    path: str | os.PathLike, *, threads: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable running a ``.pte`` file's ``forward`` in ExecuTorch's runtime; one-line
    errors for a missing or foreign file. ``threads`` resizes ExecuTorch's (process-wide)
    XNNPACK thread pool."""
    require_executorch()
    runtime = require("executorch.runtime").Runtime
    if threads is not None:
        require("executorch.extension.pybindings.portable_lib")._unsafe_reset_threadpool(threads)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such ExecuTorch file")
    try:
        with quiet_native():
            method = runtime.get().load_program(p).load_method("forward")
    except Exception as e:  # the runtime raises RuntimeError with native error codes
        raise ValueError(f"{p}: not a loadable ExecuTorch program ({first_line(e)})") from None

    cap: list[int] = []  # the largest batch the file takes in one call, once known

    def once(x: torch.Tensor) -> torch.Tensor:
        return method.execute([x.detach().cpu().float().contiguous()])[0]

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > MAX_BATCH:
            raise ValueError(f"the ExecuTorch file takes batches up to {MAX_BATCH}, got {len(x)}")
        if not cap:
            cap.append(batch_capacity(once, x))
        if x.shape[0] <= cap[0]:
            return once(x)
        # ExecuTorch 1.5's memory plan can hold fewer images than the exported batch range
        # (effnet's models lowered to XNNPACK take at most 15, whatever the range): larger
        # batches run in chunks the file takes, so every batch up to MAX_BATCH works.
        return torch.cat([once(c) for c in x.split(cap[0])])

    run.capacity = lambda: cap[0] if cap else None  # type: ignore[attr-defined]
    return run


def batch_capacity(once: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    """The largest batch (up to MAX_BATCH) that ``once`` accepts, probed with zeros shaped like
    ``x`` by bisection; the runtime refuses a larger one when it sets the inputs."""

    def takes(n: int) -> bool:
        try:
            with quiet_native():  # a refused resize logs native error lines
                once(torch.zeros((n, *x.shape[1:]), dtype=torch.float32))
        except RuntimeError:
            return False
        return True

    if takes(MAX_BATCH):
        return MAX_BATCH
    lo, hi = 1, MAX_BATCH  # lo is taken, hi is not
    if not takes(lo):
        raise ValueError("the ExecuTorch file refuses a batch of one image")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if takes(mid) else (lo, mid)
    return lo
