"""The engine behind ``effnet benchmark``: effnet and its peers side by side, interleaved.

Every candidate (effnet's eager, optimized, ONNX Runtime and compiled paths; timm, torchvision and
ONNX Runtime on the peer's own export) runs in one process. After a warm-up the repetitions
alternate A B C A B C..., so a noisy neighbour slows every candidate alike and the ratios hold.
Reported: medians with min-max spread of batch-1 latency, batch-N inference throughput, training
throughput (forward, backward, SGD step) and peak memory (CPU: peak RSS above the starting RSS,
with large allocations returned to the OS at once; GPU: ``torch.cuda.max_memory_allocated``).

Peers are imported only inside the functions that build them, and only when asked for.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import effnet
from effnet.deploy.export import export
from effnet.deploy.export.executorch import load_executorch
from effnet.deploy.export.tflite import load_tflite
from effnet.deploy.optimize import optimize_for_inference
from effnet.deploy.quantize import quantize_onnx
from effnet.env import missing_message, require
from effnet.env.device import kept_process_state
from effnet.fast import accelerate
from effnet.registry import canonical_name

# effnet's own files in other runtimes: --against word -> (candidate, format, int8).
EDGE = {
    "onnxruntime-int8": ("effnet onnxruntime int8", "onnx", True),
    "executorch": ("effnet executorch", "executorch", False),
    "executorch-int8": ("effnet executorch int8", "executorch", True),
    "litert": ("effnet litert", "tflite", False),
    "litert-int8": ("effnet litert int8", "tflite", True),
}
EDGE_MODULES = {"onnx": "onnxruntime", "executorch": "executorch", "tflite": "litert_torch"}
EDGE_CALIBRATION = ("digits", 16)  # INT8 candidates: speed does not depend on the images
PEERS = ("timm", "torchvision", "onnxruntime", *EDGE)
MODES = ("infer", "train", "both")

# effnet name -> the peer's name for the same architecture (symmetric padding, same blocks).
TIMM_NAMES = {
    **{f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(9)},
    **{f"efficientnet_lite{i}": f"efficientnet_lite{i}" for i in range(5)},
    **{f"efficientnetv2_{s}": f"efficientnetv2_{s}" for s in ("s", "m", "l", "xl")},
}
TORCHVISION_NAMES = {
    **{f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)},
    **{f"efficientnetv2_{s}": f"efficientnet_v2_{s}" for s in ("s", "m", "l")},
}


@dataclass
class Series:
    """Repeated measurements of one quantity for one candidate."""

    values: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float] | None:
        if not self.values:
            return None
        return {
            "median": statistics.median(self.values),
            "min": min(self.values),
            "max": max(self.values),
            "n": len(self.values),
            "values": [round(v, 4) for v in self.values],  # in repetition order
        }


@dataclass
class Candidate:
    """One way to run the architecture: ``infer(x)`` / ``train_step(x, y)``; None = not offered."""

    name: str
    infer: Callable[[torch.Tensor], Any] | None = None
    train_step: Callable[[torch.Tensor, torch.Tensor], Any] | None = None
    note: str = ""
    probe: str | None = None  # how a fresh process rebuilds it for the memory pass


# ---------------------------------------------------------------------------------------------
# memory


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def steady_allocator() -> None:
    """Fix glibc's malloc thresholds at their steady-state maxima (32 MiB mmap, 64 MiB trim) and
    return free heap pages, so a timing taken now sees the same allocator behaviour whatever the
    process did before. Left alone, glibc raises its mmap threshold the first time a large block
    is freed, so the same step can run at different speeds early and late in a process."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD
        libc.malloc_trim(0)


