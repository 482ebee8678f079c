"""`effnet search` / `effnet sweep` whose every run sits at chance accuracy say that they learned
nothing (what chance is, what the best run got, what to change) instead of announcing a "best"
point; one run clearly above chance keeps the usual result. Training is mocked (fast)."""

import json

import pytest

from effnet.cli import main
from effnet.lab import search as search_mod
from effnet.lab import sweep as sweep_mod
from effnet.lab.experiment import base_config, chance_level
from effnet.lab.search import search
from effnet.lab.sweep import sweep

# digits: 10 classes; 60 validation images -> chance 10%, noise 3 sigma = 11.6 points
TINY = {"image_size": 32, "max_train_samples": 120, "max_val_samples": 60, "threads": 1}
TINY_CLI = ["--image-size", "32", "--max-train-samples", "120", "--threads", "1"]
SEARCH = {"budget": 1, "step": 0.25, "tolerance": 0.25, "max_candidates": 3}
SEARCH_CLI = ["--budget", "1", "--step", "0.25", "--tolerance", "0.25", "--max-candidates", "3"]
ADVICE = ("--budget", "--image-size", "learning rate", "--max-train-samples", "labels")


def fake_training(monkeypatch, scores):
    """Each trained run scores the next of ``scores`` (top-1 %), in the order trained."""
    it = iter(scores)

    def train_candidate(base, depth, width, resolution, run_dir, **overrides):
        return {
            "best_top1": next(it),
            "macs": int(1e6 * depth * width**2 * resolution**2),
            "params": 1000,
            "image_size": round(base.image_size * resolution),
            "wall_time_s": 0.1,
            "run_dir": str(run_dir),
            "best_epoch": 1,
        }

    monkeypatch.setattr(search_mod, "train_candidate", train_candidate)
    monkeypatch.setattr(sweep_mod, "train_candidate", train_candidate)


def test_chance_level_uses_classes_and_validation_size():
    base = base_config(None, data="digits", **TINY)
    level = chance_level(base, [10.0, 21.0])
    assert (level["classes"], level["val_images"], level["chance_top1"]) == (10, 60, 10.0)
    assert level["noise_top1"] == pytest.approx(300 * (0.09 / 60) ** 0.5, abs=1e-3)
    assert level["learned_nothing"] and level["best_top1"] == 21.0
    assert not chance_level(base, [10.0, 23.0])["learned_nothing"]  # beyond the noise
    # More validation images, less noise: 16% is a signal on 359 images.
    full = base_config(None, data="digits", image_size=32, threads=1)
    assert not chance_level(full, [16.0])["learned_nothing"]


def test_search_at_chance_warns_instead_of_announcing_a_best(tmp_path, monkeypatch, capsys):
    fake_training(monkeypatch, [10.0, 13.33, 8.33])
    logged = []
    res = search("digits", out=tmp_path / "api", log=logged.append, **SEARCH, **TINY)
    assert res["finished"] == 3 and res["chance"]["learned_nothing"]
    warning = res["warning"]
    assert warning in logged and "learned nothing" in warning
    assert "13.33%" in warning and "chance is 10.00% for 10 classes" in warning
    assert "60 validation images" in warning and all(a in warning for a in ADVICE)
    saved = json.loads((tmp_path / "api" / "search.json").read_text())
    assert saved["warning"] == warning and saved["chance"]["learned_nothing"]

    fake_training(monkeypatch, [10.0, 13.33, 8.33])
    argv = ["search", "--out", str(tmp_path / "cli"), *SEARCH_CLI, *TINY_CLI]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "learned nothing" in out and "best: none" in out
    assert "best: alpha" not in out


def test_search_that_learned_keeps_its_best(tmp_path, monkeypatch, capsys):
    fake_training(monkeypatch, [10.0, 85.0, 12.0])
    res = search("digits", out=tmp_path / "api", log=lambda m: None, **SEARCH, **TINY)
    assert res["warning"] is None and not res["chance"]["learned_nothing"]
    assert res["best"]["top1"] == 85.0

    fake_training(monkeypatch, [10.0, 85.0, 12.0])
    assert main(["search", "--out", str(tmp_path / "cli"), *SEARCH_CLI, *TINY_CLI]) == 0
    out = capsys.readouterr().out
    assert "best: alpha" in out and "top-1 85.00%" in out and "learned nothing" not in out


@pytest.mark.parametrize("scores,warns", [([10.0, 15.0, 6.67], True), ([10.0, 60.0, 70.0], False)])
def test_sweep_at_chance_warns(tmp_path, monkeypatch, scores, warns):
    fake_training(monkeypatch, scores)
    logged = []
    res = sweep(
        "digits",
        dimensions=["width"],
        values={"width": [1.0, 1.5, 2.0]},
        budget=1,
        out=tmp_path,
        log=logged.append,
        **TINY,
    )
    assert res["chance"]["learned_nothing"] is warns
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["warning"] == res["warning"]
    if warns:
        assert res["warning"] in logged and "its curves are noise" in res["warning"]
        assert "15.00%" in res["warning"] and all(a in res["warning"] for a in ADVICE)
    else:
        assert res["warning"] is None and not any("learned nothing" in m for m in logged)
