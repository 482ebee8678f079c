"""A run folder written by an earlier effnet (main at cabc358: tiny B0 on digits, killed after
epoch 1 of 2) resumes to completion with this one, and evaluates."""

import json
import shutil
from pathlib import Path

import torch

import effnet
from effnet.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run_v0_1"


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


def test_old_run_resumes_to_completion_and_evaluates(tmp_path, capsys):
    run = tmp_path / "run_v0_1"
    shutil.copytree(FIXTURE, run)
    before = _rows(run)
    assert [r["epoch"] for r in before] == [1]
    assert main(["train", "--resume", str(run), "--progress", "none", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2] and summary["epochs"] == 2
    assert rows[0] == before[0]  # the earlier epoch's row is kept as it was written
    assert summary["run_dir"] == str(run)  # not the folder the run was first written to
    ckpt = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["batch"] == 0 and len(ckpt["history"]) == 2
    for name in ("model_last.safetensors", "model_best.safetensors", "summary.json", "curves.png"):
        assert (run / name).is_file(), name
    # the finished run loads and evaluates like any other
    model = effnet.load_model(run)
    assert model.class_names == [str(i) for i in range(10)]
    out = tmp_path / "eval"
    assert main(["eval", str(run), "--data", "digits", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["images"] == 359 and sum(map(sum, res["confusion"])) == 359
    assert 0 <= res["top1"] <= 100 and len(list(out.glob("confusion-*.png"))) == 1
    # the fixture itself is untouched
    assert [r["epoch"] for r in _rows(FIXTURE)] == [1]