@contextlib.contextmanager
def _exact_rss() -> Iterator[None]:
    """While active, glibc hands blocks over 128 KiB straight back to the OS, so RSS follows the
    live tensors. Afterwards the thresholds sit at glibc's own steady-state maxima (32 MiB mmap,
    64 MiB trim), so the timed runs allocate as usual; only memory passes run inside this."""
    libc = _libc()
    m_trim_threshold, m_mmap_threshold = -1, -3
    if libc is not None:
        libc.mallopt(m_mmap_threshold, 128 * 1024)
        libc.mallopt(m_trim_threshold, 128 * 1024)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(m_mmap_threshold, 32 * 2**20)
            libc.mallopt(m_trim_threshold, 64 * 2**20)


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block of work in MiB, above what was held when it started."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib: float | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)
        self._base = _status_kib("VmRSS")
        try:  # Linux: "5" resets the VmHWM high-water mark to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
            self._resettable = True
        except OSError:
            self._resettable = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return
        hwm = _status_kib("VmHWM")
        if self._resettable and hwm is not None and self._base is not None:
            self.peak_mib = (hwm - self._base) / 1024


# ---------------------------------------------------------------------------------------------
# candidates


def _sgd_step(model: nn.Module, channels_last: bool = False) -> Callable:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        # Gradients freed after the step, so none are held between steps: the memory pass
        # starts from parameters + optimizer state and its peak includes the gradients.
        opt.zero_grad(set_to_none=True)

    return step


def _no_grad(model: nn.Module) -> Callable:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


def _onnx_session(model: nn.Module, example: torch.Tensor, threads: int, path: Path):
    """Export ``model`` (eval, fp32) and open it with all graph optimizations on."""
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return _ort_run(path, threads)


def _ort_run(path: Path, threads: int):
    """An ONNX Runtime session on ``path``, all graph optimizations on, ``threads`` threads."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor):
        return sess.run(None, {"input": x.numpy()})

    return run


def _build_timm(name: str, num_classes: int) -> nn.Module:
    timm = require("timm")  # a user-requested peer: imported only here

    return timm.create_model(TIMM_NAMES[name], num_classes=num_classes)


def _build_torchvision(name: str, num_classes: int) -> nn.Module:
    torchvision = require("torchvision")

    return getattr(torchvision.models, TORCHVISION_NAMES[name])(num_classes=num_classes)


def build_candidates(
    name: str,
    *,
    against: tuple[str, ...],
    modes: tuple[str, ...],
    image_size: int,
    threads: int,
    device: torch.device,
    compile_mode: str | None,
    workdir: Path,
    log: Callable[[str], None],
) -> tuple[list[Candidate], list[str]]:
    """effnet's paths first, then each available peer; returns (candidates, skipped notes)."""
    skipped: list[str] = []
    model = effnet.create_model(name, device=device)
    example = torch.randn(1, 3, image_size, image_size, device=device)
    cands = _effnet_candidates(model, modes, compile_mode, log)
    want_ort = "onnxruntime" in against and "infer" in modes and device.type == "cpu"
    if want_ort and _importable("onnxruntime"):
        log("exporting effnet to ONNX")
        fast = optimize_for_inference(model, channels_last=False)
        cands.append(
            Candidate(
                "effnet onnxruntime",
                infer=_onnx_session(fast, example, threads, workdir / "effnet.onnx"),
                note="folded graph, ORT graph optimizations: all",
            )
        )
    elif want_ort:
        skipped.append("onnxruntime: not installed (pip install onnxruntime)")
    if "infer" in modes and device.type == "cpu":
        cands += edge_candidates(model, against, image_size, threads, workdir, skipped, log)
    peers, peer_cands = _peer_candidates(name, against, modes, model.num_classes, device, skipped)
    cands += peer_cands
    if want_ort and _importable("onnxruntime"):
        source = next((p for p in ("torchvision", "timm") if p in peers), None)
        if source is None:
            skipped.append("onnxruntime peer: needs --against torchvision or timm to export")
        else:
            log(f"exporting {source} to ONNX")
            cands.append(
                Candidate(
                    f"onnxruntime ({source} export)",
                    infer=_onnx_session(
                        peers[source].eval(), example, threads, workdir / f"{source}.onnx"
                    ),
                    note=f"{source}'s own model exported, same session options",
                )
            )
    return cands, skipped


