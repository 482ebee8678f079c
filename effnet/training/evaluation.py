"""Evaluate a model file or run folder on a dataset: top-1/top-5, per-class accuracy, confusion."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch

from effnet.api import resolve_model
from effnet.data.datasets import ImageFiles, TensorImages, load_data, subset
from effnet.data.loaders import eval_loader
from effnet.data.transforms import eval_transform
from effnet.env import pyplot
from effnet.fast import accelerate
from effnet.training.loop import evaluate
from effnet.training.report import Progress, progress_mode
from effnet.weights.serialize import atomic_write

log = logging.getLogger("effnet.eval")
SYNSET = re.compile(r"n\d{8}")  # an ImageNet class folder name (WordNet id)
SPLIT_DEFAULTS = {"data": None, "val_fraction": 0.2, "seed": 0}  # without a run's config


def run_split(checkpoint: str | Path) -> dict[str, Any]:
    """The split options (data, val_fraction, seed, max_*_samples) of the run that ``checkpoint``
    (a run folder or a file in one) belongs to, from its config.json; {} outside a run."""
    p = Path(checkpoint)
    conf = (p if p.is_dir() else p.parent) / "config.json"
    if not conf.is_file():
        return {}
    saved = json.loads(conf.read_text())
    keys = ("data", "val_fraction", "seed", "max_train_samples", "max_val_samples")
    return {k: saved[k] for k in keys if k in saved}


def split_options(checkpoint, data, val_fraction, seed, image_size) -> dict[str, Any]:
    """Data, val_fraction and seed for evaluating ``checkpoint``: each one not given is the
    run's own (so the validation split is the one the run held out), else the default."""
    run = run_split(checkpoint)
    given = {"data": data, "val_fraction": val_fraction, "seed": seed}
    opts = {k: v if v is not None else run.get(k, SPLIT_DEFAULTS[k]) for k, v in given.items()}
    if opts["data"] is None:
        raise ValueError(f"{checkpoint}: not in a run folder (no config.json); give the data")
    vf = opts["val_fraction"]
    if isinstance(vf, bool) or not isinstance(vf, int | float) or not 0 < vf < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {vf!r}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32
    ):
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}")
    opts["from_run"] = sorted(k for k, v in given.items() if v is None and k in run)
    opts["run_max_samples"] = run.get("max_val_samples", 0)
    return opts


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | None = None,
    *,
    split: str = "val",
    batch_size: int = 64,
    image_size: int | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    seed: int | None = None,
    val_fraction: float | None = None,
    workers: int = 0,
    max_samples: int = 0,
    progress: str = "none",
    pretrained: Any = None,
    weights_source: str = "auto",
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (model file, training checkpoint, run folder, or a model name with
    ``pretrained`` weights, as timm's validate.py does) on ``data``.

    For a run (a run folder or a file in one), ``data``, ``val_fraction`` and ``seed`` default
    to the run's own, so ``split="val"`` is exactly the validation split it held out (all of it;
    ``max_samples`` takes the seeded subset the trainer takes for ``max_val_samples``). The image
    size and crop are the model file's (the run's). The result lists the evaluated ``files``
    (None for in-memory data such as digits). With ``out``, writes a new
    ``confusion-DATE-TIME.json`` (the result) and ``.png`` there for each evaluation (never
    overwriting an earlier one; the result names them). ``progress``: auto, bar, log or none.

    A named model's classes must be the data's: the same class names, or (for 1000-class
    ImageNet weights) a folder of 1000 WordNet-id class folders, whose sorted order is the
    ImageNet class index order (as timm and torchvision assume).
    """
    if split not in ("val", "train", "all"):
        raise ValueError(f"split must be 'val', 'train' or 'all', got {split!r}")
    opts = split_options(checkpoint, data, val_fraction, seed, image_size)
    _check_weights(checkpoint, pretrained)
    model = resolve_model(checkpoint, pretrained=pretrained, weights_source=weights_source)
    model = model.to(device).eval()
    accelerate(model)  # effnet's fast inference paths
    ds_all = load_data(opts["data"], val_fraction=opts["val_fraction"], seed=opts["seed"])
    names = _check_classes(checkpoint, model, ds_all, opts["data"])
    ds = {"val": ds_all.val, "train": ds_all.train}.get(split) or _whole(ds_all)
    ds = subset(ds, max_samples, opts["seed"] + 1)
    ds.transform = eval_transform(model.pretrained_cfg, image_size)
    loader = eval_loader(ds, batch_size=batch_size, workers=workers)
    bar = Progress(len(loader), f"eval {split}", progress_mode(progress))
    res = evaluate(model, loader, torch.device(device), len(names), progress=bar)
    bar.close()
    conf = res.pop("confusion")
    per_class = {
        n: (100.0 * float(conf[i, i]) / float(conf[i].sum()) if conf[i].sum() else None)
        for i, n in enumerate(names)
    }
    result = {
        "checkpoint": str(checkpoint),
        "data": opts["data"],
        "split": split,
        "val_fraction": opts["val_fraction"],
        "seed": opts["seed"],
        "split_from_run": opts["from_run"],  # the options taken from the run's config
        "run_max_val_samples": opts["run_max_samples"],
        "images": res["count"],
        "top1": res["top1"],
        "top5": res["top5"],
        "loss": res["loss"],
        "per_class": per_class,
        "class_names": names,
        "confusion": conf.tolist(),
        "files": [f for f, _ in ds.samples] if isinstance(ds, ImageFiles) else None,
    }
    if out is not None:
        json_path, png_path = fresh_paths(Path(out), "confusion")
        result.update(confusion_json=str(json_path), confusion_png=str(png_path))
        text = json.dumps(result, indent=2) + "\n"
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
        plot_confusion(conf, names, png_path)
    return result


def _check_weights(checkpoint: Any, pretrained: Any) -> None:
    named = isinstance(checkpoint, str) and not Path(checkpoint).exists()
    if named and pretrained in (None, False):
        raise ValueError(
            f"{checkpoint}: a model name needs weights to evaluate (random weights score chance); "
            "give pretrained= / --pretrained SOURCE (pip, timm, torchvision or a file)"
        )


def fresh_paths(out: Path, stem: str) -> tuple[Path, Path]:
    """``out/STEM-DATE-TIME.json`` and ``.png`` that do not exist yet (``-2``, ``-3``... when
    two evaluations end in the same second)."""
    out.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    n, name = 1, base
    while (out / f"{name}.json").exists() or (out / f"{name}.png").exists():
        n += 1
        name = f"{base}-{n}"
    return out / f"{name}.json", out / f"{name}.png"


def _whole(split_data) -> ImageFiles | TensorImages:
    """Every image of a dataset: its train and validation parts together."""
    tr, va = split_data.train, split_data.val
    if isinstance(tr, ImageFiles) and isinstance(va, ImageFiles):
        return ImageFiles(tr.samples + va.samples)
    if isinstance(tr, TensorImages) and isinstance(va, TensorImages):
        return TensorImages(torch.cat([tr.images, va.images]), tr.targets + va.targets)
    raise ValueError("split='all' needs an image folder or digits")


def _check_classes(checkpoint, model, ds_all, data) -> list[str]:
    names = list(getattr(model, "class_names", None) or ds_all.class_names)
    folders = ds_all.class_names
    imagenet = len(names) == 1000 == len(folders) and names != folders
    if imagenet and all(SYNSET.fullmatch(f) for f in folders) and folders == sorted(folders):
        log.info("%s: 1000 WordNet-id class folders in sorted (ImageNet index) order", data)
        return names
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
    return names


def plot_confusion(conf: torch.Tensor, names: list[str], path: Path) -> Path:
    plt = pyplot()

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
