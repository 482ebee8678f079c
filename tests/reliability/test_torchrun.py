"""Under torchrun, one rank killed makes the others exit within seconds, and the run resumes."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_helpers import TINY_RUN, cli_train_argv, run_metrics, unreadable_run_files

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _torchrun(argv, **env):
    return subprocess.Popen(
        [*TORCHRUN, "-m", "effnet", *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_one_rank_killed_others_exit_then_resume(tmp_path, figures):
    run = tmp_path / "run"
    mark = tmp_path / "killed_at"
    config = {**TINY_RUN, "out": str(run)}
    # Rank 1 dies mid-epoch 2 (after the epoch-1 checkpoint), inside DDP's gradient all-reduce.
    proc = _torchrun(
        cli_train_argv(config),
        EFFNET_FAULT="backward:11",
        EFFNET_FAULT_RANK="1",
        EFFNET_DIST_TIMEOUT="30",
        EFFNET_FAULT_MARK=str(mark),
    )
    log, _ = proc.communicate(timeout=600)
    exited_at = time.time()
    assert proc.returncode != 0, log
    # The fault wrote one line, from one process, just before the SIGKILL.
    marks = mark.read_text().split("\n")[:-1] if mark.exists() else []
    assert len(marks) == 1, log
    killed_at = float(marks[0].split()[0])
    # The root cause torchrun reports is our SIGKILL of rank 1, not some other failure.
    root_cause = log[log.index("Root Cause") :]
    assert "rank      : 1" in root_cause and "exitcode  : -9" in root_cause, log
    stop_s = exited_at - killed_at
    # No hang: the survivors and torchrun are gone well before the collective timeout (30 s).
    assert stop_s < 30, f"survivors took {stop_s:.1f}s to exit\n{log}"
    assert not unreadable_run_files(run)
    assert [r["epoch"] for r in run_metrics(run)] == [1]  # killed in epoch 2, as planned
    figures("measure", "torchrun: seconds from rank kill to exit", value=round(stop_s, 2))
    done = _torchrun(["train", "--resume", str(run)])
    log, _ = done.communicate(timeout=600)
    assert done.returncode == 0, log
    assert "resuming" in log
    assert [r["epoch"] for r in run_metrics(run)] == [1, 2]
    assert not unreadable_run_files(run)
    figures("crash_point", "torchrun: SIGKILL of rank 1 at backward:11, then resume")
    figures("fault", "SIGKILL of one torchrun rank")