def edge_candidates(
    model: nn.Module,
    against: tuple[str, ...],
    image_size: int,
    threads: int,
    workdir: Path,
    skipped: list[str],
    log: Callable[[str], None],
) -> list[Candidate]:
    """effnet's model as an INT8 ONNX file under ONNX Runtime, and as ExecuTorch / LiteRT files
    (fp32, INT8) in their runtimes: each written by effnet's own verified export, then run on
    ``threads`` threads. INT8 files are calibrated on a few digits images."""
    cands = []
    for word, (label, fmt, int8) in EDGE.items():
        if word not in against:
            continue
        if not _importable(EDGE_MODULES[fmt]):
            skipped.append(f"{word}: {missing_message(EDGE_MODULES[fmt])}")
            continue
        log(f"writing {label}")
        run = _edge_file(model, fmt, int8, image_size, threads, workdir / f"{word}.{fmt}")
        what = "INT8 (PT2E)" if int8 and fmt != "onnx" else "INT8 QDQ" if int8 else "fp32"
        cands.append(Candidate(label, infer=run, note=f"effnet's {fmt} export, {what}"))
    return cands


def _edge_file(model: nn.Module, fmt: str, int8: bool, size: int, threads: int, path: Path):
    data, images = EDGE_CALIBRATION
    if fmt == "onnx":
        quantize_onnx(model, calibrate=data, output=path, images=images, image_size=size)
        return _ort_run(path, threads)
    calibrate = data if int8 else None
    export(model, fmt, path, image_size=size, int8=int8, calibrate=calibrate, images=images)
    load = load_executorch if fmt == "executorch" else load_tflite
    return load(path, threads=threads)


def _effnet_candidates(
    model: nn.Module, modes: tuple[str, ...], compile_mode: str | None, log: Callable
) -> list[Candidate]:
    """effnet's own paths: the default (``effnet.accelerate``, what effnet's entry points run),
    activation recompute, optimize_for_inference and torch.compile."""
    fast = accelerate(_train_copy(model))
    cands = [
        Candidate(
            "effnet",
            infer=_no_grad(fast.eval()) if "infer" in modes else None,
            train_step=_sgd_step(_train_copy(fast)) if "train" in modes else None,
            note="default: effnet.accelerate (BN folded per call, fused BN+SiLU, channels-last)",
            probe="effnet",
        )
    ]
    if "train" in modes and any(isinstance(m, nn.SiLU) for m in model.modules()):
        # Only SiLU models have BN+SiLU outputs to rebuild (Lite's ReLU6 has none).
        lean = _train_copy(fast)
        lean.set_activation_recompute(True)
        cands.append(
            Candidate(
                "effnet lean",
                train_step=_sgd_step(lean),
                note="training with activation recompute (SiLU(BN(x)) rebuilt in backward)",
                probe="effnet recompute",
            )
        )
    if "infer" in modes:
        cands.append(
            Candidate(
                "effnet optimized",
                infer=_no_grad(optimize_for_inference(model)),
                note="optimize_for_inference: BN folded, channels-last",
                probe="effnet optimized",
            )
        )
    if compile_mode:
        log(f"compiling effnet ({compile_mode}); the first call takes a while")
        cands.append(
            Candidate(
                "effnet compile",
                infer=_no_grad(optimize_for_inference(model, compile=compile_mode))
                if "infer" in modes
                else None,
                train_step=_sgd_step(torch.compile(_train_copy(model), mode=compile_mode))
                if "train" in modes
                else None,
                note=f"torch.compile mode={compile_mode}",
            )
        )
    return cands


def _peer_candidates(
    name: str,
    against: tuple[str, ...],
    modes: tuple[str, ...],
    num_classes: int,
    device: torch.device,
    skipped: list[str],
) -> tuple[dict[str, nn.Module], list[Candidate]]:
    peers: dict[str, nn.Module] = {}
    cands: list[Candidate] = []
    for peer, table, builder in (
        ("timm", TIMM_NAMES, _build_timm),
        ("torchvision", TORCHVISION_NAMES, _build_torchvision),
    ):
        if peer not in against:
            continue
        if not _importable(peer):
            skipped.append(f"{peer}: not installed (pip install {peer})")
            continue
        if name not in table:
            skipped.append(f"{peer}: has no {name}")
            continue
        ref = builder(name, num_classes).to(device)
        peers[peer] = ref
        cands.append(
            Candidate(
                peer,
                infer=_no_grad(ref.eval()) if "infer" in modes else None,
                train_step=_sgd_step(_train_copy(ref)) if "train" in modes else None,
                note=f"{table[name]}, eager, default settings",
                probe=peer,
            )
        )
    return peers, cands


