"""End-to-end runs at a tiny budget: run folder contents, exact resume after SIGKILL, signals,
NaN loss, the run lock, bad --resume targets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import effnet
from effnet.training import train
from effnet.training.checkpoint import CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
# A quarter-width, quarter-depth B0 on 256 digits at 32 px: 8 steps per epoch, seconds per epoch.
TINY = {
    "model_kwargs": {"width_mult": 0.25, "depth_mult": 0.25, "bn_momentum": 0.1},
    "image_size": 32,
    "max_train_samples": 256,
    "max_val_samples": 120,
    "batch_size": 32,
    "epochs": 2,
    "threads": 1,
    "progress": "none",
}
COMPARED = ("train_loss", "val_loss", "val_top1", "val_top5", "lr")


def cli(*args, env_extra=None, cwd=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "effnet", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


def tiny_flags(out, epochs=2, extra=()):
    return [
        "train",
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--image-size",
        "32",
        "--batch-size",
        "32",
        "--max-train-samples",
        "256",
        "--threads",
        "1",
        "--set",
        "max_val_samples=120",
        "--set",
        "model_kwargs={width_mult: 0.25, depth_mult: 0.25, bn_momentum: 0.1}",
        "--progress",
        "log",
        *extra,
    ]


def metrics(run_dir):
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in COMPARED if k in r} for r in rows]


def test_default_run_smoke(tmp_path):
    """The default config (digits) at a tiny budget writes a complete run folder."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        s = effnet.train(**{**TINY, "out": str(tmp_path / "run"), "ema_decay": 0.9})
        # threads=1 was for the run: the caller's count is back (a leaked count changed the
        # rounding of a later INT8 export in the same process)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "config.json",
        "metrics.jsonl",
        "metrics.csv",
        "curves.png",
        "summary.json",
        "model_best.safetensors",
        "model_last.safetensors",
        CHECKPOINT,
    ):
        assert (run / name).is_file(), name
    assert s["epochs"] == 2 and s["classes"] == 10 and s["data"] == "digits"
    assert 0 <= s["final_top1"] <= 100 and s["best_top1"] >= s["final_top1"] - 1e-9
    assert s["final_top1_ema"] is not None and s["images_per_s"] > 0
    assert json.loads((run / "summary.json").read_text())["best_top1"] == s["best_top1"]
    assert len(metrics(run)) == 2
    model = effnet.load_model(run)
    assert model.class_names == [str(i) for i in range(10)]
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["ema"] is not None and "rng" in ckpt
    # effnet eval: top-1/top-5, per class, confusion matrix PNG + JSON
    from effnet.cli import main as cli_main

    assert cli_main(["eval", str(run), "--data", "digits", "--out", str(tmp_path / "ev")]) == 0
    res = json.loads(next((tmp_path / "ev").glob("confusion-*.json")).read_text())
    assert res["images"] == 359 and len(res["per_class"]) == 10
    assert sum(map(sum, res["confusion"])) == 359
    diag = sum(res["confusion"][i][i] for i in range(10))
    assert res["top1"] == pytest.approx(100 * diag / 359)
    assert Path(res["confusion_png"]).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="classes"):
        effnet.training.evaluate_checkpoint(run, str(make_two_class_folder(tmp_path)))
    # a second run into the same folder is refused (continue it with --resume instead)
    with pytest.raises(ValueError, match="already holds a run"):
        train(**{**TINY, "out": str(run)})


def make_two_class_folder(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "two" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 80, 0, 0)).save(tmp_path / "two" / c / f"{i}.png")
    return tmp_path / "two"


