"""Experiment tracking: ``effnet train --logger csv,tensorboard,mlflow`` (any combination).

Each logger is a :class:`~effnet.training.callbacks.Callback` and records the same things:

- per step: the batch loss and the learning rate;
- per epoch: every metric of the run's metrics row (val top-1/top-5/loss, train loss,
  images per second, image size, EMA top-1 where EMA is on);
- once: the config as hyperparameters, and at the end the training curves and the final
  validation confusion matrix as images (``curves.png``, ``confusion.png`` in the run folder).

``csv`` writes ``steps.csv`` in the run folder (epochs are in ``metrics.csv`` already).
``tensorboard`` writes event files to ``RUN/tensorboard`` through ``torch.utils.tensorboard``
(extra: ``pip install "effnet[tensorboard]"``). ``mlflow`` logs one MLflow run per effnet run, to
``$MLFLOW_TRACKING_URI`` when set and otherwise to a local ``file:`` store in ``RUN/mlruns``
(extra: ``pip install "effnet[mlflow]"``). A resumed run continues the same TensorBoard
history (steps after the checkpoint are purged) and the same MLflow run.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from effnet.training.callbacks import Callback
from effnet.training.evaluation import plot_confusion
from effnet.training.report import CURVES_PNG, atomic_write

STEPS_CSV = "steps.csv"
CONFUSION_PNG = "confusion.png"
MLFLOW_RUN = "mlflow_run.json"
EPOCH_KEYS = (
    "train_loss",
    "train_images_per_s",
    "val_loss",
    "val_top1",
    "val_top5",
    "val_top1_ema",
    "val_top5_ema",
    "image_size",
    "lr",
)


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"--logger {extra} needs the {module.split('.')[0]} package; "
            f'install it with: pip install "effnet[{extra}]"'
        ) from None


def make_loggers(names: list[str] | tuple[str, ...]) -> list[Callback]:
    """Loggers for the given names (built first, so a missing package fails before training)."""
    makers = {"csv": CSVLogger, "tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}
    return [makers[n]() for n in names]


def flat_params(config: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """The config as scalar hyperparameters (mappings and pairs as JSON text, None as 'none')."""
    out: dict[str, str | int | float | bool] = {}
    for k, v in config.items():
        if isinstance(v, bool | int | float | str):
            out[k] = v
        elif v is None:
            out[k] = "none"
        else:
            out[k] = json.dumps(v, sort_keys=True)
    return out


class _FileLogger(Callback):
    """What every logger shares: the run folder, the class names, the final confusion matrix."""

    def on_train_start(self, run_dir, config, model, start_step) -> None:
        self.run_dir = Path(run_dir)
        self.class_names = list(getattr(model, "class_names", None) or [])
        self.confusion = None

    def on_epoch_end(self, epoch, metrics, confusion) -> None:
        self.confusion = confusion

    def images(self) -> dict[str, Path]:
        """curves.png (written by the run) and confusion.png of the last epoch's evaluation."""
        found = {}
        if self.confusion is not None:
            names = self.class_names or [str(i) for i in range(len(self.confusion))]
            path = self.run_dir / CONFUSION_PNG
            if not path.exists():  # several loggers share one file
                plot_confusion(self.confusion, names, path)
            found["confusion"] = path
        if (self.run_dir / CURVES_PNG).exists():
            found["curves"] = self.run_dir / CURVES_PNG
        return found


class CSVLogger(_FileLogger):
    """``steps.csv``: step, epoch, loss, lr, one row per optimizer step, flushed every row."""

    def on_train_start(self, run_dir, config, model, start_step) -> None:
        super().on_train_start(run_dir, config, model, start_step)
        path = self.run_dir / STEPS_CSV
        kept = []
        if start_step and path.exists():  # a resume repeats the steps after its checkpoint
            with path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        fields = ["step", "epoch", "loss", "lr"]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(kept)

        atomic_write(path, write)
        self._file = path.open("a", newline="")
        self._writer = csv.writer(self._file)

    def on_step(self, step, epoch, loss, lr) -> None:
        self._writer.writerow([step, epoch, f"{loss:.6g}", f"{lr:.6g}"])
        self._file.flush()

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None


