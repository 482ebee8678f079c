"""Where the CPU time goes, and what bounds effnet's fastest paths on this machine.

    python3 benchmarks/cpu_limits.py                  # B0, batch 16, 2 threads (about 5 min)
    python3 benchmarks/cpu_limits.py --compile        # + torch.compile (inductor, freezing)

Measures, each in one process and interleaved with the candidates' order alternating:

1. ONNX Runtime: the optimized graphs of effnet's and torchvision's B0 exports (op types after
   ORT's own optimizer), ORT's per-op profile of effnet's graph, and the two sessions A/B.
2. Upper bounds in ORT: the same export with SiLU replaced by ReLU (which ORT fuses into the
   convolution) and with squeeze-excite removed. These change the model, so they are bounds on
   what a runtime could gain from fusing those ops, not paths anyone should use.
3. Other runtimes when installed: OpenVINO on effnet's export; with ``--compile``, inductor with
   freezing (BN folded, channels-last) on the eager model.
4. Training kernels: every B0 1x1 convolution (forward + both gradients) through oneDNN against
   the same products as plain GEMMs, and every depthwise shape's forward, input gradient and
   weight gradient.

Writes benchmarks/results/cpu_limits.md and .json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effnet
from effnet.benchmark.engine import _sgd_step, machine_info
from effnet.deploy.export.onnx import export_onnx
from effnet.layers import SqueezeExcite

OUT = Path(__file__).resolve().parent / "results"

# B0 at 224 px: (in, out, side) of every 1x1 convolution shape and (channels, side, kernel,
# stride) of every depthwise shape, batch 16.
POINTWISE = (
    (32, 16, 112), (16, 96, 112), (96, 24, 56), (24, 144, 56), (144, 24, 56), (144, 40, 28),
    (40, 240, 28), (240, 40, 28), (240, 80, 14), (80, 480, 14), (480, 80, 14), (480, 112, 14),
    (112, 672, 14), (672, 112, 14), (672, 192, 7), (192, 1152, 7), (1152, 192, 7),
    (1152, 320, 7), (320, 1280, 7),
)  # fmt: skip
DEPTHWISE = (
    (32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 5, 2), (240, 28, 5, 1),
    (240, 28, 3, 2), (480, 14, 3, 1), (480, 14, 5, 1), (672, 14, 5, 1), (672, 14, 5, 2),
    (1152, 7, 5, 1), (1152, 7, 3, 1),
)  # fmt: skip


def interleaved(cands: dict[str, Callable[[], Any]], reps: int, per: int = 1) -> dict:
    """Median seconds per call of each candidate; order alternates every repetition."""
    for f in cands.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in cands}
    names = list(cands)
    for r in range(reps):
        for k in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            for _ in range(per):
                cands[k]()
            times[k].append((time.perf_counter() - t) / per)
    return {
        k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in times.items()
    }


def median_ms(fn: Callable[[], Any], n: int = 5) -> float:
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def b0(relu: bool = False, no_se: bool = False) -> nn.Module:
    model = effnet.create_model("efficientnet_b0").eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if relu and type(child).__name__ in ("SiLU", "MemoryEfficientSiLU"):
                setattr(parent, name, nn.ReLU())
            if no_se and isinstance(child, SqueezeExcite):
                setattr(parent, name, nn.Identity())
    return model


def heap_part(batch: int, log) -> dict[str, Any]:
    """Eager inference before and after one training step in this (fresh) process."""
    import torchvision

    log("eager inference before and after one training step (allocator state)")
    models = {"effnet": b0(), "torchvision": torchvision.models.efficientnet_b0().eval()}
    x = torch.randn(batch, 3, 224, 224)

    def speeds() -> dict[str, float]:
        with torch.inference_mode():
            return {
                k: round(batch / median_ms(lambda m=m: m(x)) * 1e3, 1) for k, m in models.items()
            }

    before = speeds()
    tv = models["torchvision"].train()
    F.cross_entropy(tv(x), torch.randint(0, 1000, (batch,))).backward()
    tv.eval().zero_grad(set_to_none=True)
    return {"before": before, "after": speeds()}


def ort_session(path: Path, threads: int, optimized: Path | None = None, profile: bool = False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    opts.enable_profiling = profile
    if profile:  # ORT writes its trace into the working directory otherwise
        opts.profile_file_prefix = str(path.parent / "ort_profile")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def op_types(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path)).graph
    counts = collections.Counter(
        f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in graph.node
    )
    return dict(counts.most_common())


def ort_part(tmp: Path, threads: int, batch: int, reps: int, log) -> dict[str, Any]:
    import torchvision

    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    paths = {"effnet": tmp / "effnet.onnx", "torchvision": tmp / "torchvision.onnx"}
    export_onnx(b0(), paths["effnet"], 224, verify=False)
    with torch.no_grad():
        torch.onnx.export(
            torchvision.models.efficientnet_b0().eval(),
            (torch.randn(1, 3, 224, 224),),
            str(paths["torchvision"]),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    out: dict[str, Any] = {"optimized_ops": {}}
    sessions = {}
    for name, path in paths.items():
        opt = tmp / f"{name}.opt.onnx"
        sessions[name] = ort_session(path, threads, optimized=opt)
        out["optimized_ops"][name] = op_types(opt)
    out["same_optimized_graph"] = (
        out["optimized_ops"]["effnet"] == out["optimized_ops"]["torchvision"]
    )

    log("ORT per-op profile of effnet's graph")
    prof = ort_session(paths["effnet"], threads, profile=True)
    for _ in range(4):
        prof.run(None, {"input": x})
    events = json.loads(Path(prof.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    out["profile_share"] = {k: round(v / total, 3) for k, v in per_op.most_common()}

    log("ORT: effnet's export A/B torchvision's, and the upper-bound variants")
    for tag, kw in (("silu->relu", {"relu": True}), ("no SE", {"no_se": True})):
        p = tmp / f"variant_{tag.replace(' ', '_').replace('>', '')}.onnx"
        export_onnx(b0(**kw), p, 224, verify=False)
        sessions[f"effnet, {tag} (not the model)"] = ort_session(p, threads)
    with contextlib.suppress(ImportError):
        import openvino as ov

        compiled = ov.Core().compile_model(
            str(paths["effnet"]),
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        request = compiled.create_infer_request()
        sessions["OpenVINO on effnet's export"] = request
    cands = {}
    for name, s in sessions.items():
        if hasattr(s, "infer"):
            cands[name] = lambda s=s: s.infer({0: x})
        else:
            cands[name] = lambda s=s: s.run(None, {"input": x})
    res = interleaved(cands, reps)
    base = res["effnet"]["median"]
    out["img_s"] = {k: round(batch / v["median"], 1) for k, v in res.items()}
    out["vs_effnet_ort"] = {k: round(base / v["median"], 3) for k, v in res.items()}
    return out


def _bn_silu_backward_fused(grad, x, weight, mean, invstd, scale, shift):
    """BN+SiLU backward written as two passes (reductions, then the input gradient) for
    inductor to fuse; the eager path reads and writes the map in five separate kernels."""
    z = x * scale + shift
    s = torch.sigmoid(z)
    gy = grad * (s * (1 + z * (1 - s)))
    xhat = (x - mean.view(1, -1, 1, 1)) * invstd.view(1, -1, 1, 1)
    db = gy.sum((0, 2, 3))
    dw = (gy * xhat).sum((0, 2, 3))
    n = x.numel() // x.shape[1]
    dx = scale * (gy - (db / n).view(1, -1, 1, 1) - xhat * (dw / n).view(1, -1, 1, 1))
    return dx, dw, db


def compile_part(threads: int, batch: int, reps: int, tmp: Path, log) -> dict[str, Any]:
    import torch._inductor.config as inductor_config

    from effnet.fused import _BNSiLUFn

    log("inductor with freezing (compiling, about a minute)")
    inductor_config.freezing = True
    fast = effnet.optimize_for_inference(b0())
    compiled = torch.compile(fast)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    cands = {
        "torch.compile (freezing)": lambda: compiled(x),
        "optimize_for_inference eager": lambda: fast(x),
    }
    if (tmp / "effnet.onnx").exists():
        session = ort_session(tmp / "effnet.onnx", threads)
        xn = x.contiguous().numpy()
        cands["ORT on effnet's export"] = lambda: session.run(None, {"input": xn})
    with torch.inference_mode():
        res = interleaved(cands, reps)
    out: dict[str, Any] = {
        "infer_img_s": {k: round(batch / v["median"], 1) for k, v in res.items()}
    }

    log("BN+SiLU backward: effnet's eager kernels against one inductor-fused function")
    fused = torch.compile(_bn_silu_backward_fused, dynamic=False)
    rows = []
    for c, side in ((96, 112), (144, 56), (240, 28), (672, 14)):
        xin = torch.randn(batch, c, side, side).contiguous(memory_format=torch.channels_last)
        weight, bias = torch.rand(c) + 0.5, torch.randn(c)
        xin.requires_grad_(True)
        out_eager = _BNSiLUFn.apply(xin, weight, bias, torch.zeros(c), torch.ones(c), 0.01, 1e-3)
        grad = torch.randn_like(out_eager)
        eager_ms = median_ms(
            # autograd.grad returns the input gradient instead of accumulating it into .grad
            lambda out_eager=out_eager, grad=grad, xin=xin: torch.autograd.grad(
                out_eager, xin, grad, retain_graph=True
            )
        )
        _, mean, invstd = torch.ops.aten.native_batch_norm(
            xin.detach(), weight, bias, None, None, True, 0.0, 1e-3
        )
        scale = (weight * invstd).view(1, -1, 1, 1)
        shift = (bias - mean * scale.flatten()).view(1, -1, 1, 1)
        args = (grad, xin.detach(), weight, mean, invstd, scale, shift)
        fused_ms = median_ms(lambda args=args: fused(*args))
        (dx_eager,) = torch.autograd.grad(out_eager, xin, grad, retain_graph=True)
        dx_fused = fused(*args)[0]
        rel = ((dx_eager - dx_fused).abs().max() / dx_eager.abs().max()).item()
        rows.append(
            {
                "shape": [batch, c, side, side],
                "eager_ms": round(eager_ms, 1),
                "dx_max_rel_diff": float(f"{rel:.1e}"),
                "fused_ms": round(fused_ms, 1),
            }
        )
    out["bn_silu_backward"] = rows

    log("whole B0 training step with that fused backward patched in (compiles each shape)")
    torch._dynamo.config.cache_size_limit = 64
    torch._dynamo.config.accumulated_cache_size_limit = 256
    original = _BNSiLUFn.backward
    use_fused = {"on": False}

    def patched(ctx, grad):
        if not use_fused["on"]:
            return original(ctx, grad)
        x_, weight_, mean_, invstd_, scale_, shift_ = ctx.saved_tensors
        return (*fused(grad, x_, weight_, mean_, invstd_, scale_, shift_), None, None, None, None)

    model = b0().train().to(memory_format=torch.channels_last)
    step = _sgd_step(model, channels_last=True)
    xb, yb = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))

    def run(on: bool) -> None:
        use_fused["on"] = on
        step(xb, yb)

    _BNSiLUFn.backward = staticmethod(patched)
    try:
        res = interleaved({"eager": lambda: run(False), "fused backward": lambda: run(True)}, reps)
    finally:
        _BNSiLUFn.backward = staticmethod(original)
    out["train_img_s"] = {k: round(batch / v["median"], 2) for k, v in res.items()}
    return out


def train_kernels(batch: int, log) -> dict[str, Any]:
    log("training kernels: 1x1 convolutions, depthwise convolutions")
    pw = {"onednn_ms": 0.0, "gemm_ms": 0.0, "rows": []}
    for cin, cout, side in POINTWISE:
        x = torch.randn(batch, cin, side, side).contiguous(memory_format=torch.channels_last)
        g = torch.randn(batch, cout, side, side).contiguous(memory_format=torch.channels_last)
        w = torch.randn(cout, cin, 1, 1)
        x2, g2, w2 = (
            x.permute(0, 2, 3, 1).reshape(-1, cin),
            g.permute(0, 2, 3, 1).reshape(-1, cout),
            w.view(cout, cin),
        )

        def onednn(x=x, g=g, w=w):
            F.conv2d(x, w)
            torch.ops.aten.convolution_backward(
                g, x, w, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1, (True, True, False)
            )

        def gemm(x2=x2, g2=g2, w2=w2):
            torch.mm(x2, w2.t())
            torch.mm(g2, w2)
            torch.mm(g2.t(), x2)

        a, b = median_ms(onednn), median_ms(gemm)
        gflop = 3 * 2 * batch * side * side * cin * cout / 1e9
        pw["rows"].append(
            {
                "shape": [cin, cout, side],
                "onednn_ms": round(a, 2),
                "gemm_ms": round(b, 2),
                "onednn_gflop_s": round(gflop / a * 1e3, 1),
            }
        )
        pw["onednn_ms"] += a
        pw["gemm_ms"] += b
    dw = {"forward_ms": 0.0, "input_grad_ms": 0.0, "weight_grad_ms": 0.0, "rows": []}
    for c, side, k, s in DEPTHWISE:
        x = torch.randn(batch, c, side, side).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, 1, k, k)
        p = k // 2
        g = torch.randn_like(F.conv2d(x, w, None, s, p, 1, c))

        def back(mask, g=g, x=x, w=w, s=s, p=p, c=c):
            return torch.ops.aten.convolution_backward(
                g, x, w, None, (s, s), (p, p), (1, 1), False, (0, 0), c, mask
            )

        row = {
            "shape": [c, side, k, s],
            "forward_ms": median_ms(
                lambda x=x, w=w, s=s, p=p, c=c: F.conv2d(x, w, None, s, p, 1, c)
            ),
            "input_grad_ms": median_ms(lambda: back((True, False, False))),
            "weight_grad_ms": median_ms(lambda: back((False, True, False))),
        }
        dw["rows"].append(
            {k2: (round(v, 2) if isinstance(v, float) else v) for k2, v in row.items()}
        )
        for key in ("forward_ms", "input_grad_ms", "weight_grad_ms"):
            dw[key] += row[key]
    for d in (pw, dw):
        for key, v in d.items():
            if key != "rows":
                d[key] = round(v, 1)
    return {"pointwise": pw, "depthwise": dw}


def to_markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# CPU limits: where B0's time goes and what bounds the fastest paths",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {doc['threads']} threads, torch {m['torch']}, "
        f"load average at start {m.get('load_avg_1m', '?')}; batch {doc['batch']}, 224 px, fp32, "
        f"{doc['reps']} interleaved repetitions (order alternating), medians.",
        f"Command: `{doc['command']}`",
        "",
    ]
    h = doc.get("heap")
    if h:
        lines += [
            "## Eager inference and the allocator",
            "",
            "img/s in a fresh process, then after one torchvision training step in the same "
            "process (its frees leave glibc's heap grown):",
            "",
            "| model | before | after |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {h['before'][k]} | {h['after'][k]} |" for k in h["before"]]
        lines.append("")
    o = doc.get("ort")
    if o:
        lines += [
            "## ONNX Runtime",
            "",
            "Same optimized graph for effnet's and torchvision's export: "
            f"**{o['same_optimized_graph']}**",
            "",
            "| op (after ORT's optimizer) | effnet | torchvision |",
            "|---|---|---|",
        ]
        ops = dict.fromkeys(
            list(o["optimized_ops"]["effnet"]) + list(o["optimized_ops"]["torchvision"])
        )
        for op in ops:
            lines.append(
                f"| {op} | {o['optimized_ops']['effnet'].get(op, 0)} "
                f"| {o['optimized_ops']['torchvision'].get(op, 0)} |"
            )
        lines += ["", "ORT's kernel time on effnet's graph, by op:", ""]
        lines += [f"- {k}: {100 * v:.1f}%" for k, v in o["profile_share"].items()]
        lines += ["", "| session | img/s | vs ORT on effnet's export |", "|---|---|---|"]
        lines += [f"| {k} | {o['img_s'][k]} | {o['vs_effnet_ort'][k]:.2f}x |" for k in o["img_s"]]
        lines.append("")
    c = doc.get("compile")
    if c:
        lines += ["## torch.compile (inductor)", "", "| inference path | img/s |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in c["infer_img_s"].items()]
        lines += [
            "",
            "BN+SiLU backward, effnet's eager autograd node against one inductor-fused function "
            "(includes the weight and bias gradients):",
            "",
            "| map | eager ms | fused ms | input gradient, max difference / max |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {tuple(r['shape'])} | {r['eager_ms']} | {r['fused_ms']} "
            f"| {r.get('dx_max_rel_diff', '-')} |"
            for r in c["bn_silu_backward"]
        ]
        lines += [
            "",
            "Whole B0 training step (batch 16), img/s: "
            + ", ".join(f"{k} {v}" for k, v in c["train_img_s"].items()),
            "",
        ]
    t = doc.get("train")
    if t:
        pw, dw = t["pointwise"], t["depthwise"]
        lines += [
            "## Training kernels (batch 16, channels-last)",
            "",
            f"Every B0 1x1 shape, forward + input gradient + weight gradient: oneDNN "
            f"{pw['onednn_ms']} ms, the same products as GEMMs {pw['gemm_ms']} ms. "
            "oneDNN's GFLOP/s per shape (in, out, side): "
            + ", ".join(f"{tuple(r['shape'])} {r['onednn_gflop_s']}" for r in pw["rows"])
            + ".",
            "",
            f"Every B0 depthwise shape once: forward {dw['forward_ms']} ms, input gradient "
            f"{dw['input_grad_ms']} ms, weight gradient {dw['weight_grad_ms']} ms.",
            "",
            "| depthwise (channels, side, kernel, stride) | forward ms | input grad ms "
            "| weight grad ms |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {tuple(r['shape'])} | {r['forward_ms']} | {r['input_grad_ms']} "
            f"| {r['weight_grad_ms']} |"
            for r in dw["rows"]
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--compile", action="store_true", help="add torch.compile with freezing")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"[cpu_limits] {msg}", file=sys.stderr, flush=True)

    doc: dict[str, Any] = {
        "command": "python3 benchmarks/cpu_limits.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "threads": args.threads,
        "batch": args.batch_size,
        "reps": args.reps,
        "machine": machine_info(torch.device("cpu")),
    }
    doc["heap"] = heap_part(args.batch_size, log)  # first: nothing has trained here yet
    with tempfile.TemporaryDirectory() as tmp:
        try:
            doc["ort"] = ort_part(Path(tmp), args.threads, args.batch_size, args.reps, log)
        except ImportError as e:
            log(f"skipped ONNX Runtime part: {e}")
        if args.compile:
            doc["compile"] = compile_part(args.threads, args.batch_size, args.reps, Path(tmp), log)
    doc["train"] = train_kernels(args.batch_size, log)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_limits.json").write_text(json.dumps(doc, indent=2))
    (args.out / "cpu_limits.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
