"""`effnet train` flags come from TrainConfig's fields: every option has one, and every flag of
the hand-written parser before (as `effnet train --help` listed them) still exists unchanged."""

import argparse
import dataclasses

import pytest

from effnet.cli import build_parser
from effnet.cli import train as cli_train
from effnet.training.config import FIELDS, TrainConfig

# (flag, dest, choices, action, type) of every option of `effnet train --help` before the flags
# were generated; each must stay as it was.
FLAGS_BEFORE = [
    ("--config", "config", None, "store", None),
    ("--out", "out", None, "store", None),
    ("--resume", "resume", None, "store", None),
    ("--seed", "seed", None, "store", "int"),
    ("--device", "device", None, "store", None),
    ("--workers", "workers", None, "store", "int"),
    ("--threads", "threads", None, "store", "int"),
    ("--checkpoint-every", "checkpoint_every", None, "store", "int"),
    ("--progress", "progress", ("auto", "bar", "log", "none"), "store", None),
    ("--json", "json", None, "store_true", None),
    ("--set", "set", None, "append", "_kv"),
    ("--data", "data", None, "store", None),
    ("--val-fraction", "val_fraction", None, "store", "float"),
    ("--strict", "strict", None, "store_true", None),
    ("--max-train-samples", "max_train_samples", None, "store", "int"),
    ("--model", "model", None, "store", None),
    ("--pretrained", "pretrained", None, "store", None),
    ("--image-size", "image_size", None, "store", "int"),
    ("--width-mult", "width_mult", None, "store", "float"),
    ("--depth-mult", "depth_mult", None, "store", "float"),
    ("--drop-rate", "drop_rate", None, "store", "float"),
    ("--drop-path-rate", "drop_path_rate", None, "store", "float"),
    ("--freeze-epochs", "freeze_epochs", None, "store", "int"),
    ("--freeze-bn", "freeze_bn", None, "store_true", None),
    ("--sync-bn", "sync_bn", None, "store_true", None),
    ("--epochs", "epochs", None, "store", "int"),
    ("--batch-size", "batch_size", None, "store", "int"),
    ("--lr", "lr", None, "store", "float"),
    ("--optimizer", "optimizer", ("rmsprop", "sgd", "adamw"), "store", None),
    ("--weight-decay", "weight_decay", None, "store", "float"),
    ("--schedule", "schedule", ("cosine", "exponential", "constant"), "store", None),
    ("--warmup-epochs", "warmup_epochs", None, "store", "float"),
    ("--label-smoothing", "label_smoothing", None, "store", "float"),
    ("--clip-grad", "clip_grad", None, "store", "float"),
    ("--ema-decay", "ema_decay", None, "store", "float"),
    ("--amp", "amp", ("none", "bf16", "fp16"), "store", None),
    ("--channels-last", "channels_last", None, "store_true", None),
    ("--grad-checkpointing", "grad_checkpointing", None, "store_true", None),
    ("--activation-recompute", "activation_recompute", None, "store_true", None),
    ("--compile", "compile", None, "store_true", None),
    ("--augment", "augment", ("none", "basic", "randaugment", "autoaugment"), "store", None),
    ("--mixup", "mixup_alpha", None, "store", "float"),
    ("--cutmix", "cutmix_alpha", None, "store", "float"),
    ("--progressive", "progressive", None, "store_true", None),
    ("--stages", "stages", None, "store", "int"),
    ("--prog-image-size", "prog_image_size", None, "store", "_pair"),
    ("--prog-magnitude", "prog_magnitude", None, "store", "_pair"),
    ("--prog-mixup", "prog_mixup", None, "store", "_pair"),
    ("--prog-dropout", "prog_dropout", None, "store", "_pair"),
]
ACTIONS = {
    "store": argparse._StoreAction,
    "store_true": argparse._StoreTrueAction,
    "append": argparse._AppendAction,
}


def _train_parser(cls=None):
    if cls is None:
        sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices["train"]
    p = argparse.ArgumentParser()
    cli_train.add_config_flags(p, cls)
    return p


