"""SIGKILL anywhere in a run, resume, and the run ends exactly as if nothing had happened.

Each test kills a tiny training run (digits, 32 px, quarter-width B0, 2-3 epochs, a checkpoint
every 3 steps) at one named point via ``EFFNET_FAULT`` (``effnet.training.faults``), checks that
every file the run had written is still loadable, resumes it with ``--resume`` and compares the
per-epoch metrics and the final weights with one uninterrupted run of the same config and seed.
"""

import pytest
import torch
from reliability_helpers import (
    PROGRESSIVE_RUN,
    TINY_RUN,
    assert_same_run,
    train_in_child,
    unreadable_run_files,
)

pytestmark = pytest.mark.slow
SIGKILL_EXIT = -9  # multiprocessing's exit code for a child killed by signal 9


# (fault point, n-th hit, config); hits are counted from the start of the killed process.
# 8 steps per epoch, checkpoints at steps 3 and 6 and at each epoch end.
CRASHES = [
    ("data", 2, "tiny"),  # before any checkpoint: the resume starts from scratch
    ("data", 5, "tiny"),
    ("forward", 11, "tiny"),  # epoch 2, after the epoch-1 checkpoint
    ("backward", 4, "tiny"),
    ("optimizer_step", 7, "tiny"),
    ("ema_update", 14, "tiny"),
    ("eval", 1, "tiny"),  # raw-weights evaluation of epoch 1
    ("eval", 2, "tiny"),  # EMA evaluation of epoch 1
    ("checkpoint_write", 1, "tiny"),  # temp file written, before the rename
    ("checkpoint_write", 3, "tiny"),  # the epoch-end checkpoint
    ("epoch_end", 1, "tiny"),
    ("stage_boundary", 1, "progressive"),
    ("stage_boundary", 2, "progressive"),
    ("forward", 20, "progressive"),  # inside stage 3, larger images
]


@pytest.mark.parametrize("point,hit,config", CRASHES, ids=[f"{p}:{n}-{c}" for p, n, c in CRASHES])
def test_sigkill_then_resume_matches_uninterrupted(
    tmp_path, reference_runs, point, hit, config, figures
):
    base = TINY_RUN if config == "tiny" else PROGRESSIVE_RUN
    run = tmp_path / "run"
    assert train_in_child({**base, "out": str(run)}, fault=f"{point}:{hit}") == SIGKILL_EXIT
    lost = unreadable_run_files(run)
    assert not lost, f"files unreadable after SIGKILL at {point}:{hit}: {lost}"
    figures("files_lost", f"{point}:{hit}", count=len(lost))
    temps = list(run.glob(".*.tmp"))
    if point == "checkpoint_write":  # killed between the temp file and the rename
        assert temps, "expected the half-finished temp file of the killed write"
    if (run / "checkpoint_last.pt").exists():
        assert train_in_child({}, resume=run) == 0
    else:  # killed before the first checkpoint: nothing to resume, start again
        assert train_in_child({**base, "out": str(run)}) == 0
    assert not list(run.glob(".*.tmp")), "stale temp files left in the run folder"
    assert_same_run(reference_runs[config], run)
    figures("crash_point", f"SIGKILL at {point}:{hit} ({config})")
    figures("fault", f"SIGKILL at {point}")


def test_kill_during_resume_then_resume_again(tmp_path, reference_runs, figures):
    run = tmp_path / "run"
    assert train_in_child({**TINY_RUN, "out": str(run)}, fault="forward:5") == SIGKILL_EXIT
    assert train_in_child({}, resume=run, fault="after_resume:1") == SIGKILL_EXIT
    assert not unreadable_run_files(run)
    assert train_in_child({}, resume=run, fault="optimizer_step:6") == SIGKILL_EXIT
    assert train_in_child({}, resume=run) == 0
    assert_same_run(reference_runs["tiny"], run)
    figures("crash_point", "SIGKILL at after_resume:1, then optimizer_step (tiny)")
    figures("fault", "SIGKILL at after_resume")


def test_resumed_checkpoint_is_sealed(reference_runs):
    raw = torch.load(reference_runs["tiny"] / "checkpoint_last.pt", weights_only=True)
    assert len(raw["_sha256"]) == 64
