"""Evaluate a model file or run folder on a dataset: top-1/top-5, per-class accuracy, confusion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from effnet.data.datasets import load_data
from effnet.data.loaders import eval_loader
from effnet.data.transforms import eval_transform
from effnet.training.loop import evaluate
from effnet.weights.serialize import atomic_write, load_model


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str,
    *,
    split: str = "val",
    batch_size: int = 64,
    image_size: int | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    seed: int = 0,
    val_fraction: float = 0.2,
    workers: int = 0,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (model file, training checkpoint or run folder) on ``data``.

    The split is the run's own when ``data`` and ``seed`` match the training run (the seeded
    split is reproducible). With ``out``, writes ``confusion.json`` and ``confusion.png`` there.
    """
    if split not in ("val", "train"):
        raise ValueError(f"split must be 'val' or 'train', got {split!r}")
    model = load_model(checkpoint, device=device)
    ds_all = load_data(data, val_fraction=val_fraction, seed=seed)
    names = list(getattr(model, "class_names", None) or ds_all.class_names)
    if len(ds_all.class_names) != model.get_classifier().out_features:
        raise ValueError(
            f"{checkpoint}: the model has {model.get_classifier().out_features} classes, "
            f"{data} has {len(ds_all.class_names)}"
        )
    if names != ds_all.class_names:
        raise ValueError(
            f"{checkpoint}: class names differ from {data}'s (model: {names[:3]}..., "
            f"data: {ds_all.class_names[:3]}...)"
        )
    ds = ds_all.val if split == "val" else ds_all.train
    ds.transform = eval_transform(model.pretrained_cfg, image_size)
    dev = torch.device(device)
    res = evaluate(model, eval_loader(ds, batch_size=batch_size, workers=workers), dev, len(names))
    conf = res.pop("confusion")
    per_class = {
        n: (100.0 * float(conf[i, i]) / float(conf[i].sum()) if conf[i].sum() else None)
        for i, n in enumerate(names)
    }
    result = {
        "checkpoint": str(checkpoint),
        "data": data,
        "split": split,
        "images": res["count"],
        "top1": res["top1"],
        "top5": res["top5"],
        "loss": res["loss"],
        "per_class": per_class,
        "class_names": names,
        "confusion": conf.tolist(),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result, indent=2) + "\n"
        atomic_write(out / "confusion.json", lambda tmp: Path(tmp).write_text(text))
        plot_confusion(conf, names, out / "confusion.png")
    return result


def plot_confusion(conf: torch.Tensor, names: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    size = min(16.0, 2.0 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = conf.float() / conf.sum(dim=1, keepdim=True).clamp(min=1)
    ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), names, rotation=90)
        ax.set_yticks(range(n), names)
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    color = "white" if rows[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, int(conf[i, j]), ha="center", va="center", color=color, fontsize=7
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return path