def _actions(parser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _overrides(*argv):
    return cli_train.overrides_from(_train_parser().parse_args(list(argv)))


@pytest.mark.parametrize("flag,dest,choices,action,type_name", FLAGS_BEFORE)
def test_every_earlier_flag_is_unchanged(flag, dest, choices, action, type_name):
    a = _actions(_train_parser())[flag]
    assert a.dest == dest
    assert (tuple(a.choices) if a.choices else None) == choices
    assert type(a) is ACTIONS[action]
    assert (a.type.__name__ if a.type else None) == type_name
    if action != "append" and dest != "json":
        assert a.default is None  # an unset flag never overrides the config file


def test_every_config_field_has_a_flag_and_set():
    dests = {a.dest for a in _actions(_train_parser()).values()}
    assert set(FIELDS) <= dests, sorted(set(FIELDS) - dests)
    for name in FIELDS:  # --set reaches every option too
        assert _overrides("--set", f"{name}=7") == {name: 7}


def test_flags_parse_to_config_values():
    over = _overrides(
        *("--mixup", "0.2", "--prog-image-size", "32,48", "--strict", "--epochs", "3"),
        *("--model-kwargs", "{bn_momentum: 0.1}", "--width-mult", "0.5", "--lr-per-256"),
        *("--crop-pct", "0.9", "--hflip", "0", "--optimizer", "sgd"),
    )
    assert over == {
        "mixup_alpha": 0.2,
        "prog_image_size": [32, 48],
        "strict": True,
        "epochs": 3,
        "model_kwargs": {"bn_momentum": 0.1, "width_mult": 0.5},
        "lr_per_256": True,
        "crop_pct": 0.9,
        "hflip": 0.0,
        "optimizer": "sgd",
    }
    assert _overrides() == {}
    # --set wins over a flag; the shorthands merge into --set's model_kwargs
    over = _overrides("--lr", "0.1", "--set", "lr=0.2", "--set", "model_kwargs={act: relu}")
    assert over == {"lr": 0.2, "model_kwargs": {"act": "relu"}}
    assert _overrides("--depth-mult", "0.5", "--set", "model_kwargs={act: relu}") == {
        "model_kwargs": {"act": "relu", "depth_mult": 0.5}
    }
    with pytest.raises(SystemExit):
        _train_parser().parse_args(["--optimizer", "adam"])


def test_help_groups_and_texts_come_from_the_config_source():
    helps, sections = cli_train.field_comments(TrainConfig)
    assert sections["data"] == sections["workers"] == "data"
    assert sections["epochs"] == "optimisation" and sections["out"] == "machinery"
    assert helps["drop_path_rate"] == "stochastic depth"
    a = _actions(_train_parser())
    assert a["--sync-bn"].help == helps["sync_bn"]
    assert a["--freeze-bn"].help == "keep BatchNorm statistics frozen (fine-tuning)"  # the table
    assert "10%% slower" in a["--activation-recompute"].help  # % escaped for argparse
    text = _train_parser().format_help()
    assert "\nmachinery:\n" in text and "--activation-recompute" in text and "10% slower" in text


@dataclasses.dataclass
class _Extended(TrainConfig):
    # new section
    new_ratio: float = 0.5  # a ratio for something new
    new_switch: bool = False
    new_on: bool = True  # on unless --no-new-on
    new_pair: tuple[int, int] | None = None
    new_list: list[int] = dataclasses.field(default_factory=list)


def test_a_new_config_field_gets_a_flag():
    p = _train_parser(_Extended)
    a = _actions(p)
    assert a["--new-ratio"].type is float and a["--new-ratio"].help == "a ratio for something new"
    group = next(g for g in p._action_groups if a["--new-ratio"] in g._group_actions)
    assert group.title == "new section"
    argv = ["--new-ratio", "0.25", "--new-switch", "--no-new-on", "--new-pair", "1,2"]
    args = p.parse_args([*argv, "--new-list", "[3, 4]", "--epochs", "2"])
    assert (args.new_ratio, args.new_switch, args.new_on) == (0.25, True, False)
    assert (args.new_pair, args.new_list, args.epochs) == ([1, 2], [3, 4], 2)
    assert p.parse_args([]).new_on is None  # unset: the config decides