def _train_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).train()


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def effnet_variant(name: str, kind: str) -> tuple[nn.Module, contextlib.AbstractContextManager]:
    """effnet built as ``kind`` says: "effnet" (the default: ``effnet.accelerate``) plus flags
    "optimized" (optimize_for_inference), "plain" (the model as create_model returns it, no
    fast paths), "cl" (channels-last forced on), "nchw" (off), "ckpt" (gradient checkpointing),
    "recompute" (activation recompute). Returns the model and the context its calls run in."""
    flags = set(kind.split()[1:])
    unknown = flags - {"optimized", "plain", "cl", "nchw", "ckpt", "recompute"}
    if unknown:
        raise ValueError(f"unknown effnet variant flag(s) {sorted(unknown)} in {kind!r}")
    model = effnet.create_model(name)
    if "optimized" in flags:
        model = optimize_for_inference(model, channels_last=False if "nchw" in flags else None)
    elif "plain" not in flags:
        accelerate(model)
    if "cl" in flags or "nchw" in flags:
        model.channels_last = "cl" in flags
        model.to(memory_format=torch.channels_last if "cl" in flags else torch.contiguous_format)
    if "ckpt" in flags:
        model.set_grad_checkpointing(True)
    if "recompute" in flags:
        model.set_activation_recompute(True)
    return model, contextlib.nullcontext()


def _probe(kind: str, name: str, size: int, batch: int, mode: str, threads: int) -> float | None:
    """Peak memory (MiB) of one inference or training step of one candidate, in this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
    if kind.startswith("effnet"):
        model, ctx = effnet_variant(name, kind)
    else:
        model = (_build_timm if kind == "timm" else _build_torchvision)(name, 1000)
    x = torch.randn(batch, 3, size, size)
    if mode == "train":
        step = _sgd_step(model.train())
        y = torch.randint(0, 1000, (batch,))

        def work() -> None:
            step(x, y)
    else:
        run = _no_grad(model.eval())

        def work() -> None:
            run(x)

    cpu = torch.device("cpu")
    with _exact_rss(), ctx:
        work()  # allocate optimizer state, pick kernels
        with PeakMemory(cpu) as mem:
            work()
    return mem.peak_mib


def _probe_in_subprocess(
    kind: str, name: str, size: int, batch: int, mode: str, threads: int, log: Callable
) -> float | None:
    root = str(Path(effnet.__file__).resolve().parents[1])  # the same effnet as this process
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    code = (
        "import json, sys; from effnet.benchmark.engine import _probe; "
        "print(json.dumps(_probe(*json.loads(sys.argv[1]))))"
    )
    args = json.dumps([kind, name, size, batch, mode, threads])
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, args],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        log(f"memory probe for {kind} ({mode}) failed: {e}")
        return None


# ---------------------------------------------------------------------------------------------
# timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, calls: int = 1) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / calls


def measure(
    cands: list[Candidate],
    name: str,
    size: int,
    batch_size: int,
    modes: tuple[str, ...],
    threads: int,
    dev: torch.device,
    reps: int,
    warmup: int,
    memory: bool,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Measure peak memory, then per mode (inference first) warm up and time ``reps``
    interleaved rounds; one row per candidate.

    Rounds alternate the candidates' order (A B C, C B A, ...), so use an even ``reps``.
    """
    x1 = torch.randn(1, 3, size, size, device=dev)
    xn = torch.randn(batch_size, 3, size, size, device=dev)
    y = torch.randint(0, 1000, (batch_size,), device=dev)
    results: dict[str, dict[str, Series]] = {c.name: {} for c in cands}
    if memory:
        _memory_pass(cands, results, name, size, batch_size, modes, threads, dev, (xn, y), log)

    def infer(c: Candidate, timed: bool) -> None:
        if not timed:
            c.infer(x1)
            c.infer(xn)
            return
        s = results[c.name]
        lat = _timed(lambda: c.infer(x1), dev, calls=3)
        s.setdefault("latency_ms", Series()).values.append(lat * 1e3)
        t = _timed(lambda: c.infer(xn), dev)
        s.setdefault("infer_img_s", Series()).values.append(batch_size / t)

    def train(c: Candidate, timed: bool) -> None:
        if not timed:
            c.train_step(xn, y)
            return
        t = _timed(lambda: c.train_step(xn, y), dev)
        results[c.name].setdefault("train_img_s", Series()).values.append(batch_size / t)

    # Inference is timed before any training step runs in this process, as in a process that
    # only serves: a training step's large frees leave glibc's heap grown, after which eager
    # inference that allocates a lot runs much faster (torchvision's B0: 27.5 -> 46.1 img/s in
    # benchmarks/results/cpu_limits.md), a state a serving process never reaches.
    for phase, run in (("infer", infer), ("train", train)):
        if phase in modes:
            _interleaved(cands, phase, run, reps, warmup, log)
    return {
        c.name: {"note": c.note, **{k: v.summary() for k, v in results[c.name].items()}}
        for c in cands
    }


