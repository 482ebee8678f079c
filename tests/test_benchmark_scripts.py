"""The benchmark scripts' own logic (their measurements are run by hand, see benchmarks/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from effnet.layers import SqueezeExcite

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_limits.py"


def _load():
    spec = importlib.util.spec_from_file_location("cpu_limits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("cpu_limits", module)
    spec.loader.exec_module(module)
    return module


def test_interleaved_alternates_order_and_reports_medians():
    cl = _load()
    calls: list[str] = []
    res = cl.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 4)
    assert calls[2:] == list("abbaabba")  # after one warm-up call each
    assert set(res) == {"a", "b"}
    assert all(r["min"] <= r["median"] <= r["max"] for r in res.values())


def test_upper_bound_variants_really_drop_silu_and_se():
    cl = _load()
    base = cl.b0()
    variant = cl.b0(relu=True, no_se=True)
    assert any(isinstance(m, nn.SiLU) for m in base.modules())
    assert any(isinstance(m, SqueezeExcite) for m in base.modules())
    assert not any(isinstance(m, nn.SiLU | SqueezeExcite) for m in variant.modules())
    with torch.no_grad():
        assert variant(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_markdown_has_every_section():
    cl = _load()
    doc = {
        "command": "python3 benchmarks/cpu_limits.py",
        "threads": 2,
        "batch": 16,
        "reps": 4,
        "machine": {"cpu": "x", "cores": 2, "torch": "t"},
        "heap": {"before": {"torchvision": 21.0}, "after": {"torchvision": 35.0}},
        "ort": {
            "optimized_ops": {"effnet": {"Conv": 2}, "torchvision": {"Conv": 2, "Mul": 1}},
            "same_optimized_graph": False,
            "profile_share": {"Conv": 1.0},
            "img_s": {"effnet": 80.0, "torchvision": 79.0},
            "vs_effnet_ort": {"effnet": 1.0, "torchvision": 0.99},
        },
        "compile": {
            "infer_img_s": {"torch.compile (freezing)": 50.0},
            "bn_silu_backward": [{"shape": [16, 8, 4, 4], "eager_ms": 2.0, "fused_ms": 1.0}],
            "train_img_s": {"eager": 10.0, "fused backward": 11.0},
        },
        "train": {
            "pointwise": {
                "onednn_ms": 1.0,
                "gemm_ms": 2.0,
                "rows": [{"shape": [8, 8, 4], "onednn_gflop_s": 9.0}],
            },
            "depthwise": {
                "forward_ms": 1.0,
                "input_grad_ms": 2.0,
                "weight_grad_ms": 3.0,
                "rows": [
                    {
                        "shape": [8, 4, 3, 1],
                        "forward_ms": 1.0,
                        "input_grad_ms": 2.0,
                        "weight_grad_ms": 3.0,
                    }
                ],
            },
        },
    }
    md = cl.to_markdown(doc)
    for needle in (
        "| torchvision | 21.0 | 35.0 |",
        "| Mul | 0 | 1 |",
        "**False**",
        "fused backward 11.0",
        "(8, 4, 3, 1) | 1.0",
    ):
        assert needle in md
