"""The README's and docs' ``effnet`` commands run as written (issue 14).

Every command is read from the Markdown files (tests/doc_commands.py). Each one that a user can
paste is parsed by effnet's own parser and then run in a workspace where the documented paths
exist: the quick ones in the default suite, the long ones (training, searches, benchmarks) under
the slow marker, with a few flags appended that make them small (fewer epochs and images) but
leave the documented flags as written. A usage synopsis is checked flag by flag against the parser.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from doc_commands import DocCommand, doc_commands, synopsis_parts
from PIL import Image

from effnet.cli import build_parser, main
from effnet.training.config import resolve_config

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run_v0_1"
COMMANDS = doc_commands()

# Long commands run under the slow marker with these flags appended (argparse keeps the last
# value of a repeated flag, so they shrink the run without removing anything the docs wrote).
TINY = {
    "train": ["--epochs", "2", "--max-train-samples", "16", "--max-val-samples", "8",
              "--batch-size", "8", "--workers", "0", "--progress", "none"],
    "search": ["--max-train-samples", "128", "--image-size", "32", "--max-candidates", "2",
               "--budget", "1"],
    "sweep": ["--max-train-samples", "128", "--budget", "1", "--seeds", "1", "--image-size", "32"],
    "nas": ["--trials", "2", "--epochs", "1", "--image-size", "32", "--max-train-samples", "48",
            "--batch-size", "16"],
    "benchmark": ["--reps", "1", "--warmup", "1", "--batch-size", "2", "--image-size", "64",
                  "--no-memory"],
}
SLOW = set(TINY)


def _tiny(cmd: DocCommand) -> list[str]:
    """The flags that make ``cmd`` small. A resumed run keeps its own config (effnet refuses
    changes), so it only gets quiet progress; a progressive config gets 2 stages in 2 epochs."""
    if "--resume" in cmd.argv:
        return ["--progress", "none"]
    extra = ["--stages", "2"] if "v2s_progressive" in cmd.argv else []
    return TINY.get(cmd.command, []) + extra


def _of_kind(*kinds: str) -> list[DocCommand]:
    return [c for c in COMMANDS if c.kind in kinds]


def _ids(cmd: DocCommand) -> str:
    return f"{cmd.where}:{' '.join(cmd.argv)[:60]}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBPARSERS = _subparsers(build_parser())


def test_extraction_finds_the_documented_commands():
    """The extractor sees the quick start and the docs' examples (it could silently find none)."""
    concrete = {" ".join(c.argv) for c in _of_kind("concrete")}
    assert "train" in concrete  # the quick start's main job
    assert any(c.startswith("export efficientnet_lite0 --pretrained pip") for c in concrete)
    assert len(_of_kind("concrete")) >= 35
    files = {c.file for c in COMMANDS}
    assert {"README.md", "docs/training.md", "docs/lab.md", "docs/export.md"} <= files


@pytest.mark.parametrize("cmd", _of_kind("name", "synopsis", "concrete"), ids=_ids)
def test_command_exists(cmd):
    if cmd.command is not None:
        assert cmd.command in SUBPARSERS, f"{cmd.where}: no command `effnet {cmd.command}`"


@pytest.mark.parametrize("cmd", _of_kind("synopsis"), ids=_ids)
def test_synopsis_flags_and_choices_exist(cmd):
    parser = SUBPARSERS[cmd.command]
    options = {s: a for a in parser._actions for s in a.option_strings}
    flags, choices = synopsis_parts(cmd)
    for flag in flags:
        assert flag in options, f"{cmd.where}: `effnet {cmd.command}` has no {flag}"
    for flag, values in choices.items():
        allowed = options[flag].choices
        assert allowed is not None, f"{cmd.where}: {flag} takes no fixed choices"
        assert set(values) <= set(allowed), f"{cmd.where}: {flag} {values} vs {allowed}"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = SUBPARSERS[argv[0]]
    try:
        return parser.parse_args(argv[1:])  # effnet's command parsers take options anywhere
    except SystemExit as e:  # argparse printed the reason; name the command in the failure
        raise AssertionError(f"`effnet {' '.join(argv)}` does not parse") from e