def _memory_pass(cands, results, name, size, batch_size, modes, threads, dev, batch, log) -> None:
    """Peak memory: each candidate once in a fresh process on CPU (allocations are
    deterministic; in this process the other candidates' allocator and oneDNN caches would
    blur it), or here with the CUDA allocator's own statistics."""
    if dev.type == "cpu":
        log("memory pass (one fresh process per candidate)")
        for c in cands:
            for m in modes:
                if c.probe is None or (c.infer if m == "infer" else c.train_step) is None:
                    continue
                peak = _probe_in_subprocess(c.probe, name, size, batch_size, m, threads, log)
                if peak is not None:
                    results[c.name].setdefault(f"{m}_peak_mib", Series()).values.append(peak)
        return
    for c in cands:
        if c.train_step is not None and "train" in modes:
            with PeakMemory(dev) as mem:
                c.train_step(*batch)
            results[c.name].setdefault("train_peak_mib", Series()).values.append(mem.peak_mib)


def _interleaved(
    cands: list[Candidate], phase: str, run: Callable, reps: int, warmup: int, log: Callable
) -> None:
    active = [c for c in cands if (c.infer if phase == "infer" else c.train_step) is not None]
    # Warm-up: first calls allocate, pick kernels and (for torch.compile) compile.
    log(f"{phase}: warm-up ({warmup} rounds)")
    for c in active:
        for _ in range(warmup):
            run(c, False)
    for r in range(reps):
        log(f"{phase}: repetition {r + 1}/{reps}")
        # Interleaved: every candidate once per repetition, in forward order on even
        # repetitions and reversed on odd ones. Running right after a given other candidate
        # (its caches, its freed memory) shifts a timing by several percent (two identical
        # ONNX Runtime graphs read 1.09x first, 0.92x second); alternating cancels that.
        for c in active if r % 2 == 0 else active[::-1]:
            run(c, True)


