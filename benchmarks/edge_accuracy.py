"""INT8 agreement with fp32 of the real Lite weights (pip) on real photos, in each runtime.

    python3 benchmarks/edge_accuracy.py [--out benchmarks/results] [--crops 8] [--seed 0]
        [--model efficientnet_lite0] [--skip-ort] [--skip-edge]

Every INT8 file is calibrated on the real photos of scikit-image and scikit-learn (22, see
``quantize_table.SKIMAGE_PHOTOS``) and compared with eager PyTorch in its own runtime, on:

- the photos themselves (what ``effnet export`` / ``effnet quantize`` report);
- ``--crops`` random crops and flips of each photo (seeded), which calibration never saw: many
  more views, so the figure moves by one view in 176 rather than one photo in 22. Crops on
  which fp32 is a near-tie (top-2 softmax probabilities under 0.05 apart) are counted apart,
  and the crops' logit mean squared difference from fp32 is given: unlike top-1 agreement it is
  not decided by coin flips on the near-ties. ``--seed`` draws another set of crops.

Rows: ExecuTorch and LiteRT INT8 (the default: stem and classifier float; all quantized; all
quantized without bias correction), ONNX Runtime INT8 (the default, percentile with gptq
weight rounding; nearest rounding; each with the stem float; entropy; and ``--method nncf``
when nncf is installed).
Writes ``edge_accuracy.{json,md}`` (Lite0, seed 0) or ``edge_accuracy_<model>_seed<S>.*``.
Accuracy does not depend on machine load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quantize_table import save_photos  # noqa: E402

import effnet  # noqa: E402
from effnet.data.images import open_rgb  # noqa: E402
from effnet.data.transforms import eval_transform  # noqa: E402
from effnet.deploy import quantize as Q  # noqa: E402
from effnet.deploy.calibration import calibration_arrays  # noqa: E402
from effnet.deploy.export import export  # noqa: E402
from effnet.deploy.export.executorch import load_executorch  # noqa: E402
from effnet.deploy.export.tflite import load_tflite  # noqa: E402

NEAR_TIE = 0.05


def save_crops(photos: Path, folder: Path, per_photo: int, seed: int = 0) -> int:
    from torchvision.transforms import v2

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    crop = v2.Compose([v2.RandomResizedCrop(256, scale=(0.25, 1.0)), v2.RandomHorizontalFlip()])
    n = 0
    for p in sorted(photos.glob("*.png")):
        im = open_rgb(p)
        for k in range(per_photo):
            crop(im).save(folder / f"{p.stem}_{k}.png")
            n += 1
    return n


def batched(run, x: np.ndarray, step: int = 8) -> torch.Tensor:
    return torch.cat([run(torch.from_numpy(x[i : i + step])) for i in range(0, len(x), step)])


def on_photos(r) -> dict:
    n = r.calibration_images
    return {"n": n, "agree": round(r.agreement * n), "max_logit_diff": r.max_logit_diff}


def agreement(ref: torch.Tensor, got: torch.Tensor) -> dict:
    ok = got.argmax(1) == ref.argmax(1)
    top2 = ref.softmax(1).topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) >= NEAR_TIE
    return {
        "n": len(ok), "agree": int(ok.sum()), "clear_n": int(clear.sum()),
        "clear_agree": int(ok[clear].sum()), "max_logit_diff": float((got - ref).abs().max()),
        "logit_mse": float(((got - ref) ** 2).mean()),
    }  # fmt: skip


def edge_rows(model, photos: Path, crops: np.ndarray, ref: torch.Tensor, tmp: Path) -> list:
    rows = []
    for fmt, suffix, load in (("executorch", ".pte", load_executorch),
                              ("tflite", ".tflite", load_tflite)):  # fmt: skip
        for bias, keep in ((True, ("stem", "head")), (True, ()), (False, ())):
            path = tmp / f"l0{suffix}"
            r = export(model, fmt, path, int8=True, calibrate=photos, bias_correction=bias,
                       keep_float=keep)  # fmt: skip
            got = batched(load(path), crops)
            rows.append({
                "runtime": {"executorch": "ExecuTorch (XNNPACK)", "tflite": "LiteRT"}[fmt],
                "recipe": "PT2E, ReLU6 fused" + (", bias correction" if bias else "")
                + (f", float: {','.join(keep)}" if keep else ", all quantized"),
                "photos": on_photos(r),
                "crops": agreement(ref, got),
            })  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def ort_rows(model, photos: Path, crops: np.ndarray, ref: torch.Tensor, tmp: Path) -> list:
    import importlib.util

    se, stem = ("se_pool", "se_gate"), ("se_pool", "se_gate", "stem")
    runs = [("percentile", "gptq", se), ("percentile", "nearest", se),
            ("percentile", "gptq", stem), ("percentile", "nearest", stem),
            ("entropy", "gptq", se)]  # fmt: skip
    runs += [("nncf", None, se)] if importlib.util.find_spec("nncf") else []
    rows = []
    for method, rounding, keep in runs:
        path = tmp / f"l0-{method}.onnx"
        r = Q.quantize_onnx(model, calibrate=photos, output=path, method=method,
                            rounding=rounding, keep_float=keep)  # fmt: skip
        got = torch.from_numpy(Q._logits(path, crops))
        rows.append({
            "runtime": "ONNX Runtime",
            "recipe": f"--method {method} --keep-float {','.join(keep)}"
            + (f" --rounding {rounding}" if rounding else ""),
            "photos": on_photos(r),
            "crops": agreement(ref, got),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def markdown(doc: dict) -> str:
    lines = [
        f"Real {doc['model']} weights (pip), calibrated on the {doc['photos']} photos; crops: "
        f"{doc['crops']} unseen random crops of them (seed {doc['seed']}). torch {doc['torch']}.",
        "",
        "| runtime | recipe | photos | crops | crops, fp32 not a near-tie "
        "| logit MSE, crops | max logit diff, crops |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        p, c = r["photos"], r["crops"]
        lines.append(
            f"| {r['runtime']} | {r['recipe']} | {p['agree'] / p['n']:.1%} ({p['agree']}/{p['n']}) "
            f"| {c['agree'] / c['n']:.1%} ({c['agree']}/{c['n']}) "
            f"| {c['clear_agree'] / max(c['clear_n'], 1):.1%} ({c['clear_agree']}/{c['clear_n']}) "
            f"| {c['logit_mse']:.4f} | {c['max_logit_diff']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--crops", type=int, default=8, help="random crops per photo")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random crops")
    ap.add_argument("--model", default="efficientnet_lite0", help="a Lite model with pip weights")
    ap.add_argument("--skip-ort", action="store_true", help="ExecuTorch and LiteRT rows only")
    ap.add_argument("--skip-edge", action="store_true", help="ONNX Runtime rows only")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = effnet.create_model(args.model, pretrained="pip").eval()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        photos = tmp / "photos"
        n_photos = len(save_photos(photos))
        n_crops = save_crops(photos, tmp / "crops", args.crops, args.seed)
        crops, _ = calibration_arrays(tmp / "crops", n_crops, eval_transform(model.pretrained_cfg))
        with torch.inference_mode():
            ref = batched(model, crops, 16)
        rows = [] if args.skip_edge else edge_rows(model, photos, crops, ref, tmp)
        if not args.skip_ort:
            rows += ort_rows(model, photos, crops, ref, tmp)
    doc = {"model": args.model, "seed": args.seed, "photos": n_photos, "crops": n_crops,
           "torch": torch.__version__, "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    default = args.model == "efficientnet_lite0" and args.seed == 0
    stem = "edge_accuracy" if default else f"edge_accuracy_{args.model}_seed{args.seed}"
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
