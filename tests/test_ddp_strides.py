"""DDP and parameter layout: every gradient comes out in its parameter's strides (DDP's gradient
buckets take those strides when it wraps the model), so torchrun prints no "Grad strides do not
match bucket view strides" warning; and a frozen backbone thaws under DDP.

Before effnet.accelerate, the network ran channels-last inside on the CPU while its weights
stayed contiguous: depthwise weight gradients came out as, e.g., [336, 1, 5, 5] with strides
(25, 1, 5, 1) against the bucket's (25, 25, 5, 1), and every rank warned.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from effnet.training import trainer
from effnet.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
WARNING = "Grad strides do not match bucket view strides"
TINY = "{width_mult: 0.25, depth_mult: 0.25}"
# Flags an older checkout accepts too (for checking that the warning test fails there).
FLAGS = [
    *("--epochs", "1", "--image-size", "32", "--batch-size", "32", "--threads", "1"),
    *("--max-train-samples", "64", "--val-fraction", "0.02", "--progress", "none"),
    *("--set", f"model_kwargs={TINY}"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    argv += ["--master_port", str(_free_port()), "-m", "effnet", "train", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("model", ["efficientnet_b0", "efficientnetv2_b0", "efficientnet_lite0"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_trained_model_grads_have_their_parameters_strides(model, channels_last):
    cfg = TrainConfig(
        model=model,
        model_kwargs={"width_mult": 0.25, "depth_mult": 0.25},
        channels_last=channels_last,
        drop_path_rate=0.0,
    )
    data = SimpleNamespace(num_classes=10, class_names=[str(i) for i in range(10)])
    net = trainer.build_model(cfg, data, torch.device("cpu"))
    net.train()
    x = torch.randn(4, 3, 32, 32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.nn.functional.cross_entropy(net(x), torch.arange(4)).backward()
    # On the CPU the weights are channels-last either way (the layout the network runs in) ...
    convs = [p for p in net.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert any(not p.is_contiguous() for p in convs)  # a layout that differs from NCHW
    # ... and each gradient has its parameter's exact strides: what DDP's buckets check.
    bad = [
        (name, tuple(p.shape), p.stride(), p.grad.stride())
        for name, p in net.named_parameters()
        if p.grad is None or p.grad.stride() != p.stride()
    ]
    assert not bad, bad[:5]


def test_torchrun_prints_no_grad_stride_warning(tmp_path):
    r = _torchrun(["--out", str(tmp_path / "run"), *FLAGS])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "epoch 1/1" in r.stdout + r.stderr  # it trained
    assert WARNING not in r.stdout + r.stderr, r.stderr[-3000:]


def test_torchrun_thaws_a_frozen_backbone(tmp_path):
    # A pretrained file of the same tiny net, so that --freeze-epochs is allowed.
    from effnet.api import create_model
    from effnet.weights.serialize import read_model_file, save_model

    start = create_model("efficientnet_b0", num_classes=10, width_mult=0.25, depth_mult=0.25)
    save_model(start, tmp_path / "start.safetensors")
    run = tmp_path / "run"
    args = ["--out", str(run), "--pretrained", str(tmp_path / "start.safetensors")]
    args += ["--freeze-epochs", "1", *FLAGS, "--epochs", "2"]
    r = _torchrun(args)
    # DDP wrapped only the head while the backbone was frozen; epoch 2 needs a new wrap.
    assert r.returncode == 0, r.stderr[-3000:]
    assert WARNING not in r.stdout + r.stderr
    first = start.state_dict()
    last, _ = read_model_file(run / "model_last.safetensors")
    moved = [k for k in first if k.endswith("weight") and not torch.equal(first[k], last[k])]
    assert sum(not k.startswith("classifier.") for k in moved) > 10  # the thawed backbone
