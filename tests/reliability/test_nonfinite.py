"""A NaN/inf in the inputs or the loss stops the run cleanly; the last good checkpoint is intact.

"Intact" is proven the strong way: resuming from it (without the poison) ends exactly where an
uninterrupted run ends.
"""

import pytest
import torch
from reliability_helpers import (
    TINY_RUN,
    assert_same_run,
    train_in_child,
    train_poisoned,
    unreadable_run_files,
)

from effnet.weights.serialize import read_model_file

# 8 steps per epoch, checkpoints every 3 steps: a poison at step 11 leaves the step-9 checkpoint.
CASES = [("nan_loss", 11), ("inf_loss", 11), ("nan_input", 11), ("nan_loss", 2)]


def _stop(tmp_path, kind, step):
    run = tmp_path / "run"
    message = tmp_path / "message.txt"
    assert train_poisoned({**TINY_RUN, "out": str(run)}, kind, step, message) == 3
    return run, message.read_text()


@pytest.mark.parametrize("kind", ["nan_loss"])
def test_nonfinite_loss_stops_with_one_line(tmp_path, kind, figures):
    run, msg = _stop(tmp_path, kind, 11)
    assert "\n" not in msg
    assert "loss became nan at epoch 2, step 3" in msg
    assert f"the last good checkpoint is {run / 'checkpoint_last.pt'}" in msg
    ckpt = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert ckpt["global_step"] == 9 and ckpt["epoch"] == 1 and ckpt["batch"] == 1
    state, _ = read_model_file(run / "checkpoint_last.pt")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not unreadable_run_files(run)
    figures("bad_input", "NaN loss")


@pytest.mark.slow
@pytest.mark.parametrize("kind,step", CASES, ids=[f"{k}@{s}" for k, s in CASES])
def test_resume_from_last_good_checkpoint_matches(tmp_path, reference_runs, kind, step, figures):
    run, msg = _stop(tmp_path, kind, step)
    assert "\n" not in msg and "loss became" in msg
    if step <= 3:  # before the first checkpoint: says so, and there is nothing to resume
        assert "no checkpoint was written yet" in msg
        assert not (run / "checkpoint_last.pt").exists()
        return
    assert not unreadable_run_files(run)
    assert train_in_child({}, resume=run) == 0
    assert_same_run(reference_runs["tiny"], run)
    figures("bad_input", f"{kind} at step {step}")
    figures("fault", f"non-finite: {kind}")
    figures("files_lost", f"{kind} at step {step}", count=0)
