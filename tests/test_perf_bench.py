"""The benchmark engine and `effnet benchmark`: structure, ratios, peers, one-line errors.

No timing thresholds: only that every candidate is measured, ratios are oriented as documented
and memory is reported. Tiny inputs keep it fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import effnet
import effnet.fused as fused
from effnet.benchmark.engine import (
    Candidate,
    format_report,
    measure,
    paired_ratios,
    ratios,
    run_benchmark,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "effnet", "benchmark", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=600,
        check=False,
    )


def test_ratio_orientation():
    rows = {
        "effnet": {
            "latency_ms": {"median": 10.0},
            "infer_img_s": {"median": 30.0},
            "train_peak_mib": {"median": 50.0},
        },
        "torchvision": {
            "latency_ms": {"median": 20.0},
            "infer_img_s": {"median": 10.0},
            "train_peak_mib": {"median": 100.0},
        },
    }
    r = ratios(rows)
    assert r["latency_ms"]["effnet / torchvision"] == 2.0  # half the time: 2x faster
    assert r["infer_img_s"]["effnet / torchvision"] == 3.0
    assert r["train_peak_mib"]["effnet / torchvision"] == 0.5  # memory stays effnet / peer


def test_paired_ratios_cancel_drift_and_keep_orientation():
    # The machine halves its speed between two repetitions; each pair still reads 2x.
    rows = {
        "effnet": {
            "infer_img_s": {"median": 15.0, "values": [20.0, 10.0]},
            "latency_ms": {"median": 15.0, "values": [10.0, 20.0]},
            "train_peak_mib": {"median": 50.0, "values": [50.0, 50.0]},
        },
        "torchvision": {
            "infer_img_s": {"median": 7.5, "values": [10.0, 5.0]},
            "latency_ms": {"median": 30.0, "values": [20.0, 40.0]},
            "train_peak_mib": {"median": 100.0, "values": [100.0, 100.0]},
        },
        "timm": {"infer_img_s": {"median": 10.0, "values": [10.0]}},  # one repetition: no pairs
    }
    p = paired_ratios(rows)
    assert p["infer_img_s"]["effnet / torchvision"] == {"median": 2.0, "min": 2.0, "max": 2.0}
    assert p["latency_ms"]["effnet / torchvision"]["median"] == 2.0  # half the time: 2x
    assert "train_peak_mib" not in p
    assert "effnet / timm" not in p["infer_img_s"]
    rows["torchvision"]["infer_img_s"]["values"] = [5.0, 10.0]  # drift against effnet
    q = paired_ratios(rows)["infer_img_s"]["effnet / torchvision"]
    assert (q["min"], q["max"]) == (1.0, 4.0)


def test_rounds_alternate_candidate_order():
    calls: list[str] = []

    def cand(name: str) -> Candidate:
        return Candidate(name, infer=lambda x: calls.append(name) if x.shape[0] > 1 else None)

    rows = measure(
        [cand("a"), cand("b"), cand("c")],
        "efficientnet_b0",
        8,
        2,
        ("infer",),
        1,
        torch.device("cpu"),
        4,
        0,
        False,
        lambda msg: None,
    )
    assert calls == list("abccbaabccba")
    assert all(rows[n]["infer_img_s"]["n"] == 4 for n in "abc")


def test_run_benchmark_without_memory_pass_is_quick_and_complete():
    pytest.importorskip("torchvision")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    res = run_benchmark(
        "efficientnet_lite0",
        image_size=32,
        batch_size=2,
        mode="train",
        threads=1,
        against=("torchvision", "timm"),
        reps=1,
        warmup=0,
        memory=False,
    )
    assert set(res["results"]) == {"effnet", "timm"}  # torchvision has no Lite
    assert res["skipped"] == ["torchvision: has no efficientnet_lite0"]
    assert res["results"]["effnet"]["train_img_s"]["n"] == 1
    assert "train_peak_mib" not in res["results"]["effnet"]
    # it set one thread and seeded for itself; the caller's threads and generator are untouched
    threads = torch.get_num_threads()
    torch.set_num_threads(before)
    assert threads == 2 and torch.equal(torch.rand(3), expected)


@pytest.mark.slow
def test_run_benchmark_all_candidates_and_report():
    pytest.importorskip("torchvision")
    res = run_benchmark(
        "efficientnet_b0",
        image_size=32,
        batch_size=2,
        mode="both",
        threads=1,
        against=("torchvision",),
        reps=2,
        warmup=0,
    )
    rows = res["results"]
    assert set(rows) == {"effnet", "effnet lean", "effnet optimized", "torchvision"}
    for name in ("effnet", "torchvision"):
        for metric in ("latency_ms", "infer_img_s", "train_img_s"):
            s = rows[name][metric]
            assert s["n"] == 2 and 0 < s["min"] <= s["median"] <= s["max"]
        assert rows[name]["train_peak_mib"]["median"] > 0
    assert "train_img_s" not in rows["effnet optimized"]  # inference-only path
    assert "infer_img_s" not in rows["effnet lean"]  # training-only path
    # Activation recompute stores less than the default (memory measured in fresh processes).
    lean, default = rows["effnet lean"]["train_peak_mib"], rows["effnet"]["train_peak_mib"]
    assert lean["median"] < default["median"]
    assert set(res["ratios"]["train_img_s"]) == {
        "effnet / torchvision",
        "effnet lean / torchvision",
    }
    assert res["machine"]["torch_threads"] == 1
    text = format_report(res, verbose=True)
    assert "effnet optimized / torchvision" in text and "training peak mem" in text
    short = format_report(res)
    assert "effnet optimized / torchvision" not in short and "vs torchvision" in short
    assert max(len(line) for line in short.splitlines()) <= 100


def test_recipes_replace_stored_activations_in_training(monkeypatch):
    counted = {"recipes": 0}
    pack = fused._pack

    def counting(t):
        out = pack(t)
        counted["recipes"] += isinstance(out, fused._Recompute)
        return out

    monkeypatch.setattr(fused, "_pack", counting)
    model = effnet.accelerate(effnet.create_model("efficientnet_lite0")).train()
    model.set_activation_recompute(True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert counted["recipes"] == 0  # Lite uses ReLU6: nothing to rebuild
    model = effnet.accelerate(effnet.create_model("efficientnet_b0")).train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert counted["recipes"] == 0  # off by default: speed first
    model.set_activation_recompute(True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert counted["recipes"] >= 16  # at least one per MBConv block


@pytest.mark.slow
def test_cli_json_with_onnxruntime_peer():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torchvision")
    proc = _cli(
        "efficientnet_b0",
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--reps",
        "1",
        "--warmup",
        "1",
        "--mode",
        "infer",
        "--threads",
        "1",
        "--against",
        "torchvision,onnxruntime",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert {"effnet onnxruntime", "onnxruntime (torchvision export)"} <= set(res["results"])
    assert "effnet onnxruntime / onnxruntime (torchvision export)" in res["ratios"]["infer_img_s"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["efficientnet_b0", "--against", "tensorflow"], "unknown peer 'tensorflow'"),
        (["efficientnet_bo"], "did you mean efficientnet_b0"),
        (["efficientnet_b0", "--batch-size", "0"], "batch_size must be an integer >= 1"),
        (["efficientnet_b0", "--mode", "fast"], "invalid choice"),
    ],
)
def test_cli_errors_are_one_line(args, needle):
    proc = _cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
