"""Issue 14's command-line points: what a new user hits off the default path.

4 optional dependencies and --storage fail in one line naming what to install; 5 one device
validator for every --device; 6 options between positionals, errors name the command; 7 predict
shows progress on stderr; 9 --debug after the command, did-you-mean for flags and commands,
EfficientNet-B0 spellings; 12 parsing (help, usage errors, missing files) never imports torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.cli import build_parser, main
from effnet.env import MissingDependency, parse_device, require
from effnet.env.device import check_device

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON_ENV = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}


def cli(capsys, *argv):
    """(exit status, stdout, stderr) of ``effnet ARGV`` in-process; usage errors included."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"effnet {command}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny 3-class model file and a folder of three small images."""
    d = tmp_path_factory.mktemp("userpath")
    torch.manual_seed(0)
    m = effnet.create_model("efficientnet_b0", num_classes=3, width_mult=0.25, depth_mult=0.25)
    m.pretrained_cfg = {**m.pretrained_cfg, "input_size": (3, 32, 32)}
    model = effnet.save_model(m, d / "tiny.safetensors")
    (d / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(d / "images" / f"img{i}.png")
    return model, d / "images"


# -- point 4: optional dependencies and --storage ------------------------------------------------


def test_require_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(MissingDependency, match=r'install it with: pip install "effnet\[lab\]"'):
        require("optuna")
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ModuleNotFoundError, match="pip install timm"):
        require("timm")
    assert require("json") is json


def test_search_without_optuna_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)
    code, _, err = cli(capsys, "search", "--out", tmp_path / "s")
    line = one_line(err, "search")
    assert code == 2 and 'this needs optuna; install it with: pip install "effnet[lab]"' in line
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_onnx_export_without_onnx_is_one_line(capsys, monkeypatch, tmp_path, files):
    model, _ = files
    monkeypatch.setitem(sys.modules, "onnx", None)
    code, _, err = cli(capsys, "export", model, "-f", "onnx", "-o", tmp_path / "m.onnx")
    assert code == 2 and 'pip install "effnet[export]"' in one_line(err, "export")
    assert not (tmp_path / "m.onnx").exists()


def test_cam_without_matplotlib_is_one_line(capsys, monkeypatch, tmp_path, files):
    model, images = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = cli(capsys, "cam", model, images / "img0.png", "--out", tmp_path)
    assert code == 2 and "pip install matplotlib" in one_line(err, "cam")


def test_benchmark_without_a_peer_says_what_to_install(capsys, monkeypatch):
    """A missing peer is skipped (the rest is measured), with the install line in the report."""
    monkeypatch.setitem(sys.modules, "timm", None)
    argv = ["efficientnet_b0", "--against", "timm", "--mode", "infer", "--image-size", "32"]
    argv += ["--batch-size", "1", "--reps", "1", "--warmup", "0", "--no-memory"]
    code, out, err = cli(capsys, "benchmark", *argv)
    assert code == 0, err
    assert "skipped: timm: not installed (pip install timm)" in out.splitlines()


def test_a_missing_module_without_require_is_still_one_line(capsys, monkeypatch, tmp_path):
    """The CLI's safety net: a ModuleNotFoundError from anywhere names the install too."""
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    code, _, err = cli(capsys, "train", "--out", tmp_path / "r", "--epochs", "1")
    assert code == 2 and "pip install scikit-learn" in one_line(err, "train")


@pytest.mark.parametrize(
    "url, words",
    [
        ("notaurl", "not a database URL"),
        ("foo://bar", "unknown database kind 'foo'"),
        ("sqlite:////nonexistent/dir/search.db", "no such folder /nonexistent/dir"),
    ],
)
def test_bad_search_storage_is_one_line(capsys, tmp_path, url, words):
    code, _, err = cli(capsys, "search", "--storage", url, "--out", tmp_path / "s")
    line = one_line(err, "search")
    assert code == 2 and f"--storage {url}: {words}" in line and "Traceback" not in err


# -- point 5: one device validator -------------------------------------------------------------


def test_parse_device_accepts_device_names_and_suggests_for_the_rest():
    for name in ("cpu", "cuda", "cuda:1", "mps"):
        assert parse_device(name) == name
    assert parse_device("auto", auto=True) == "auto"
    with pytest.raises(ValueError, match=r"device gpu: unknown device .*did you mean cuda\?"):
        parse_device("gpu")
    for bad in ("tpu", "cuda:x", "auto", 3, "CUDA:0 "):
        with pytest.raises(ValueError):
            parse_device(bad)


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_check_device_says_when_the_machine_lacks_it(no_accelerator):
    assert check_device("cpu") == "cpu"
    msg = "device cuda: CUDA is not available on this machine (torch.cuda.is_available() is False)"
    with pytest.raises(ValueError, match=r"^" + msg.replace("(", r"\(").replace(")", r"\)")):
        check_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        check_device("mps")


