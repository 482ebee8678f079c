"""INT8 ExecuTorch and LiteRT files of digits training runs, with effnet's defaults: top-1 on
each run's own validation split against the run's fp32 model (issue 16, point 3).

    python3 benchmarks/edge_digits.py RUN_DIR [RUN_DIR ...]

Each file is calibrated on digits (``effnet export RUN --format executorch|tflite --int8
--calibrate digits``) and run in its own runtime.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effnet.api import resolve_model
from effnet.data.datasets import load_data
from effnet.deploy.calibration import preprocessing
from effnet.deploy.export import export
from effnet.deploy.export.common import input_spec
from effnet.deploy.export.executorch import load_executorch
from effnet.deploy.export.tflite import load_tflite
from effnet.training.evaluation import split_options

RUNTIMES = (("executorch", ".pte", load_executorch), ("tflite", ".tflite", load_tflite))


def validation(run: str, model) -> tuple[torch.Tensor, np.ndarray]:
    """The run's own digits validation split, through the model's preprocessing."""
    opts = split_options(run, "digits", None, None, None)
    split = load_data(opts["data"], val_fraction=opts["val_fraction"], seed=opts["seed"])
    ds = split.val
    ds.transform = preprocessing(model, input_spec(model, None)[1])
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([im for im, _ in items]), np.array([t for _, t in items])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for run in args.runs:
        model = resolve_model(run).eval()
        x, y = validation(run, model)
        with torch.inference_mode():
            fp32 = float((model(x).argmax(1).numpy() == y).mean() * 100)
        for fmt, suffix, load in RUNTIMES:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / f"int8{suffix}"
                r = export(run, fmt, out, int8=True, calibrate="digits")
                runner = load(out)
                got = torch.cat([runner(x[i : i + 8]) for i in range(0, len(x), 8)])
            int8 = float((got.argmax(1).numpy() == y).mean() * 100)
            print(
                f"{run} {fmt} INT8: fp32 {fp32:.2f}%, INT8 {int8:.2f}% ({int8 - fp32:+.2f}) "
                f"on {len(y)} images; float layers {len(r.float_layers)}, "
                f"bias-corrected layers {r.bias_layers}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
