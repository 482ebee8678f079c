"""Class activation maps: exact CAM (Zhou et al. 2016) and Grad-CAM (Selvaraju et al. 2017).

Exact CAM needs no hooks: an EfficientNet ends in global average pooling and one linear layer, so
logit_k = mean_hw(sum_c W[k, c] * F[c, h, w]) + b_k with F = ``forward_features(x)``; the map is the
weighted sum before the mean. Grad-CAM works on any named layer (forward hook + tensor hook);
its maps at stride-2 layers can show the grid pattern users report (user-needs item 18).

The pipeline on images and files: ``cam_images(model, images)`` gives one ``CamResult`` (map,
class, probability, overlay, saved PNG) per image; ``cam_grid(models, images)`` runs several models
and lays them side by side like Figure 7 of the EfficientNet paper (what ``effnet cam`` prints).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from effnet.api import choose_pretrained, create_model
from effnet.data.images import open_rgb
from effnet.data.transforms import eval_transform
from effnet.env import require
from effnet.weights import imagenet_classes
from effnet.weights.serialize import load_model

METHODS = ("cam", "gradcam")


def _classifier(model: nn.Module) -> nn.Linear:
    fc = getattr(model, "classifier", None)
    if not isinstance(fc, nn.Linear) or not hasattr(model, "forward_features"):
        raise ValueError(
            "exact CAM needs a model with forward_features and a linear classifier "
            "(num_classes > 0); use method='gradcam' otherwise"
        )
    return fc


def _targets(logits: torch.Tensor, target: int | None) -> torch.Tensor:
    n = logits.shape[1]
    if target is None:
        return logits.argmax(1)
    if not isinstance(target, int) or not 0 <= target < n:
        raise ValueError(f"target class must be an integer in [0, {n - 1}], got {target!r}")
    return torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)


@torch.no_grad()
def cam(
    model: nn.Module, x: torch.Tensor, target: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact CAM: (maps (B, h, w), target classes (B,), logits (B, K)).

    maps.mean((1, 2)) + classifier.bias[target] equals the target logit (eval mode, no dropout).
    """
    fc = _classifier(model)
    feats = model.forward_features(x)
    logits = model.forward_head(feats) if hasattr(model, "forward_head") else model(x)
    t = _targets(logits, target)
    maps = torch.einsum("bchw,bc->bhw", feats, fc.weight[t])
    return maps, t, logits


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (as in ``named_modules``), or a one-line ValueError."""
    modules = dict(model.named_modules())
    if not name or name not in modules:
        tops = [n for n, _ in model.named_children()]
        stages = [f"stages.{i}" for i in range(len(getattr(model, "stages", ())))]
        hint = ", ".join([t for t in tops if t != "stages"][:1] + stages + tops[-4:])
        raise ValueError(f"no layer named {name!r} in this model; try one of: {hint}")
    return modules[name]


def gradcam(
    model: nn.Module, x: torch.Tensor, layer: str = "head", target: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grad-CAM on ``layer``: relu(sum_c mean_hw(dy/dA_c) * A_c); same return as ``cam``."""
    module = find_layer(model, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise ValueError(f"layer {layer!r} does not output a (B, C, H, W) feature map")
        store["act"] = out
        out.register_hook(lambda g: store.__setitem__("grad", g))

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            inp = x.detach().requires_grad_(True)  # gradients flow even into frozen models
            logits = model(inp)
            t = _targets(logits, target)
            logits.gather(1, t[:, None]).sum().backward()
    finally:
        handle.remove()
    act, grad = store["act"].detach(), store["grad"].detach()
    weights = grad.mean((2, 3))
    maps = torch.relu(torch.einsum("bchw,bc->bhw", act, weights))
    return maps, t, logits.detach()


# --- rendering ------------------------------------------------------------------------------


def denormalize(x: torch.Tensor, mean, std) -> Image.Image:
    """A normalised (3, H, W) tensor back to an RGB image (what the model saw)."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    arr = ((x.detach().cpu().float() * s + m).clamp(0, 1) * 255).round().byte()
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")


def overlay(image: Image.Image, heatmap: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """Blend a (h, w) map, upsampled bilinearly and scaled to [0, 1], over ``image`` (jet)."""
    colormaps = require("matplotlib").colormaps

    h = heatmap.detach().float()
    lo, hi = float(h.min()), float(h.max())
    # Scale before upsampling: a flat map (e.g. the 1x1 head of a 32 px input) must stay flat,
    # not turn the interpolation's rounding noise into a full-range pattern.
    flat = hi - lo <= 1e-6 * max(1.0, abs(hi), abs(lo))
    h = torch.zeros_like(h) if flat else (h - lo) / (hi - lo)
    size = image.size[::-1]
    h = torch.nn.functional.interpolate(h[None, None], size=size, mode="bilinear")[0, 0]
    h = h.clamp(0, 1)
    colored = (colormaps["jet"](h.numpy())[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(colored, "RGB"), alpha)


def grid(
    tiles: list[list[Image.Image]],
    col_titles: list[str],
    cell_labels: list[list[str]] | None = None,
    tile: int = 224,
) -> Image.Image:
    """Rows of equally sized tiles under one title per column (the layout of the paper's Fig. 7)."""
    if not tiles or not tiles[0]:
        raise ValueError("grid needs at least one tile")
    rows, cols = len(tiles), len(tiles[0])
    title_h, label_h, pad = 18, 14 if cell_labels else 0, 4
    width = cols * (tile + pad) + pad
    height = title_h + rows * (tile + label_h + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(col_titles):
        draw.text((pad + c * (tile + pad) + 2, 3), title[: tile // 6], fill="black")
    for r, row in enumerate(tiles):
        y = title_h + r * (tile + label_h + pad)
        for c, im in enumerate(row):
            x = pad + c * (tile + pad)
            canvas.paste(im.convert("RGB").resize((tile, tile)), (x, y))
            if cell_labels:
                draw.text((x + 2, y + tile + 1), cell_labels[r][c][: tile // 6], fill="black")
    return canvas


# --- the pipeline -----------------------------------------------------------------------------


@dataclass
class CamResult:
    """One model's class activation map on one image."""

    model: str  # the model's title: name and weights, or the file / folder name
    image: str  # the image's path, or ``image<i>`` for an image given in memory
    target: int  # the class the map explains
    class_name: str
    prob: float  # the model's softmax probability of that class
    heatmap: np.ndarray  # (h, w) float32 map at the layer's resolution (not rescaled)
    view: Image.Image  # the preprocessed input, as the model saw it
    overlay: Image.Image  # the heatmap upsampled and blended over ``view``
    path: Path | None = None  # the overlay PNG, when an ``out_dir`` was given

    def to_dict(self) -> dict:
        """The row of ``cam.json``."""
        return {
            "model": self.model,
            "image": self.image,
            "class": self.target,
            "class_name": self.class_name,
            "prob": round(self.prob, 4),
            "overlay": str(self.path) if self.path else None,
        }


ImageInput = str | os.PathLike | Image.Image
ModelInput = str | os.PathLike | nn.Module


def load_cam_model(
    model: ModelInput, pretrained: Any = None, weights_source: str = "auto"
) -> tuple[nn.Module, str]:
    """(model in eval mode, its title) from a module, a weight file or run folder, or a name.

    A bare name gets its weights by ``effnet.api.choose_pretrained``: ``pretrained`` (``timm``,
    ``torchvision``, a file...), else its default weights when they are on this machine (the
    pip packages for Lite0-2); ``pretrained="none"`` accepts random weights.
    """
    if isinstance(model, nn.Module):
        return model, getattr(model, "variant", None) or type(model).__name__
    path = Path(model)
    if path.exists():
        return load_model(path).eval(), path.stem if path.is_file() else path.name
    name = str(model)
    choice = choose_pretrained(name, pretrained, what="CAMs")
    if choice is False:
        return create_model(name).eval(), f"{name} (random weights)"
    net = create_model(name, pretrained=choice, weights_source=weights_source)
    return net.eval(), f"{name} ({choice})"


def class_names(model: nn.Module) -> list[str]:
    """The model's class names (a run's own, ImageNet's for 1000 classes, else indices)."""
    names = getattr(model, "class_names", None)
    if names:
        return list(names)
    if getattr(model, "num_classes", 0) == 1000:
        return list(imagenet_classes())
    return [str(i) for i in range(getattr(model, "num_classes", 0))]


def resolve_target(model: nn.Module, target: int | str | None) -> int | None:
    """A class index from an index, its digits, or an exact class name (None: top class)."""
    if target is None or isinstance(target, int):
        return target
    if re.fullmatch(r"\d+", str(target)):
        return int(target)
    names = class_names(model)
    if target not in names:
        raise ValueError(f"unknown target class {target!r}; give an index or an exact class name")
    return names.index(target)


def open_images(images: Sequence[ImageInput]) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) of each path or PIL image; unreadable files fail here, before any work."""
    if isinstance(images, str | os.PathLike | Image.Image):
        images = [images]
    if not images:
        raise ValueError("no image given")
    out = []
    for i, im in enumerate(images):
        if isinstance(im, Image.Image):
            out.append((f"image{i}", im.convert("RGB")))
        else:
            out.append((str(im), open_rgb(im)))
    return out


def _check_options(method: str, alpha: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def safe_name(name: str) -> str:
    """``name`` as a file-name part (letters, digits, ``_.-``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def cam_images(
    model: ModelInput,
    images: Sequence[ImageInput],
    *,
    method: str = "cam",
    layer: str = "head",
    target: int | str | None = None,
    pretrained: Any = None,
    weights_source: str = "auto",
    alpha: float = 0.5,
    out_dir: str | os.PathLike | None = None,
) -> list[CamResult]:
    """Class activation maps of one model on ``images`` (paths or PIL images), one per image.

    ``model``: an nn.Module, a weight file or run folder, or a registered name (see
    ``load_cam_model`` for ``pretrained``). ``method``: ``cam`` (exact CAM from the classifier) or
    ``gradcam`` on ``layer`` (``stem``, ``stages.N``, ``head``...). ``target``: a class index or
    name; default: each image's top class. With ``out_dir``, each overlay is saved there as
    ``MODEL__IMAGE.png``.
    """
    _check_options(method, alpha)
    opened = open_images(images)
    net, title = load_cam_model(model, pretrained, weights_source)
    return _cam_opened(net, title, opened, method, layer, target, alpha, out_dir)


def _cam_opened(net, title, opened, method, layer, target, alpha, out_dir) -> list[CamResult]:
    was_training = net.training
    net.eval()
    try:
        cfg = dict(net.pretrained_cfg)
        x = torch.stack([eval_transform(cfg)(im) for _, im in opened])
        t = resolve_target(net, target)
        if method == "cam":
            maps, ts, logits = cam(net, x, t)
        else:
            maps, ts, logits = gradcam(net, x, layer, t)
    finally:
        net.train(was_training)
    probs = logits.softmax(1)
    names = class_names(net)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results = []
    for (name, _), xi, m, ti, pr in zip(opened, x, maps, ts, probs, strict=True):
        view = denormalize(xi, cfg["mean"], cfg["std"])
        ov = overlay(view, m, alpha)
        k = int(ti)
        res = CamResult(
            model=title,
            image=name,
            target=k,
            class_name=names[k] if k < len(names) else str(k),
            prob=float(pr[k]),
            heatmap=m.detach().float().cpu().numpy(),
            view=view,
            overlay=ov,
        )
        if out is not None:
            res.path = out / f"{safe_name(title)}__{safe_name(Path(name).stem)}.png"
            ov.save(res.path)
        results.append(res)
    return results


def cam_grid(
    models: Sequence[ModelInput],
    images: Sequence[ImageInput],
    *,
    method: str = "cam",
    layer: str = "head",
    target: int | str | None = None,
    pretrained: Any = None,
    weights_source: str = "auto",
    alpha: float = 0.5,
    out_dir: str | os.PathLike | None = None,
) -> tuple[list[CamResult], Image.Image]:
    """``cam_images`` for each model, and one grid: a column per model after the inputs, a row
    per image (Figure 7 of the EfficientNet paper). With ``out_dir``, also writes the overlays,
    ``cam_grid.png`` and ``cam.json`` (one row per result)."""
    if isinstance(models, str | os.PathLike | nn.Module):
        models = [models]
    if not models:
        raise ValueError("no model given")
    _check_options(method, alpha)
    opened = open_images(images)
    results, columns, titles = [], [], []
    for model in models:
        net, title = load_cam_model(model, pretrained, weights_source)
        res = _cam_opened(net, title, opened, method, layer, target, alpha, out_dir)
        results += res
        columns.append(res)
        titles.append(title)
    tiles = [[columns[0][r].view, *(c[r].overlay for c in columns)] for r in range(len(opened))]
    labels = [
        [Path(name).name, *(f"{c[r].class_name} {c[r].prob:.0%}" for c in columns)]
        for r, (name, _) in enumerate(opened)
    ]
    image = grid(tiles, ["input", *titles], labels)
    if out_dir is not None:
        image.save(Path(out_dir) / "cam_grid.png")
        rows = [r.to_dict() for r in results]
        (Path(out_dir) / "cam.json").write_text(json.dumps(rows, indent=2))
    return results, image