def _device_argv(command, files, tmp_path):
    model, images = files
    return {
        "train": ["train", "--out", tmp_path / "r", "--epochs", "1"],
        "eval": ["eval", model],
        "predict": ["predict", model, images],
        "benchmark": ["benchmark", "efficientnet_b0", "--mode", "infer", "--no-memory"],
    }[command]


@pytest.mark.parametrize("command", ["train", "eval", "predict", "benchmark"])
@pytest.mark.parametrize(
    "device, words",
    [
        ("gpu", "--device gpu: unknown device (use"),
        ("cuda", "--device cuda: CUDA is not available on this machine"),
        ("cuda:1", "--device cuda:1: CUDA is not available"),
        ("mps", "--device mps: MPS is not available on this machine"),
    ],
)
def test_every_device_flag_is_checked_alike(
    capsys, tmp_path, files, no_accelerator, command, device, words
):
    argv = _device_argv(command, files, tmp_path)
    code, _, err = cli(capsys, *argv, "--device", device)
    line = one_line(err, command)
    assert code == 2 and words in line, line
    assert ("did you mean cuda?" in line) == (device == "gpu")
    assert not (tmp_path / "r").exists()


# -- point 6: options between positionals; errors name the command -----------------------------


def test_cam_takes_options_between_models_and_images(capsys, tmp_path, files):
    model, images = files
    args = build_parser().parse_args(
        ["cam", str(model), "--pretrained", str(model), str(images / "img0.png"), "--out", "d"]
    )
    assert args.inputs == [str(model), str(images / "img0.png")] and args.pretrained == str(model)
    code, out, err = cli(
        capsys, "cam", model, "--alpha", "0.3", images / "img0.png", "--out", tmp_path
    )
    assert code == 0, err
    assert (tmp_path / "cam_grid.png").is_file() and "img0.png" in out


def test_predict_takes_options_between_images(capsys, files):
    model, images = files
    argv = [model, images / "img0.png", "--topk", "2", images / "img1.png", "--json"]
    code, out, err = cli(capsys, "predict", *argv)
    assert code == 0, err
    rows = json.loads(out)
    assert [Path(r["image"]).name for r in rows] == ["img0.png", "img1.png"]
    assert all(len(r["top"]) == 2 for r in rows)


MINIMAL_ARGV = {  # a valid command line per command, to which a bad flag is added
    "train": [],
    "eval": ["MODEL"],
    "predict": ["MODEL", "IMAGES"],
    "demo": [],
    "models": [],
    "info": ["efficientnet_b0"],
    "export": ["efficientnet_b0", "-f", "onnx", "-o", "x.onnx"],
    "quantize": ["efficientnet_b0", "--calibrate", "digits", "-o", "x.onnx"],
    "benchmark": ["efficientnet_b0"],
    "scale": ["efficientnet_b0"],
    "search": [],
    "sweep": ["--values", "1"],
    "nas": [],
    "cam": ["MODEL", "IMAGES", "--out", "d"],
}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_command_is_in_the_table():
    assert set(_subcommands()) == set(MINIMAL_ARGV)


@pytest.mark.parametrize("command", sorted(MINIMAL_ARGV))
def test_unknown_flags_are_the_commands_error_with_a_hint(capsys, files, command):
    model, images = files
    argv = [{"MODEL": model, "IMAGES": images}.get(a, a) for a in MINIMAL_ARGV[command]]
    # in the middle of the positionals, where there are two
    at = 1 if command in ("predict", "cam") else len(argv)
    code, _, err = cli(capsys, command, *argv[:at], "--jsonn", *argv[at:])
    line = one_line(err, command)
    assert code == 2 and "unrecognized arguments: --jsonn" in line
    if any("--json" in a.option_strings for a in _subcommands()[command]._actions):
        assert "(did you mean --json?)" in line


# -- point 7: predict shows progress on stderr; stdout stays clean -------------------------------


def test_predict_progress_log_goes_to_stderr(capsys, files):
    model, images = files
    argv = [model, images, "--json", "--batch-size", "1", "--progress", "log"]
    code, out, err = cli(capsys, "predict", *argv)
    assert code == 0, err
    assert len(json.loads(out)) == 3  # stdout is the JSON alone
    lines = [ln for ln in err.splitlines() if ln.startswith("predict")]
    assert lines and "step 3/3" in lines[-1] and "img/s" in lines[-1] and "ETA" in lines[-1]
    code, out, err = cli(capsys, "predict", model, images, "--json", "--progress", "none")
    assert code == 0 and "step" not in err and len(json.loads(out)) == 3


def test_predict_progress_counts_skipped_images(capsys, files, tmp_path):
    model, images = files
    (tmp_path / "broken.png").write_bytes(b"not an image")
    argv = [model, images / "img0.png", tmp_path / "broken.png", "--progress", "log"]
    code, _, err = cli(capsys, "predict", *argv, "--batch-size", "4")
    assert code == 0 and "step 2/2" in err


# -- point 9: --debug anywhere, did-you-mean, model name spellings -----------------------------


