"""Training configuration: YAML + overrides, and a clear error for every invalid option."""

from pathlib import Path

import pytest

from effnet.training.config import TrainConfig, resolve_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "effnet" / "configs").glob("*.yaml"))


def test_builtin_configs_all_resolve():
    names = {p.stem for p in CONFIGS}
    assert {"digits", "b0_imagenet", "v2s_progressive", "finetune_lite0"} <= names
    for p in CONFIGS:
        cfg = resolve_config(p.stem)
        assert isinstance(cfg, TrainConfig)


def test_paper_recipe_values():
    cfg = resolve_config("b0_imagenet")
    assert (cfg.optimizer, cfg.momentum, cfg.opt_eps) == ("rmsprop", 0.9, 1e-3)
    assert (cfg.schedule, cfg.decay_rate, cfg.decay_epochs) == ("exponential", 0.97, 2.4)
    assert (cfg.weight_decay, cfg.ema_decay, cfg.label_smoothing) == (1e-5, 0.9999, 0.1)
    assert cfg.lr == 0.016 and cfg.lr_per_256 and cfg.drop_path_rate == 0.2


def test_yaml_then_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("epochs: 7\nlr: 0.1\nmodel_kwargs: {width_mult: 0.5}\n")
    cfg = resolve_config(y, {"lr": 0.2, "seed": None})
    assert (cfg.epochs, cfg.lr, cfg.seed, cfg.model_kwargs) == (7, 0.2, 0, {"width_mult": 0.5})


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"lr": -1}, ["lr", "-1"]),
        ({"lr": float("nan")}, ["lr", "nan"]),
        ({"optimizer": "adam"}, ["optimizer", "'adam'"]),
        ({"epochs": 0}, ["epochs", "0"]),
        ({"batch_size": -4}, ["batch_size", "-4"]),
        ({"progressive": True, "stages": 0}, ["stages", "0"]),
        ({"progressive": True, "stages": 50, "epochs": 3}, ["stages", "50"]),
        ({"image_size": 8}, ["image_size", "8"]),
        ({"model": "efficientnet_bo"}, ["efficientnet_bo", "did you mean efficientnet_b0"]),
        ({"schedule": "step"}, ["schedule", "'step'"]),
        ({"label_smoothing": 1.5}, ["label_smoothing", "1.5"]),
        ({"val_fraction": 1.0}, ["val_fraction", "1.0"]),
        ({"freeze_epochs": 2}, ["freeze_epochs", "pretrained"]),
        ({"model_kwargs": {"num_classes": 3}}, ["model_kwargs", "num_classes"]),
        ({"amp": "fp8"}, ["amp", "'fp8'"]),
        ({"device": "tpu"}, ["device", "'tpu'"]),
        ({"prog_image_size": [200, 100], "progressive": True}, ["prog_image_size", "200"]),
        ({"lerning_rate": 0.1}, ["unknown training option", "lerning_rate"]),
    ],
)
def test_invalid_options_name_option_and_value(over, words):
    with pytest.raises(ValueError) as e:
        resolve_config(None, over)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_bad_yaml(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("epochs: [1,\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        resolve_config(y)
    y.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        resolve_config(y)
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        resolve_config(tmp_path / "nope.yaml")


def _cli(args, capsys):
    from effnet.cli import main

    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--lr", "-0.5"], "lr must be a positive number, got -0.5"),
        (["--optimizer", "adam"], "invalid choice"),
        (["--epochs", "0"], "epochs must be a positive integer, got 0"),
        (["--model", "efficientnet_bo"], "did you mean efficientnet_b0"),
        (["--progressive", "--stages", "0"], "stages must be an integer >= 1, got 0"),
        (["--data", "/no/such/folder"], "no such folder"),
        (["--resume", "/no/such/run"], "cannot resume"),
        (["--set", "bogus=1"], "unknown training option 'bogus'"),
    ],
)
def test_cli_bad_flags_are_one_line_errors(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = _cli(["train", *args], capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "runs").exists()


def test_short_run_shortens_an_inherited_warmup_but_not_an_explicit_one():
    from effnet.training.config import resolve_config

    assert resolve_config("digits", {"epochs": 1}).warmup_epochs == 0.5
    assert resolve_config("digits", {"epochs": 30}).warmup_epochs == 1
    with pytest.raises(ValueError, match="warmup_epochs"):
        resolve_config("digits", {"epochs": 1, "warmup_epochs": 2})
