"""Property tests: every invalid `effnet train` flag, --set value or YAML key is one line, exit 2.

Each example combines one invalid option (a value outside its domain, a wrong type, an unknown
key, or a cross-option conflict), given as a flag, a ``--set`` or a YAML file key, with a random set
of valid options. The CLI runs in-process; training itself is replaced by a stub that builds the
model (so invalid ``model_kwargs`` are caught too) and then stops: an invalid config that
reached it would be a test failure.
"""

from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import cli_in_process

# option -> invalid values (as they would be typed). Flags exist for most options.
INVALID = {
    "epochs": ["0", "-1", "1.5", "abc", "nan"],
    "batch_size": ["0", "-4", "x", "2.5"],
    "lr": ["0", "-0.1", "nan", "inf", "abc", "[1, 2]"],
    "image_size": ["0", "16", "31", "-224", "big"],
    "optimizer": ["adam", "RMSprop", "''"],
    "schedule": ["linear", "step"],
    "augment": ["mixup", "all"],
    "amp": ["fp8", "int8"],
    "device": ["gpu", "tpu0", "'cuda 0'"],
    "label_smoothing": ["1", "1.5", "-0.1"],
    "drop_path_rate": ["1.0", "-0.2"],
    "drop_rate": ["1", "-0.5"],
    "ema_decay": ["1.0", "2", "-0.1"],
    "val_fraction": ["0", "1", "1.5"],
    "weight_decay": ["-1", "nan"],
    "momentum": ["1", "-0.5"],
    "mixup_alpha": ["-1"],
    "cutmix_alpha": ["-0.5"],
    "crop_pct": ["0", "1.5"],
    "clip_grad": ["0", "-1"],
    "seed": ["-1", "1.5"],
    "workers": ["-1"],
    "threads": ["-2"],
    "checkpoint_every": ["-1"],
    "max_train_samples": ["-5"],
    "model": ["efficientnet_b9", "resnet50", "''"],
    "progress": ["fancy"],
    "hflip": ["1.5", "-1"],
    "randaugment_magnitude": ["31", "-1"],
    "decay_rate": ["0", "1.5"],
    "width_mult": ["0", "-1", "1000"],
    "depth_mult": ["0", "-2"],
}
NO_FLAG = {
    "momentum",
    "val_fraction",
    "crop_pct",
    "hflip",
    "randaugment_magnitude",
    "decay_rate",
    "max_val_samples",
}
FLAG_ALIASES = {"mixup_alpha": "--mixup", "cutmix_alpha": "--cutmix"}
# Options that are invalid only together with others: (options, the names the error may cite).
CONFLICTS = [
    ({"epochs": "3", "warmup_epochs": "3"}, ("warmup_epochs",)),
    ({"lr": "0.01", "min_lr": "0.1"}, ("min_lr",)),
    ({"progressive": True, "epochs": "2", "stages": "3"}, ("stages",)),
    ({"progressive": True, "epochs": "4", "stages": "0"}, ("stages",)),
    ({"progressive": True, "prog_image_size": "64,32"}, ("prog_image_size",)),
    ({"progressive": True, "prog_image_size": "16,64"}, ("prog_image_size",)),
    ({"progressive": True, "prog_dropout": "0.1,1.5"}, ("prog_dropout",)),
    ({"progressive": True, "prog_magnitude": "-1,5"}, ("prog_magnitude",)),
    ({"epochs": "3", "freeze_epochs": "1"}, ("freeze_epochs",)),  # no --pretrained
    ({"set:model_kwargs": "{num_classes: 5}"}, ("model_kwargs",)),
    ({"set:model_kwargs": "[1, 2]"}, ("model_kwargs",)),
    ({"set:model_kwargs": "{no_such_arg: 1}"}, ("model_kwargs", "no_such_arg")),
    ({"set:lr_max": "0.1"}, ("lr_max",)),
    ({"set:epoch": "3"}, ("epoch",)),
]
# Valid background options (none of them conflicts with the invalid one chosen above).
VALID = {
    "seed": st.integers(0, 1000).map(str),
    "batch_size": st.sampled_from(["8", "16", "64"]),
    "optimizer": st.sampled_from(["sgd", "adamw", "rmsprop"]),
    "schedule": st.sampled_from(["cosine", "exponential", "constant"]),
    "image_size": st.sampled_from(["32", "48", "64"]),
    "label_smoothing": st.sampled_from(["0", "0.1"]),
    "augment": st.sampled_from(["none", "basic", "randaugment"]),
    "ema_decay": st.sampled_from(["0", "0.99"]),
    "progress": st.just("none"),
}


class Reached(Exception):
    """The stub for training was called: the config passed every check."""


def _stub_run(cfg, resume=None, resume_overrides=None):
    from effnet.training import builders, trainer

    if resume is not None:
        cfg, _ = trainer.resume_config(resume, resume_overrides)
    builders.build_model(cfg, 10, [str(i) for i in range(10)])
    raise Reached


