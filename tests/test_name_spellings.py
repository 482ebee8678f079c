"""Model-name spellings (EfficientNet-B0, efficientnet-lite0) reach every entry point as the
registered name: the training config and banner, and the benchmark's peers."""

from __future__ import annotations

from effnet.benchmark.engine import run_benchmark
from effnet.training.config import resolve_config


def test_training_config_records_the_registered_name():
    assert resolve_config(None, {"model": "EfficientNet-Lite0"}).model == "efficientnet_lite0"
    assert resolve_config(None, {"model": "efficientnet-b3"}).model == "efficientnet_b3"


def test_benchmark_finds_the_peer_for_any_spelling():
    res = run_benchmark("EfficientNet-B0", image_size=32, batch_size=1, mode="infer",
                        against=("torchvision",), reps=1, warmup=0, memory=False)
    assert res["model"] == "efficientnet_b0"
    assert "torchvision" in res["results"] and not res["skipped"]
