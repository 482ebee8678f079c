"""Class activation maps: exact CAM (Zhou et al. 2016) and Grad-CAM (Selvaraju et al. 2017).

Exact CAM needs no hooks: an EfficientNet ends in global average pooling and one linear layer, so
logit_k = mean_hw(sum_c W[k, c] * F[c, h, w]) + b_k with F = ``forward_features(x)``; the map is the
weighted sum before the mean. Grad-CAM works on any named layer (forward hook + tensor hook);
its maps at stride-2 layers can show the grid pattern users report (user-needs item 18).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn


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
    from matplotlib import colormaps

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