def test_sigkill_at_epoch_end_then_resume_equals_uninterrupted(tmp_path):
    """Fast variant: kill -9 right after the epoch-1 checkpoint; resume; identical metrics."""
    ref = train(**{**TINY, "out": str(tmp_path / "ref")})
    cut = tmp_path / "cut"
    r = cli(*tiny_flags(cut, 2), env_extra={"EFFNET_FAULT": "epoch_end:1"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    resumed = train(resume=cut)
    assert metrics(cut)[1] == pytest.approx(metrics(tmp_path / "ref")[1], rel=1e-5, abs=1e-6)
    assert resumed["final_top1"] == pytest.approx(ref["final_top1"])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    """Kill -9 (EFFNET_FAULT) in epoch 2 between step checkpoints; resume; identical metrics."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    extra = ["--checkpoint-every", "3", "--ema-decay", "0.9"]
    r = cli(*tiny_flags(ref, 3, extra))
    assert r.returncode == 0, r.stderr
    r = cli(*tiny_flags(cut, 3, extra), env_extra={"EFFNET_FAULT": "optimizer_step:12"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert len(metrics(cut)) == 1  # killed during epoch 2
    ck = torch.load(cut / CHECKPOINT, weights_only=True)
    assert (ck["epoch"], ck["batch"]) == (1, 1)  # step 9 = epoch 2, batch 1
    r = cli("train", "--resume", str(cut), "--progress", "log")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    a, b = metrics(ref), metrics(cut)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        for k in COMPARED:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (k, ra, rb)
    assert not list(cut.glob(".*.tmp"))


def test_kill_during_checkpoint_write_leaves_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    r = cli(*tiny_flags(run, 2), env_extra={"EFFNET_FAULT": "checkpoint_write:2"})
    assert r.returncode == -signal.SIGKILL
    ck = torch.load(run / CHECKPOINT, weights_only=True)  # the epoch-1 checkpoint, intact
    assert ck["epoch"] == 1
    assert list(run.glob(".checkpoint_last.pt.*.tmp"))  # the unfinished write, never renamed
    r = cli("train", "--resume", str(run))
    assert r.returncode == 0, r.stderr
    assert not list(run.glob(".*.tmp"))
    assert len(metrics(run)) == 2


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "effnet", *tiny_flags(run, 30)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 143, err
    assert "SIGTERM received" in err and "--resume" in err
    assert "Traceback" not in err
    ck = torch.load(run / CHECKPOINT, weights_only=True)
    assert 1 <= ck["epoch"] < 30


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path, monkeypatch):
    from effnet.training import builders

    real = builders.criterion_for
    calls = {"n": 0}

    def poisoned(cfg):
        loss = real(cfg)

        def fn(logits, target):
            calls["n"] += 1
            out = loss(logits, target)
            return out * float("nan") if calls["n"] > 10 else out  # NaN in epoch 2

        return fn

    monkeypatch.setattr(builders, "criterion_for", poisoned)
    run = tmp_path / "run"
    with pytest.raises(ValueError) as e:
        train(**{**TINY, "out": str(run), "epochs": 3})
    msg = str(e.value)
    assert "loss became nan at epoch 2, step 3" in msg and "last good checkpoint" in msg
    assert torch.load(run / CHECKPOINT, weights_only=True)["epoch"] == 1


def test_resume_rejects_wrong_targets(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(resume=tmp_path)
    (tmp_path / CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        train(resume=tmp_path)
    torch.save({"model": {}, "build_args": {}}, tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match="not an effnet training checkpoint"):
        train(resume=tmp_path)


def test_second_process_on_same_run_folder_is_refused(tmp_path):
    from effnet.training.lock import RunLock

    run = tmp_path / "run"
    with RunLock(run):
        code = (
            "import sys; from effnet.training.lock import RunLock\n"
            f"try:\n RunLock({str(run)!r}).acquire()\n"
            "except ValueError as e:\n print(e); sys.exit(3)\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
        assert r.returncode == 3 and f"pid {os.getpid()}" in r.stdout
    RunLock(run).acquire().release()  # released (a dead owner's lock is free too)


def test_progressive_run_grows_size_and_regularisation_per_stage(tmp_path, capsys):
    train(
        **{
            **TINY,
            "out": str(tmp_path / "p"),
            "epochs": 3,
            "progressive": True,
            "stages": 3,
            "augment": "randaugment",
            "prog_image_size": [32, 48],
            "prog_magnitude": [2, 10],
            "prog_mixup": [0.0, 0.2],
            "prog_dropout": [0.1, 0.3],
        }
    )
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("stage ")]
    assert len(lines) == 3
    assert "image size 32, RandAugment magnitude 2.0, mixup 0.0, dropout 0.1" in lines[0]
    assert "image size 40, RandAugment magnitude 6.0, mixup 0.1, dropout 0.2" in lines[1]
    assert "image size 48, RandAugment magnitude 10.0, mixup 0.2, dropout 0.3" in lines[2]
    rows = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert [r["image_size"] for r in rows] == [32, 40, 48]
    assert [r["stage"] for r in rows] == [1, 2, 3]


def test_recipe_options_run_together(tmp_path):
    """The paper-style recipe switches all work in one short run (bf16 autocast on CPU)."""
    s = train(
        **{
            **TINY,
            "out": str(tmp_path / "r"),
            "epochs": 1,
            "max_train_samples": 96,
            "optimizer": "rmsprop",
            "lr": 0.016,
            "lr_per_256": True,
            "schedule": "exponential",
            "warmup_epochs": 0.5,
            "ema_decay": 0.99,
            "amp": "bf16",
            "channels_last": True,
            "grad_checkpointing": True,
            "activation_recompute": True,
            "clip_grad": 1.0,
            "augment": "randaugment",
            "mixup_alpha": 0.2,
            "cutmix_alpha": 1.0,
            "label_smoothing": 0.1,
            "workers": 1,
            "drop_rate": 0.3,
        }
    )
    assert s["epochs"] == 1 and s["final_top1_ema"] is not None
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["optimizer"] == "rmsprop" and cfg["amp"] == "bf16"
    assert cfg["activation_recompute"] is True