@kept_process_state(rng=True)  # it sets threads and seeds for itself, not for the caller
def run_benchmark(
    name: str,
    *,
    image_size: int | None = None,
    batch_size: int = 16,
    mode: str = "both",
    threads: int | None = None,
    against: tuple[str, ...] | list[str] = (),
    reps: int = 6,
    warmup: int = 2,
    compile_mode: str | None = None,
    device: str = "cpu",
    memory: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Benchmark ``name`` and its peers; returns a JSON-ready dict (see ``format_report``)."""
    name = canonical_name(name)  # EfficientNet-B0 -> efficientnet_b0, also for the peers' names
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    bad = [p for p in against if p not in PEERS]
    if bad:
        raise ValueError(f"unknown peer {bad[0]!r}; choose from {', '.join(PEERS)}")
    for label, v, lo in (("batch_size", batch_size, 1), ("reps", reps, 1), ("warmup", warmup, 0)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{label} must be an integer >= {lo}, got {v!r}")
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    dev = torch.device(device)
    size = image_size or effnet.data_config(name)["input_size"][-1]
    modes = ("infer", "train") if mode == "both" else (mode,)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="effnet-bench-") as tmp:
        cands, skipped = build_candidates(
            name,
            against=tuple(against),
            modes=modes,
            image_size=size,
            threads=threads,
            device=dev,
            compile_mode=compile_mode,
            workdir=Path(tmp),
            log=log,
        )
        rows = measure(
            cands, name, size, batch_size, modes, threads, dev, reps, warmup, memory, log
        )
    return {
        "model": name,
        "image_size": size,
        "batch_size": batch_size,
        "mode": mode,
        "threads": threads,
        "reps": reps,
        "device": str(dev),
        "machine": machine_info(dev),
        "results": rows,
        "ratios": ratios(rows),
        "paired_ratios": paired_ratios(rows),
        "skipped": skipped,
    }


METRICS = {  # metric -> (label, unit, higher is better)
    "latency_ms": ("batch-1 latency", "ms", False),
    "infer_img_s": ("inference", "img/s", True),
    "infer_peak_mib": ("inference peak mem", "MiB", False),
    "train_img_s": ("training", "img/s", True),
    "train_peak_mib": ("training peak mem", "MiB", False),
}


def _pairs(rows: dict[str, dict[str, Any]]) -> Iterator[tuple[str, bool, str, str]]:
    """(metric, higher is better, effnet candidate, peer) for every metric in METRICS."""
    mine = [n for n in rows if n.startswith("effnet")]
    peers = [n for n in rows if not n.startswith("effnet")]
    for metric, (_, _, higher) in METRICS.items():
        for a in mine:
            for b in peers:
                yield metric, higher, a, b


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """effnet candidate / peer for each metric, oriented so that > 1 means effnet is better
    (speed-ups for time and throughput); memory ratios stay effnet / peer (< 1 is less memory)."""
    out: dict[str, dict[str, float]] = {}
    for metric, higher, a, b in _pairs(rows):
        ma, mb = rows[a].get(metric), rows[b].get(metric)
        if not ma or not mb or not mb["median"] or not ma["median"]:
            continue
        va, vb = ma["median"], mb["median"]
        r = va / vb if higher or metric.endswith("_mib") else vb / va
        out.setdefault(metric, {})[f"{a} / {b}"] = round(r, 3)
    return out


def paired_ratios(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per-repetition ratios for the timed metrics: repetition i of effnet against repetition i of
    the peer, measured moments apart, so a machine that drifts between repetitions cancels out.
    Median, min and max over the repetitions, oriented as ``ratios`` (> 1: effnet faster)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for metric, higher, a, b in _pairs(rows):
        if metric.endswith("_mib"):
            continue  # memory is deterministic: the plain ratio says it all
        va = (rows[a].get(metric) or {}).get("values") or []
        vb = (rows[b].get(metric) or {}).get("values") or []
        if len(va) != len(vb) or len(va) < 2 or not all(va) or not all(vb):
            continue
        rs = [x / y if higher else y / x for x, y in zip(va, vb, strict=True)]
        out.setdefault(metric, {})[f"{a} / {b}"] = {
            "median": round(statistics.median(rs), 3),
            "min": round(min(rs), 3),
            "max": round(max(rs), 3),
        }
    return out


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for mod in ("timm", "torchvision", "onnxruntime"):
        with contextlib.suppress(Exception):
            info[mod] = md.version(mod)
    return info


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


WIDTH = 100  # the text report fits this many columns
NOISY = 0.25  # a candidate whose min-max spread exceeds 25% of its median marks a noisy machine
SHORT = {"latency_ms": "b1 latency", "infer_img_s": "inference", "infer_peak_mib": "infer mem",
         "train_img_s": "training", "train_peak_mib": "train mem"}
TINY = {"latency_ms": "lat", "infer_img_s": "infer", "infer_peak_mib": "infer-mem",
        "train_img_s": "train", "train_peak_mib": "train-mem"}


def format_report(res: dict[str, Any], verbose: bool = False) -> str:
    """A plain-text report that fits ``WIDTH`` columns: one row per candidate (median [min-max]
    per metric), then one line of ratios per peer (effnet's default candidate against it; ONNX
    Runtime peers against effnet's own ONNX Runtime export), and a warning where the spread says
    the machine was noisy. ``verbose`` adds every candidate pair with its per-repetition ratios."""
    m = res["machine"]
    load = f", load {m['load_avg_1m']}" if "load_avg_1m" in m else ""
    lines = [
        f"{res['model']} at {res['image_size']}px, batch {res['batch_size']}, "
        f"{res['threads']} threads, {res['reps']} interleaved reps, {res['device']}",
        f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}{load}",
        "",
    ]
    metrics = [k for k in METRICS if any(row.get(k) for row in res["results"].values())]
    name_w = min(34, max(len(n) for n in res["results"]) + 1)
    cell_w = max(13, (WIDTH - name_w) // max(1, len(metrics)))
    heads = [f"{SHORT[k]} ({METRICS[k][1]})" for k in metrics]
    if max(len(h) for h in heads) >= cell_w:  # narrow cells: the compact names
        heads = [f"{TINY[k].replace('-mem', '')} {METRICS[k][1]}" for k in metrics]
    lines.append("candidate".ljust(name_w) + "".join(h.rjust(cell_w) for h in heads))
    for name, row in res["results"].items():
        cells = [_cell(row.get(k), cell_w) for k in metrics]
        lines.append(name[: name_w - 1].ljust(name_w) + "".join(cells))
    lines += _ratio_lines(res, verbose)
    lines += _noise_lines(res, metrics)
    lines += [f"skipped: {note}" for note in res["skipped"]]
    return "\n".join(lines)


def _cell(s: dict | None, width: int) -> str:
    if not s:
        return "-".rjust(width)
    text = f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]"
    return (text if len(text) < width else f"{s['median']:.1f}").rjust(width)


def _ratio_lines(res: dict[str, Any], verbose: bool) -> list[str]:
    if not res["ratios"]:
        return []
    out = [
        "",
        "effnet against each peer (speed > 1: effnet faster; mem: effnet / peer, < 1: less);",
        "effnet's default eager model, and its own ONNX Runtime export against ONNX Runtime peers:",
    ]
    for peer in [n for n in res["results"] if not n.startswith("effnet")]:
        ours = "effnet onnxruntime" if peer.startswith("onnxruntime") else "effnet"
        pair = f"{ours} / {peer}"
        parts = [f"{TINY[k]} {v[pair]:.2f}x" for k, v in res["ratios"].items() if pair in v]
        line = f"  vs {peer[:34]:<34}"
        for part in parts:  # wrap under the first ratio rather than pass WIDTH
            if len(line) + 2 + len(part) > WIDTH:
                out.append(line)
                line = " " * 39
            line += "  " + part
        if parts:
            out.append(line)
    if verbose:
        out += ["", "every pair: ratio of medians, then the per-repetition ratios' median [range]"]
        paired = res.get("paired_ratios", {})
        for k, pairs in res["ratios"].items():
            out.append(f"  {METRICS[k][0]}:")
            for pair, r in pairs.items():
                p = paired.get(k, {}).get(pair)
                extra = f"  per rep {p['median']:.2f}x [{p['min']:.2f}-{p['max']:.2f}]" if p else ""
                out.append(f"    {pair[:54]:<54} {r:.2f}x{extra}")
    return out


def _noise_lines(res: dict[str, Any], metrics: list[str]) -> list[str]:
    """One warning naming the widest spread, when some timed metric varied more than NOISY."""
    worst = None
    for name, row in res["results"].items():
        for k in metrics:
            s = row.get(k)
            if s and s["median"] > 0 and not k.endswith("_mib"):
                spread = (s["max"] - s["min"]) / s["median"]
                if spread > NOISY and (worst is None or spread > worst[0]):
                    worst = (spread, name, k)
    if worst is None:
        return []
    spread, name, k = worst
    return [
        "",
        f"warning: noisy machine: {name} {SHORT[k]} varied by {100 * spread:.0f}% of its median "
        "across reps;",
        "  the ratios may be off. Rerun on a quiet machine (nothing else running) or with more "
        "--reps.",
    ]
