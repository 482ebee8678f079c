"""What a run leaves behind besides checkpoints: metrics (JSONL + CSV), curves PNG, summary.json."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from effnet.env import pyplot
from effnet.weights.serialize import atomic_write

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"
SUMMARY = "summary.json"
SKIPPED = "skipped.txt"  # the unreadable image files a run left out, one a line


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """Rewrite the metric files from the full history (so a resumed run never duplicates rows)."""
    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write(run_dir / METRICS_JSONL, lambda tmp: Path(tmp).write_text(lines))
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(history)

    atomic_write(run_dir / METRICS_CSV, write_csv)


SPIKE = 5.0  # a loss above SPIKE x the median of the run puts the loss panel on a log scale


def best_epoch(history: list[dict]) -> dict:
    """The row with the best validation top-1 (EMA where it is better), first among ties."""

    def top1(r: dict) -> float:
        return max(r["val_top1"], r.get("val_top1_ema", -1.0))

    return max(history, key=top1)


def curves_figure(history: list[dict], title: str = ""):
    """Loss, accuracy and learning rate against epochs, with the best epoch marked.

    A loss spike (some value above ``SPIKE`` x the run's median loss) would flatten a linear axis,
    so the loss panel then uses a log scale and says so.
    """
    plt = pyplot()

    ep = [r["epoch"] for r in history]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4))
    losses = [r[k] for r in history for k in ("train_loss", "val_loss")]
    a.plot(ep, [r["train_loss"] for r in history], label="train loss")
    a.plot(ep, [r["val_loss"] for r in history], label="val loss")
    positive = [v for v in losses if v > 0]
    median = sorted(positive)[len(positive) // 2] if positive else 0.0
    spike = bool(positive) and max(positive) > SPIKE * median and min(losses) > 0
    a.set_yscale("log" if spike else "linear")
    a.set_ylabel("loss (log scale)" if spike else "loss")
    b.plot(ep, [r["val_top1"] for r in history], label="val top-1")
    if "val_top1_ema" in history[0]:
        b.plot(ep, [r["val_top1_ema"] for r in history], label="val top-1 (EMA)")
    best = best_epoch(history)
    best_top1 = max(best["val_top1"], best.get("val_top1_ema", -1.0))
    b.plot([best["epoch"]], [best_top1], "*", color="tab:red", markersize=14, label="best")
    b.annotate(f"best {best_top1:.2f}% (epoch {best['epoch']})", (best["epoch"], best_top1),
               textcoords="offset points", xytext=(0, -18), ha="center", fontsize=8)
    b.set_ylabel("accuracy (%)")
    c.plot(ep, [r["lr"] for r in history], label="learning rate (end of epoch)", color="tab:green")
    c.set_ylabel("learning rate")
    for ax in (a, b, c):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.suptitle(title or "training curves")
    fig.tight_layout()
    return fig


def plot_curves(run_dir: Path, history: list[dict], title: str = "") -> Path | None:
    """``curves.png`` in ``run_dir`` (see ``curves_figure``); None without history."""
    if not history:
        return None
    plt = pyplot()
    fig = curves_figure(history, title)
    out = run_dir / CURVES_PNG
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return out


def progress_mode(setting: str) -> str:
    """``auto`` -> ``bar`` on a terminal (stderr), nothing otherwise; other modes as given."""
    if setting == "auto":
        return "bar" if sys.stderr.isatty() else "none"
    return setting


class Progress:
    """Step progress on stderr. ``bar``: a one-line bar (a terminal); ``log``: a line with the
    throughput and ETA every tenth of the steps or every ``LOG_SECONDS`` (a log file); ``none``:
    nothing (epoch lines are printed anyway). ``mode`` True/False mean bar/none."""

    LOG_SECONDS = 10.0

    def __init__(self, total: int, label: str, mode: str | bool = "bar") -> None:
        self.mode = ("bar" if mode else "none") if isinstance(mode, bool) else mode
        self.total, self.label, self.enabled = total, label, self.mode != "none"
        self.n, self.images, self.t0 = 0, 0, time.perf_counter()
        self._last = self.t0 if self.mode == "log" else 0.0  # the bar draws at once
        self._every = max(1, -(-total // 10))

    def update(self, images: int = 0, steps: int = 1, **values: float) -> None:
        """Count ``steps`` more steps (``images`` more images) and redraw where it is time."""
        crossed = (self.n + steps) // self._every > self.n // self._every  # a tenth is done
        self.n += steps
        self.images += images
        if not self.enabled:
            return
        now = time.perf_counter()
        extra = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        if self.mode == "log":
            if not crossed and self.n < self.total and now - self._last < self.LOG_SECONDS:
                return
            self._last = now
            parts = [self.label, f"step {self.n}/{self.total}", extra, self._rate(now)]
            sys.stderr.write("  ".join(p for p in parts if p) + "\n")
            sys.stderr.flush()
            return
        if now - self._last < 0.2 and self.n < self.total:
            return
        self._last = now
        width = 24
        done = int(width * self.n / max(1, self.total))
        sys.stderr.write(
            f"\r{self.label} [{'#' * done}{'.' * (width - done)}] {self.n}/{self.total}  {extra}"
        )
        sys.stderr.flush()

    def _rate(self, now: float) -> str:
        """Throughput so far and the time left at that pace."""
        seconds = max(1e-9, now - self.t0)
        per_s, unit = (self.images, "img/s") if self.images else (self.n, "it/s")
        left = round((self.total - self.n) * seconds / self.n)
        rate = f"{per_s / seconds:.1f} {unit}"
        return f"{rate}  ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"

    def close(self) -> None:
        if self.mode == "bar":
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
