"""torchrun with 2 CPU processes (gloo): completes, and matches a 1-process run at the same
global batch within noise."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLAGS = [
    "--epochs",
    "4",
    "--image-size",
    "32",
    "--batch-size",
    "32",
    "--max-train-samples",
    "384",
    "--threads",
    "1",
    "--lr",
    "0.01",
    "--warmup-epochs",
    "0.5",
    "--set",
    "model_kwargs={width_mult: 0.25, depth_mult: 0.25, bn_momentum: 0.1}",
    "--progress",
    "log",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv, out):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [*argv, "train", "--out", str(out), *FLAGS],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path):
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "effnet",
    ]
    r2, two = _run(torchrun, tmp_path / "two")
    _, one = _run([sys.executable, "-m", "effnet"], tmp_path / "one")
    # rank 0 alone reports and writes the run folder
    assert r2.stdout.count("done:") == 1
    assert r2.stderr.count("epoch 4/4") == 1
    assert one["epochs"] == two["epochs"] == 4
    assert one["train_images_seen"] == two["train_images_seen"]
    # same data order and global batch; only per-process BatchNorm statistics differ
    assert one["final_top1"] > 30 and two["final_top1"] > 30  # chance: 10%
    assert abs(one["final_top1"] - two["final_top1"]) <= 10, (one, two)
    print(f"1 process: {one['final_top1']:.2f}%  2 processes: {two['final_top1']:.2f}%")