@pytest.mark.parametrize("cmd", _of_kind("concrete"), ids=_ids)
def test_concrete_command_parses_and_resolves(cmd, workspace):
    if not cmd.argv:
        return
    args = _parse(cmd.resolved())
    for key in ("data",):
        value = getattr(args, key, None)
        if value and value != "digits":
            assert (workspace / value).exists(), f"{cmd.where}: --{key} {value} is no placeholder"
    config = getattr(args, "config", None)
    if config:
        resolve_config(config)  # a named config ships inside the package and validates


# ---------------------------------------------------------------------------- the workspace


def _photo(name: str, size=(96, 80), seed=0) -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    img = getattr(skimage_data, name)()
    pil = Image.fromarray(img if img.ndim == 3 else np.stack([img] * 3, -1))
    return pil.convert("RGB").resize(size)


def _class_folder(root: Path, n: int = 6) -> None:
    rng = np.random.default_rng(0)
    for c, base in enumerate(("red", "blue")):
        d = root / base
        d.mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            arr[..., c * 2] = 255
            Image.fromarray(arr).save(d / f"{i}.png")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder holding every file the docs' commands name (photo.jpg, runs/RUN, ...)."""
    ws = tmp_path_factory.mktemp("docs_ws")
    shutil.copytree(FIXTURE_RUN, ws / "runs" / "RUN")
    shutil.copy(FIXTURE_RUN / "model_best.safetensors", ws / "model.safetensors")
    _class_folder(ws / "flowers")
    _class_folder(ws / "imagenet" / "train")
    _class_folder(ws / "imagenet" / "val", n=2)
    (ws / "photos").mkdir()
    _photo("chelsea").save(ws / "photo.jpg")
    _photo("chelsea").save(ws / "cat.jpg")
    _photo("chelsea").save(ws / "chelsea.png")
    _photo("coffee").save(ws / "coffee.png")
    _photo("coffee").save(ws / "coffee.jpg")
    _photo("astronaut").save(ws / "photo.png")
    _photo("rocket").save(ws / "photos" / "rocket.jpg")
    _photo("coffee", (64, 64)).save(ws / "photos" / "coffee.png")
    return ws


# Files some commands read that another documented command writes.
PRODUCERS = {"lite0.onnx": "docs/export.md"}


def _run(argv: list[str], ws: Path, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(ws)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


def _needs(cmd: DocCommand, ws: Path, monkeypatch) -> None:
    for name, source in PRODUCERS.items():
        if name in cmd.argv and not (ws / name).exists():
            producer = next(
                c for c in _of_kind("concrete")
                if c.file == source and c.command == "export" and name in c.argv
            )
            assert _run(producer.resolved(), ws, monkeypatch)[0] == 0


def _check_run(cmd: DocCommand, ws: Path, monkeypatch) -> None:
    _needs(cmd, ws, monkeypatch)
    rc, out = _run(cmd.resolved(_tiny(cmd)), ws, monkeypatch)
    assert rc == 0, f"{cmd.where}: `{cmd.text}` exited {rc}"
    if cmd.redirect or "--json" in cmd.argv:
        json.loads(out)  # the documented JSON output is JSON
    if "--output" in cmd.argv:
        assert (ws / cmd.argv[cmd.argv.index("--output") + 1]).is_file()


def _runnable(slow: bool) -> list:
    return [c for c in _of_kind("concrete") if (c.command in SLOW) == slow]


@pytest.mark.parametrize("cmd", _runnable(slow=False), ids=_ids)
def test_quick_command_runs(cmd, workspace, monkeypatch):
    _check_run(cmd, workspace, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("cmd", _runnable(slow=True), ids=_ids)
def test_long_command_runs_on_tiny_settings(cmd, workspace, monkeypatch):
    _check_run(cmd, workspace, monkeypatch)