def _flag(name):
    return FLAG_ALIASES.get(name, "--" + name.replace("_", "-"))


def _argv(options: dict, how: str, tmp: Path) -> list[str]:
    """Pass ``options`` as flags, --set or a YAML file (``how``); booleans are switches."""
    argv, yaml_lines = ["train"], []
    for key, value in options.items():
        forced_set = key.startswith("set:")
        key = key.removeprefix("set:")
        in_kwargs = key in ("width_mult", "depth_mult")
        if how == "flag" and not forced_set and key not in NO_FLAG:
            argv += [_flag(key)] if value is True else [_flag(key), value]
        elif how == "yaml" and not in_kwargs:
            yaml_lines.append(f"{key}: {'true' if value is True else value}")
        elif in_kwargs:
            argv += ["--set", f"model_kwargs={{{key}: {value}}}"]
        else:
            argv += ["--set", f"{key}={'true' if value is True else value}"]
    if yaml_lines:
        path = tmp / "config.yaml"
        path.write_text("data: digits\n" + "\n".join(yaml_lines) + "\n")
        argv += ["--config", str(path)]
    return argv


def _run(argv) -> tuple[int, str]:
    with mock.patch("effnet.training.trainer.run", _stub_run):
        return cli_in_process(argv)


def _assert_one_line_naming(code, err, names, argv):
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and err.startswith(("effnet train: error:", "effnet: error:")), (
        argv,
        err,
    )
    assert "Traceback" not in err
    forms = [n for name in names for n in (name, _flag(name))]
    assert any(f in err for f in forms), (argv, err)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("configs")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    how=st.sampled_from(["flag", "set", "yaml"]),
)
def test_invalid_option_is_one_line_naming_it(tmp, data, how, figures):
    name = data.draw(st.sampled_from(sorted(INVALID)), label="option")
    value = data.draw(st.sampled_from(INVALID[name]), label="value")
    others = data.draw(
        st.fixed_dictionaries({}, optional={k: v for k, v in VALID.items() if k != name}),
        label="valid options",
    )
    argv = _argv({**others, name: value}, how, tmp)
    code, err = _run(argv)
    _assert_one_line_naming(code, err, [name, "model_kwargs"], argv)
    figures("bad_input", f"invalid option ({how})")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=st.sampled_from(CONFLICTS),
    how=st.sampled_from(["flag", "set", "yaml"]),
    seed=st.integers(0, 99),
)
def test_conflicting_options_are_one_line(tmp, case, how, seed, figures):
    options, names = case
    argv = _argv({"seed": str(seed), **options}, how, tmp)
    code, err = _run(argv)
    _assert_one_line_naming(code, err, names, argv)
    figures("bad_input", f"conflicting options ({how})")


def test_valid_options_reach_training(tmp):
    """Control: the same machinery with valid options gets past every check."""
    for how in ("flag", "set", "yaml"):
        options = {"epochs": "2", "lr": "0.01", "image_size": "32", "progress": "none"}
        with pytest.raises(Reached):
            _run(_argv(options, how, tmp))


@pytest.mark.parametrize(
    "text,names",
    [
        ("epochs: [1, 2\n", ("config.yaml", "YAML")),  # not YAML
        ("- 1\n- 2\n", ("config.yaml", "mapping")),  # YAML, not a mapping
        ("epochs: 3\nepochs_: 4\n", ("epochs_",)),
        ("prog_image_size: 32\nprogressive: true\n", ("prog_image_size",)),
    ],
)
def test_broken_yaml_files(tmp, text, names):
    path = tmp / "config.yaml"
    path.write_text(text)
    code, err = _run(["train", "--config", str(path)])
    _assert_one_line_naming(code, err, names, text)


def test_missing_config_and_bad_flags(tmp):
    for argv, names in [
        (["train", "--config", str(tmp / "nope.yaml")], ("nope.yaml",)),
        (["train", "--no-such-flag"], ("--no-such-flag",)),
        (["train", "--set", "novalue"], ("--set",)),
        (["train", "--prog-image-size", "32"], ("--prog-image-size",)),
        (["train", "--resume", str(tmp / "no-run")], ("no-run",)),
    ]:
        code, err = _run(argv)
        _assert_one_line_naming(code, err, names, argv)


def _image(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


@pytest.mark.parametrize("layout", ["missing", "no_classes", "one_class", "empty_class", "junk"])
def test_bad_data_folders_are_one_line_before_training(tmp_path, layout, figures):
    data = tmp_path / "data"
    if layout != "missing":
        data.mkdir()
    if layout == "one_class":
        _image(data / "cat" / "a.png")
    if layout == "empty_class":
        _image(data / "cat" / "a.png")
        (data / "dog").mkdir()
    if layout == "junk":  # class folders holding only files that are not images
        for cls in ("cat", "dog"):
            (data / cls).mkdir()
            (data / cls / "notes.txt").write_text("hello")
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--progress", "none"]
    code, err = cli_in_process(argv)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(data) in err
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()
    figures("bad_input", f"bad data folder: {layout}")
