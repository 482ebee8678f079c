"""SIGTERM / SIGINT save and exit with a clear message; two runs never share a run folder."""

import fcntl
import os
import signal
import subprocess
import time

import pytest
from reliability_helpers import (
    TINY_RUN,
    assert_same_run,
    cli_train_argv,
    effnet_cli,
    start_training,
    train_in_child,
    unreadable_run_files,
)

import effnet

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_and_exits_cleanly(tmp_path, reference_runs, sig, figures):
    run = tmp_path / "run"
    proc = effnet_cli(
        cli_train_argv({**TINY_RUN, "out": str(run)}),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    lines = []
    for line in proc.stderr:  # the header line comes once the signal handlers are in place
        lines.append(line)
        if line.startswith("effnet train:"):
            break
    time.sleep(0.5)  # somewhere inside the first epoch
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    err = "".join(lines) + err
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert f"{sig.name} received: saved" in last and f"--resume {run}" in last, last
    assert not unreadable_run_files(run)
    assert train_in_child({}, resume=run) == 0
    assert_same_run(reference_runs["tiny"], run)
    figures("crash_point", f"{sig.name} then resume")
    figures("fault", sig.name)


def _locked(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _wait_for(condition, proc, what):
    deadline = time.monotonic() + 300
    while not condition():
        assert time.monotonic() < deadline and proc.is_alive(), f"the first run never {what}"
        time.sleep(0.02)


def test_second_run_on_same_folder_is_refused(tmp_path, reference_runs, figures):
    """The first run is paused (SIGSTOP) while the others try, so the timing cannot vary."""
    run = tmp_path / "run"
    first = start_training({**TINY_RUN, "out": str(run)})
    refusals = []

    def refused(attempt):
        os.kill(first.pid, signal.SIGSTOP)
        try:
            with pytest.raises(ValueError) as e:
                attempt()
            refusals.append(str(e.value))
        finally:
            os.kill(first.pid, signal.SIGCONT)

    _wait_for(lambda: (run / ".lock").exists() and _locked(run / ".lock"), first, "took the lock")
    refused(lambda: effnet.train(**{**TINY_RUN, "out": str(run)}))  # a fresh run on its --out
    _wait_for(lambda: (run / "checkpoint_last.pt").exists(), first, "wrote a checkpoint")
    refused(lambda: effnet.train(resume=run))  # a resume while the first is still running
    first.join(300)
    assert first.exitcode == 0
    for msg in refusals:
        assert "\n" not in msg and str(run) in msg
    assert "in use by another training process" in refusals[-1]
    assert_same_run(reference_runs["tiny"], run)  # the first run was not disturbed
    figures("fault", "two runs on one folder", count=len(refusals))
    figures("files_lost", "two runs on one folder", count=0)