def test_debug_works_after_the_command(capsys, tmp_path):
    p = build_parser()
    assert p.parse_args(["train", "--debug"]).debug is True
    assert p.parse_args(["--debug", "train"]).debug is True
    assert p.parse_args(["train"]).debug is False
    missing = tmp_path / "no-run"
    assert main(["eval", str(missing)]) == 2  # one line without --debug ...
    with pytest.raises(Exception, match="no such file"):  # ... the exception itself with it
        main(["eval", str(missing), "--debug"])


def test_misspelt_flags_and_commands_get_a_did_you_mean(capsys):
    code, _, err = cli(capsys, "train", "--epohcs", "3")
    line = one_line(err, "train")
    assert code == 2 and "unrecognized arguments: --epohcs 3 (did you mean --epochs?)" in line
    code, _, err = cli(capsys, "trian")
    assert code == 2 and "(did you mean train?)" in err and len(err.splitlines()) == 1
    code, _, err = cli(capsys, "train", "--optimizer", "adamx")
    assert code == 2 and "(did you mean adamw?)" in one_line(err, "train")


@pytest.mark.parametrize("spelling", ["efficientnet-b0", "EfficientNet_B0", "EFFICIENTNET_B0"])
def test_model_name_spellings_resolve(spelling, capsys):
    from effnet.registry import build_model, canonical_name, get_variant

    assert canonical_name(spelling) == "efficientnet_b0"
    assert get_variant(spelling) is get_variant("efficientnet_b0")
    assert effnet.data_config(spelling) == effnet.data_config("efficientnet_b0")
    assert build_model(spelling, num_classes=2).build_args["name"] == "efficientnet_b0"
    code, out, _ = cli(capsys, "info", spelling)
    assert code == 0 and out.startswith("efficientnet_b0 ")


def test_unknown_spelt_names_suggest_the_registered_ones():
    from effnet.registry import get_variant

    with pytest.raises(ValueError, match=r"'EfficientNet-B9'; did you mean efficientnet_b8"):
        get_variant("EfficientNet-B9")
    with pytest.raises(ValueError, match="did you mean efficientnet_b0"):
        get_variant("EfficientNet-BO")


# -- point 12: parsing never imports torch ---------------------------------------------------

PROBE = """
import json, sys
from effnet.cli import main
argvs = json.loads(sys.argv[1])
seen = []
for argv in argvs:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    heavy = ("torch", "numpy", "effnet.api")
    seen.append([argv, code, sorted(m for m in heavy if m in sys.modules)])
print(json.dumps(seen))
"""


def test_help_usage_errors_and_missing_files_do_not_import_torch(tmp_path):
    missing = str(tmp_path / "missing")
    argvs = [
        ["--help"],
        ["--version"],
        *[[name, "--help"] for name in sorted(MINIMAL_ARGV)],
        ["train", "--epohcs", "3"],
        ["train", "--data", missing],
        ["train", "--resume", missing],
        ["eval", missing],
        ["eval", str(tmp_path), "--device", "gpu"],
        ["predict", "efficientnet_b0", missing + ".jpg"],
        ["predict", missing + ".safetensors", "x.jpg"],
        ["export", missing + ".safetensors", "-f", "onnx", "-o", "x.onnx"],
        ["cam", "m", "--out"],
        ["trian"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argvs)],
        capture_output=True,
        text=True,
        env=PYTHON_ENV,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [code for _, code, _ in seen] == [0, 0, *[0] * len(MINIMAL_ARGV), *[2] * 10]
    assert [(argv, loaded) for argv, _, loaded in seen if loaded] == []
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 10 and all(e.startswith("effnet") and "error: " in e for e in errors)


def test_python_dash_m_effnet_help_imports_no_torch():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "effnet", "--help"],
        capture_output=True,
        text=True,
        env=PYTHON_ENV,
        timeout=120,
    )
    assert proc.returncode == 0 and "usage: effnet" in proc.stdout
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if "|" in ln}
    assert "effnet.cli" in imported and "argparse" in imported  # the probe itself works
    assert not {m for m in imported if m.split(".")[0] in ("torch", "numpy", "PIL")}


def test_static_tables_agree_with_the_modules_they_mirror():
    from effnet.cli import train as cli_train
    from effnet.cli.parsers import export as export_parser
    from effnet.cli.parsers import train as train_parser
    from effnet.deploy import export as export_module
    from effnet.training import config as C

    table = cli_train.field_table(C.TrainConfig)
    rows = "\n".join(f"    {row!r}," for row in table)
    assert table == train_parser.TRAIN_FIELDS, (
        f"update TRAIN_FIELDS in effnet/cli/parsers/train.py to:\n{rows}"
    )
    assert train_parser.CHOICES == {
        "optimizer": C.OPTIMIZERS,
        "schedule": C.SCHEDULES,
        "augment": C.AUGMENTS,
        "amp": C.AMP_MODES,
        "progress": C.PROGRESS_MODES,
        "weights_source": C.WEIGHTS_SOURCES,
    }
    assert export_parser.FORMATS == export_module.FORMATS
    assert export_parser.DEFAULT_OPSET == export_module.DEFAULT_OPSET
    assert export_parser.TOLERANCE == export_module.TOLERANCE
