import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from effnet.cli import main
from effnet.lab.search import grid, search, select

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = {"image_size": 32, "max_train_samples": 120, "max_val_samples": 60, "threads": 1}
TINY_CLI = ["--image-size", "32", "--max-train-samples", "120", "--threads", "1"]


def test_grid_points_satisfy_constraint():
    pts = grid(step=0.05, max_coef=2.0, target=2.0, tolerance=0.05)
    assert len(pts) > 20
    for a, b, g in pts:
        assert min(a, b, g) >= 1.0
        assert abs(a * b * b * g * g - 2.0) <= 0.05 + 1e-9
    assert (1.2, 1.1, 1.15) not in pts  # 1.92: outside 0.05 ...
    assert (1.2, 1.1, 1.15) in grid(step=0.05, tolerance=0.1)  # ... the paper's pick within 0.1
    assert len(select(pts, 5)) == 5 and select(pts, 5) == select(pts, 5)


def test_no_grid_point_is_an_error():
    # Coefficients {1, 1.7} only give 1, 1.7, 2.89, ...: nothing near 2.
    with pytest.raises(ValueError, match="no grid point satisfies"):
        grid(step=0.7, max_coef=1.7, tolerance=0.05)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--budget", "0"], "budget must be a whole number of epochs >= 1, got 0"),
        (["--step", "0.7", "--max-coef", "1.7", "--tolerance", "0.05"], "no grid point"),
        (["--workers", "0"], "workers must be an integer >= 1"),
        (["--storage", "postgresql://u:x@127.0.0.1:1/db"], "port 1 failed: Connection refused"),
    ],
)
def test_cli_bad_input_one_line(tmp_path, capsys, args, msg):
    assert main(["search", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and msg in err
    assert not (tmp_path / "search.db").exists()  # rejected before any work


def test_small_search_ranks_every_candidate(tmp_path):
    res = search(
        "digits",
        out=tmp_path,
        budget=1,
        step=0.25,
        tolerance=0.25,
        max_candidates=2,
        log=lambda m: None,
        **TINY,
    )
    assert res["finished"] == res["candidates"] == 2
    saved = json.loads((tmp_path / "search.json").read_text())
    assert saved["ranking"] == res["ranking"]
    tops = [r["top1"] for r in res["ranking"]]
    assert tops == sorted(tops, reverse=True) and res["best"] == res["ranking"][0]
    for r in res["ranking"]:
        assert abs(r["alpha"] * r["beta"] ** 2 * r["gamma"] ** 2 - 2) <= 0.25
        assert r["macs"] > 0 and 0 <= r["top1"] <= 100
        assert Path(r["run_dir"], "summary.json").is_file()
    with Image.open(tmp_path / "search.png") as im:
        assert im.size == (800, 500)
    # Re-running the finished search trains nothing and returns the same ranking.
    again = search(
        "digits",
        out=tmp_path,
        budget=1,
        step=0.25,
        tolerance=0.25,
        max_candidates=2,
        log=lambda m: None,
        **TINY,
    )
    assert again["ranking"] == res["ranking"]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def _search_cmd(out, *extra):
    grid = ["--budget", "1", "--step", "0.25", "--tolerance", "0.25"]
    return [sys.executable, "-m", "effnet", "search", *grid, "--out", str(out), *extra, *TINY_CLI]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_search_resumes_without_redoing_trials(tmp_path, sig):
    cmd = _search_cmd(tmp_path, "--max-candidates", "3")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    first, running = [], []
    # Signal while a second trial trains (not in the instant between two trials).
    while time.time() < deadline and not (first and running):
        first = list(tmp_path.glob("trials/*/*/summary.json"))
        running = [
            p
            for p in tmp_path.glob("trials/*/*/config.json")
            if not (p.parent / "summary.json").exists()
        ]
        time.sleep(0.2)
    proc.send_signal(sig)
    out = proc.communicate()[0].decode()
    if sig == signal.SIGINT:  # Ctrl-C: one clear line, the running trial saved its checkpoint
        assert proc.returncode == 130, out[-2000:]
        assert "SIGINT received; finished trials are kept" in out
    assert first, "no trial finished before the deadline"
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.glob("trials/*/*/summary.json")}
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for p, t in stamp.items():  # finished before the kill: read back, not retrained
        assert p.stat().st_mtime_ns == t
    res = json.loads((tmp_path / "search.json").read_text())
    assert res["finished"] == 3
    keys = {(x["alpha"], x["beta"], x["gamma"]) for x in res["ranking"]}
    assert len(keys) == 3
    import optuna

    study = optuna.load_study(study_name=res["study"], storage=res["storage"])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3  # no candidate trained twice


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    cmd = _search_cmd(tmp_path, "--max-candidates", "3", "--workers", "2")
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "search.json").read_text())
    assert res["finished"] == 3
    import optuna

    study = optuna.load_study(study_name=res["study"], storage=res["storage"])
    pids = {
        t.user_attrs["pid"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert len(pids) == 2  # both processes ran a trial
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3  # and no point was trained twice
