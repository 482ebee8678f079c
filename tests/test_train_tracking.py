"""Experiment tracking, callbacks and Python datasets in training (issue 15, section 3).

The loggers are checked by reading what they wrote back with the tools' own readers
(TensorBoard's EventAccumulator, MLflow's client), not by mocking them.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import effnet
import effnet.training as T
from effnet.cli import main as cli_main
from effnet.data.datasets import stratified_pick
from effnet.training import Callback

TINY = dict(
    epochs=2,
    max_train_samples=64,
    max_val_samples=32,
    batch_size=16,
    image_size=32,
    model_kwargs={"width_mult": 0.25, "depth_mult": 0.25},
    progress="none",
)


def _events(run_dir):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ea = ea_mod.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    return ea


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One tiny digits run with all three loggers, through the CLI."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    argv = ["train", "--logger", "csv,tensorboard,mlflow", "--out", str(run_dir)]
    for k, v in TINY.items():
        if k == "model_kwargs":
            argv += ["--width-mult", "0.25", "--depth-mult", "0.25"]
        else:
            argv += ["--" + k.replace("_", "-"), str(v)]
    assert cli_main(argv) == 0
    return run_dir


def test_csv_logger_writes_every_step(logged_run):
    rows = list(csv.DictReader((logged_run / "steps.csv").open()))
    steps = 2 * (64 // 16)
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    assert {int(r["epoch"]) for r in rows} == {1, 2}
    assert all(np.isfinite(float(r["loss"])) and float(r["lr"]) >= 0 for r in rows)


def test_tensorboard_event_files_hold_steps_epochs_config_and_images(logged_run):
    ea = _events(logged_run)
    tags = ea.Tags()
    loss = ea.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 9))
    steps_csv = list(csv.DictReader((logged_run / "steps.csv").open()))
    assert [e.value for e in loss] == pytest.approx([float(r["loss"]) for r in steps_csv], rel=1e-4)
    assert len(ea.Scalars("train/lr")) == 8
    top1 = ea.Scalars("epoch/val_top1")
    assert [(e.step, e.value) for e in top1] == [
        (r["epoch"], pytest.approx(r["val_top1"])) for r in _metrics(logged_run)
    ]
    assert "epoch/train_images_per_s" in tags["scalars"]
    assert {"confusion", "curves"} <= set(tags["images"])
    assert "config/text_summary" in tags["tensors"]
    hparams = logged_run / "tensorboard" / "hparams"
    assert any(hparams.rglob("events.out.tfevents.*"))


def test_mlflow_run_holds_params_metrics_and_artifacts(logged_run):
    mlflow = pytest.importorskip("mlflow")
    record = json.loads((logged_run / "mlflow_run.json").read_text())
    assert record["tracking_uri"].startswith("file:")
    client = mlflow.MlflowClient(record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "efficientnet_b0"
    assert run.data.params["batch_size"] == "16"
    history = client.get_metric_history(run.info.run_id, "train_step_loss")
    assert sorted(m.step for m in history) == list(range(1, 9))
    val = sorted(client.get_metric_history(run.info.run_id, "val_top1"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in val] == [
        (r["epoch"], pytest.approx(r["val_top1"])) for r in _metrics(logged_run)
    ]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "confusion.png", "summary.json", "config.yaml"} <= names


def test_resume_continues_the_same_histories(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    run_dir = tmp_path / "run"
    T.train(out=str(run_dir), loggers=["csv", "tensorboard", "mlflow"], **{**TINY, "epochs": 1})
    first = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    T.train(resume=run_dir, epochs=2)
    rows = list(csv.DictReader((run_dir / "steps.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert [e.step for e in _events(run_dir).Scalars("train/loss")] == list(range(1, 9))
    record = json.loads((run_dir / "mlflow_run.json").read_text())
    assert record["run_id"] == first
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.MlflowClient(record["tracking_uri"])
    val = client.get_metric_history(first, "val_top1")
    assert sorted(m.step for m in val) == [1, 2]
    assert client.get_run(first).info.status == "FINISHED"


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_start(self, run_dir, config, model, start_step):
        self.calls.append(("start", config["model"], start_step))

    def on_step(self, step, epoch, loss, lr):
        self.calls.append(("step", step, epoch))

    def on_epoch_end(self, epoch, metrics, confusion):
        self.calls.append(("epoch", epoch, metrics["val_top1"], int(confusion.sum())))

    def on_train_end(self, summary):
        self.calls.append(("end", summary["epochs"]))

    def close(self):
        self.calls.append(("close",))


def test_callbacks_see_every_step_epoch_and_the_end(tmp_path):
    rec = Recorder()
    summary = T.train(out=str(tmp_path / "r"), callbacks=[rec], **TINY)
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["start"] + ["step"] * 4 + ["epoch"] + ["step"] * 4 + ["epoch", "end", "close"]
    assert [c[1] for c in rec.calls if c[0] == "step"] == list(range(1, 9))
    epochs = [c for c in rec.calls if c[0] == "epoch"]
    assert [e[2] for e in epochs] == [r["val_top1"] for r in _metrics(tmp_path / "r")]
    assert all(e[3] == 32 for e in epochs)  # the confusion matrix counts every val image
    assert rec.calls[-2] == ("end", summary["epochs"])


def test_a_callback_that_is_no_callback_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Callback instances"):
        T.train(out=str(tmp_path / "r"), callbacks=[print], **TINY)
    assert not (tmp_path / "r").exists()


def test_missing_logger_package_is_one_line_before_any_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ValueError, match=r'pip install "effnet\[mlflow\]"'):
        T.train(out=str(tmp_path / "r"), loggers=["mlflow"], **TINY)
    assert not (tmp_path / "r").exists()


def test_unknown_logger_is_refused():
    with pytest.raises(ValueError, match="loggers must be among csv, tensorboard, mlflow"):
        T.resolve_config(None, {"loggers": "csv,wandb"})


# ------------------------------------------------------------------ Python datasets


class Shapes(Dataset):
    """Squares vs. circles as PIL images (RGB), grayscale arrays or uint8 tensors."""

    classes: ClassVar[list[str]] = ["square", "circle"]

    def __init__(self, n=48, kind="pil", seed=0):
        self.n, self.kind = n, kind
        self.targets = [i % 2 for i in range(n)]
        self.rng = np.random.default_rng(seed)
        self.noise = self.rng.integers(0, 40, (n, 36, 36), dtype=np.uint8)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        yy, xx = np.mgrid[:36, :36]
        r = 6 + i % 5
        if self.targets[i] == 0:
            mask = (abs(yy - 18) < r) & (abs(xx - 18) < r)
        else:
            mask = (yy - 18) ** 2 + (xx - 18) ** 2 < r * r
        img = (mask * 200 + self.noise[i]).astype(np.uint8)
        if self.kind == "gray":
            return img, self.targets[i]
        if self.kind == "tensor":
            return torch.from_numpy(img)[None], self.targets[i]
        return Image.fromarray(img).convert("RGB"), self.targets[i]


@pytest.mark.parametrize("kind", ["pil", "gray", "tensor"])
def test_train_on_a_python_dataset(tmp_path, kind):
    summary = T.train(dataset=Shapes(kind=kind), out=str(tmp_path / "r"), **TINY)
    assert summary["data"] == "python:Shapes"
    assert summary["classes"] == 2
    model = effnet.load_model(tmp_path / "r")
    assert model.class_names == ["square", "circle"]


def test_train_val_pair_and_class_names(tmp_path):
    tr, va = Shapes(40, seed=1), Shapes(12, seed=2)
    summary = T.train(dataset=(tr, va), class_names=["sq", "ci"], out=str(tmp_path / "r"),
                      **{**TINY, "max_train_samples": 0, "max_val_samples": 0})
    info = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert info["classes"] == 2 and summary["data"] == "python:Shapes"
    rec = Recorder()
    T.train(dataset=(tr, va), out=str(tmp_path / "r2"), callbacks=[rec],
            **{**TINY, "max_train_samples": 0, "max_val_samples": 0, "epochs": 1})
    assert [c[3] for c in rec.calls if c[0] == "epoch"] == [12]  # every val item scored


def test_resuming_a_python_dataset_run_needs_the_dataset(tmp_path):
    T.train(dataset=Shapes(), out=str(tmp_path / "r"), **{**TINY, "epochs": 1})
    with pytest.raises(ValueError, match="pass the same dataset again"):
        T.train(resume=tmp_path / "r", epochs=2)
    summary = T.train(resume=tmp_path / "r", epochs=2, dataset=Shapes())
    assert summary["epochs"] == 2


def test_bad_dataset_items_are_one_line_errors(tmp_path):
    class Bad(Shapes):
        def __getitem__(self, i):
            return "not an image", 0

    class NoPairs(Shapes):
        def __getitem__(self, i):
            return super().__getitem__(i)[0]

    with pytest.raises(ValueError, match="image is a str"):
        T.train(dataset=Bad(), out=str(tmp_path / "a"), **TINY)
    with pytest.raises(ValueError, match=r"needs \(image, label\) pairs"):
        T.train(dataset=NoPairs(), out=str(tmp_path / "b"), **TINY)
    with pytest.raises(ValueError, match="empty"):
        T.train(dataset=Shapes(0), out=str(tmp_path / "c"), **TINY)


def test_max_train_samples_is_exact():
    targets = np.random.default_rng(0).integers(0, 10, 1437).tolist()
    for n in (7, 10, 32, 64, 100):
        picked = stratified_pick(targets, n / len(targets), 0, at_least_one=True, total=n)
        assert len(picked) == max(n, 10) and len(set(picked)) == len(picked)