class TensorBoardLogger(_FileLogger):
    """Event files in ``RUN/tensorboard``: scalars train/loss, train/lr per step, epoch/* per
    epoch, the config as text and as hparams, and the curves and confusion matrix as images."""

    def __init__(self) -> None:
        _require("tensorboard", "tensorboard")
        self._tb = importlib.import_module("torch.utils.tensorboard")
        self.writer = None

    def on_train_start(self, run_dir, config, model, start_step) -> None:
        super().on_train_start(run_dir, config, model, start_step)
        self.config = config
        self.writer = self._tb.SummaryWriter(
            log_dir=str(self.run_dir / "tensorboard"),
            purge_step=start_step + 1 if start_step else None,
        )
        text = "\n".join(f"    {k}: {v}" for k, v in flat_params(config).items())
        self.writer.add_text("config", text, global_step=start_step)

    def on_step(self, step, epoch, loss, lr) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def on_epoch_end(self, epoch, metrics, confusion) -> None:
        super().on_epoch_end(epoch, metrics, confusion)
        for k in EPOCH_KEYS:
            if metrics.get(k) is not None:
                self.writer.add_scalar(f"epoch/{k}", metrics[k], epoch)
        self.writer.flush()

    def on_train_end(self, summary) -> None:
        for tag, path in self.images().items():
            img = np.asarray(Image.open(path).convert("RGB"))
            self.writer.add_image(tag, img, summary["epochs"], dataformats="HWC")
        final = {
            "hparam/best_top1": summary["best_top1"],
            "hparam/final_top1": summary["final_top1"],
        }
        self.writer.add_hparams(flat_params(self.config), final, run_name="hparams")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowLogger(_FileLogger):
    """One MLflow run per effnet run (its id kept in ``RUN/mlflow_run.json`` for resumes):
    params = the config, metrics train_loss/lr per step and every epoch metric per epoch,
    artifacts = curves.png, confusion.png, summary.json and config.yaml."""

    def __init__(self) -> None:
        _require("mlflow", "mlflow")
        self._mlflow = importlib.import_module("mlflow")
        self._entities = importlib.import_module("mlflow.entities")
        self.client = None
        self.pending: list = []

    def _uri(self) -> str:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (self.run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store behind an opt-in; a local store is what users asked
            # for here (no server, no database), so opt in for effnet's own default.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return uri

    def on_train_start(self, run_dir, config, model, start_step) -> None:
        super().on_train_start(run_dir, config, model, start_step)
        uri = self._uri()
        self.client = self._mlflow.MlflowClient(tracking_uri=uri)
        record = self.run_dir / MLFLOW_RUN
        saved = json.loads(record.read_text()) if record.exists() else {}
        if start_step and saved.get("tracking_uri") == uri:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name("effnet")
        exp_id = exp.experiment_id if exp else self.client.create_experiment("effnet")
        run = self.client.create_run(exp_id, run_name=self.run_dir.name)
        self.run_id = run.info.run_id
        text = json.dumps({"tracking_uri": uri, "run_id": self.run_id})
        atomic_write(record, lambda tmp: Path(tmp).write_text(text))
        params = [self._entities.Param(k, str(v)[:500]) for k, v in flat_params(config).items()]
        self.client.log_batch(self.run_id, params=params)

    def _metric(self, key: str, value: float, step: int) -> None:
        ms = int(time.time() * 1000)
        self.pending.append(self._entities.Metric(key, float(value), ms, step))

    def _flush(self) -> None:
        if self.pending:
            for i in range(0, len(self.pending), 900):  # MLflow's batch limit is 1000
                self.client.log_batch(self.run_id, metrics=self.pending[i : i + 900])
            self.pending = []

    def on_step(self, step, epoch, loss, lr) -> None:
        self._metric("train_step_loss", loss, step)
        self._metric("train_step_lr", lr, step)
        if len(self.pending) >= 200:
            self._flush()

    def on_epoch_end(self, epoch, metrics, confusion) -> None:
        super().on_epoch_end(epoch, metrics, confusion)
        for k in EPOCH_KEYS:
            if metrics.get(k) is not None:
                self._metric(k, metrics[k], epoch)
        self._flush()

    def on_train_end(self, summary) -> None:
        self._flush()
        for path in self.images().values():
            self.client.log_artifact(self.run_id, str(path))
        for name in ("summary.json", "config.yaml"):
            if (self.run_dir / name).exists():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.client = None

    def close(self) -> None:
        if self.client is not None:  # stopped early (error or signal): resumable, say so
            self._flush()
            self.client.set_terminated(self.run_id, "KILLED")
            self.client = None
