"""Several workers on one study (issue 17, acceptance 2): `effnet nas` and `effnet search` share
trials through an Optuna RDB storage, SQLite or a real PostgreSQL server, and never train one
trial twice; a worker killed with SIGKILL leaves a study that the next run completes, the killed
genotype resuming from its checkpoint. Real processes and real databases, no mocks of optuna."""

from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from effnet.cli import main
from effnet.lab import nas_space
from effnet.lab.nas import BEST_SPEC, claim, make_sampler, open_study, trial_seed
from effnet.lab.search import rdb_storage, requeue_dead_trials

optuna = pytest.importorskip("optuna")
TrialState = optuna.trial.TrialState
REPO_ROOT = Path(__file__).resolve().parents[1]
NAS_TINY = ["--space", "v2", "--epochs", "1", "--image-size", "32", "--max-train-samples", "48"]
NAS_TINY += ["--batch-size", "16", "--threads", "1"]
QUEUED = 40  # trials two workers race for
DEAD_PID = 2**22 + 12345  # beyond pid_max's default: no such process
TRIAL_LINE = re.compile(r"^trial (\d+): ", re.M)  # a worker's line for each trial it trained


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def _nas_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "effnet", "nas", *NAS_TINY, "--out", str(out), *extra]


def _load(storage: str):
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


# -- the storage's read-check-write steps, raced by real processes -------------------------------


def _pop_all(url: str, start: float, queue) -> None:
    study = optuna.load_study(study_name="q", storage=rdb_storage(url))
    while time.time() < start:
        pass
    popped = []
    while True:
        trial = study.ask()  # pops a WAITING trial, else creates a new one
        if "fixed_params" not in study._storage.get_trial_system_attrs(trial._trial_id):
            break
        popped.append(trial.number)
        time.sleep(0.002)
    queue.put(popped)


def _race(target, url: str) -> list:
    ctx = mp.get_context("fork")
    queue, start = ctx.Queue(), time.time() + 1.0
    procs = [ctx.Process(target=target, args=(url, start, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    return got


def test_a_queued_trial_is_started_by_exactly_one_worker(tmp_path):
    # SQLite ignores optuna's SELECT ... FOR UPDATE: without BEGIN IMMEDIATE, two processes
    # both started 5-7% of 200 queued trials (measured with optuna 5.1).
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=rdb_storage(url))
    for i in range(QUEUED):
        study.enqueue_trial({"x": i})
    a, b = _race(_pop_all, url)
    assert not set(a) & set(b), "a queued trial was started by both workers"
    assert sorted(a + b) == list(range(QUEUED))


def _requeue(url: str, start: float, queue) -> None:
    study = optuna.load_study(study_name="q", storage=rdb_storage(url))
    while time.time() < start:
        pass
    try:
        queue.put(requeue_dead_trials(study, [], params_of=lambda t: dict(t.params) or None))
    except Exception as e:  # the failure is the test's message
        queue.put(f"{type(e).__name__}: {e}")


def test_a_dead_trial_is_queued_again_by_exactly_one_worker(tmp_path):
    # Before: the worker that lost the race crashed with UpdateFinishedTrialError, or (both
    # reading first) both queued the point, so a genotype was trained twice.
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=rdb_storage(url))
    owner = {"host": socket.gethostname(), "pid": DEAD_PID}
    x = optuna.distributions.IntDistribution(0, QUEUED)
    study.add_trials(
        optuna.trial.create_trial(
            state=TrialState.RUNNING, params={"x": i}, distributions={"x": x}, user_attrs=owner
        )
        for i in range(QUEUED)
    )
    failed = _race(_requeue, url)
    assert all(isinstance(n, int) for n in failed), failed
    assert sum(failed) == QUEUED  # each dead trial failed once, by one of the two
    queued = [
        t.system_attrs["fixed_params"]["x"] for t in study.get_trials(states=(TrialState.WAITING,))
    ]
    assert sorted(queued) == list(range(QUEUED))  # ... and queued once


def test_claim_admits_exactly_the_first_trials(tmp_path):
    study = open_study(f"sqlite:///{tmp_path / 's.db'}", "s", "random", 0)
    done = study.ask()
    study.tell(done, 1.0)  # 0 complete
    study.tell(study.ask(), state=TrialState.FAIL)  # 1 failed: frees its place
    study.enqueue_trial({"x": 1})  # 2 queued: holds a place
    late = study._storage.create_new_trial(study._study_id)  # 3 running, created last
    t3 = optuna.Trial(study, late)
    assert claim(study, t3, 3) and not claim(study, t3, 2)
    assert claim(study, optuna.Trial(study, done._trial_id), 1)  # below it: nothing


def test_each_trial_draws_its_own_genotype_under_one_seed():
    # Every worker runs the same command, so its sampler had the same seed: the first trial of
    # each drew the same genotype (same run folder, trained twice). Seeds now follow the trial.
    space = nas_space.get_space("v2")

    def draw(number: int, seed: int = 0) -> str:
        study = optuna.create_study(sampler=make_sampler("random", trial_seed(seed, number)))
        return nas_space.genotype_id(nas_space.sample(space, study.ask().suggest_categorical))

    assert len({draw(n) for n in range(6)}) == 6
    assert [draw(n) for n in range(3)] == [draw(n) for n in range(3)]  # repeatable
    assert draw(0, seed=1) != draw(0)


# -- workers on SQLite ---------------------------------------------------------------------------


def _two_workers(out: Path, storage: str | None, trials: int) -> tuple[list, set[int]]:
    cmd = _nas_cmd(out, "--trials", str(trials), *(["--storage", storage] if storage else []))
    procs = [
        subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=900)[0].decode() for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return logs, {p.pid for p in procs}


def _check_shared(study, out: Path, trials: int, pids: set[int], logs: list[str]) -> None:
    """Exactly ``trials`` complete trials, each genotype and run folder trained by one of the
    workers once, and no training run beyond them."""
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == trials, [(t.number, t.state) for t in study.trials]
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING))
    dirs = [t.user_attrs["run_dir"] for t in complete]
    assert len(set(dirs)) == trials  # no run folder (genotype) twice
    assert {t.user_attrs["pid"] for t in complete} == pids  # both workers trained
    trained = {str(p.parent) for p in out.glob("trials/*/*/config.json")}
    assert trained == set(dirs)  # nothing else was trained
    for d in dirs:
        assert Path(d, "summary.json").is_file()
    reported = [[int(n) for n in TRIAL_LINE.findall(log)] for log in logs]
    assert not set(reported[0]) & set(reported[1])  # no trial reported by both workers
    assert sorted(reported[0] + reported[1]) == sorted(t.number for t in complete)


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_never_train_the_same_trial(tmp_path):
    logs, pids = _two_workers(tmp_path, None, trials=4)
    study = _load(f"sqlite:///{tmp_path / 'nas.db'}")
    _check_shared(study, tmp_path, 4, pids, logs)
    assert len(json.loads((tmp_path / "trials.json").read_text())) == 4
    best = json.loads((tmp_path / "nas.json").read_text())["best"]
    spec = json.loads((tmp_path / BEST_SPEC).read_text())
    assert spec == json.loads(Path(best["run_dir"], "spec.json").read_text())
    # The same command again trains nothing, and writes the best spec file from the study even
    # where the run folders are not (a machine whose workers did not train the best trial).
    shutil.move(tmp_path / "trials", tmp_path / "elsewhere")
    (tmp_path / BEST_SPEC).unlink()
    before = len(study.trials)
    r = subprocess.run(_nas_cmd(tmp_path, "--trials", "4"), env=_env(), capture_output=True)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert not TRIAL_LINE.findall(r.stdout.decode()) and not (tmp_path / "trials").exists()
    assert len(_load(f"sqlite:///{tmp_path / 'nas.db'}").trials) == before
    assert json.loads((tmp_path / BEST_SPEC).read_text()) == spec


def _wait_mid_training(out: Path, proc: subprocess.Popen, deadline: float) -> Path:
    """A trial folder with a checkpoint and no summary, once another trial has finished."""
    while time.time() < deadline and proc.poll() is None:
        if list(out.glob("trials/*/*/summary.json")):
            for ckpt in out.glob("trials/*/*/checkpoint_last.pt"):
                if not (ckpt.parent / "summary.json").exists():
                    return ckpt.parent
        time.sleep(0.05)
    raise AssertionError(f"no trial was mid-training in time (worker exit {proc.poll()})")


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_a_study_the_next_run_completes(tmp_path):
    cmd = _nas_cmd(tmp_path, "--trials", "2", "--epochs", "3")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = _wait_mid_training(tmp_path, proc, time.time() + 600)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (victim / "summary.json").exists(), "the trial finished before the kill"
    rows = (victim / "metrics.jsonl").read_text().splitlines()  # epochs the killed worker ran
    assert 1 <= len(rows) < 3
    finished = {p: p.stat().st_mtime_ns for p in tmp_path.glob("trials/*/*/summary.json")}
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    # the killed genotype resumed from its checkpoint: the trainer said so, and kept the epochs
    # of the killed worker as they were (a restart would have re-measured their images/s)
    assert f"resuming {victim} at epoch {len(rows) + 1}, batch 0" in r.stderr
    after = (victim / "metrics.jsonl").read_text().splitlines()
    assert after[: len(rows)] == rows and len(after) == 3
    for p, t in finished.items():  # the finished trial was read back, not retrained
        assert p.stat().st_mtime_ns == t
    study = _load(f"sqlite:///{tmp_path / 'nas.db'}")
    (killed,) = study.get_trials(states=(TrialState.FAIL,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2
    redone = [t for t in complete if t.user_attrs["run_dir"] == str(victim)]
    assert len(redone) == 1 and redone[0].number > killed.number
    assert redone[0].params == killed.params and redone[0].user_attrs["pid"] != proc.pid
    assert TRIAL_LINE.findall(r.stdout) == [str(redone[0].number)]  # the only trial trained


# -- PostgreSQL ----------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(
            f"PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/{name}); install "
            "Debian's postgresql package (.ci/run does: apt-get install -y postgresql)"
        )
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 with password login; yields its URL. As root,
    the server runs as the postgres user (it refuses to run as root)."""
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="effnet-pg-"))
    data, port, password = root / "data", _free_port(), "effnet-pw"
    (root / "pw").write_text(password + "\n")
    if as_user:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")

    def run(*argv: str) -> None:
        r = subprocess.run([*as_user, *argv], capture_output=True, text=True)
        assert r.returncode == 0, f"{argv[0]}: {r.stdout[-2000:]}{r.stderr[-2000:]}"

    run(_pg_bin("initdb"), "-D", str(data), "-U", "effnet", f"--pwfile={root / 'pw'}",
        "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8")
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
    run(_pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
    try:
        run(_pg_bin("createdb"), "-h", str(root), "-p", str(port), "-U", "effnet", "effnet")
        yield f"postgresql://effnet:{password}@127.0.0.1:{port}/effnet"
    finally:
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_workers_share_a_postgresql_study_and_search_uses_it_too(tmp_path, postgres, capsys):
    logs, pids = _two_workers(tmp_path / "nas", postgres, trials=3)
    _check_shared(_load(postgres), tmp_path / "nas", 3, pids, logs)
    assert not (tmp_path / "nas" / "nas.db").exists()  # the trials live on the server
    # `effnet search` takes the same --storage (another study in the same database)
    search = [sys.executable, "-m", "effnet", "search", "--budget", "1", "--step", "0.25"]
    search += ["--tolerance", "0.25", "--max-candidates", "2", "--image-size", "32"]
    search += ["--max-train-samples", "120", "--threads", "1", "--storage", postgres]
    r = subprocess.run([*search, "--out", str(tmp_path / "s")], env=_env(), capture_output=True)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    res = json.loads((tmp_path / "s" / "search.json").read_text())
    masked = postgres.replace("effnet-pw", "***")  # saved summaries do not hold the password
    assert res["finished"] == 2 and res["storage"] == masked
    assert json.loads((tmp_path / "nas" / "nas.json").read_text())["storage"] == masked
    assert not (tmp_path / "s" / "search.db").exists()
    assert len(optuna.get_all_study_names(postgres)) == 2
    # a wrong password or database name: one line, the password not shown, nothing written
    wrong = {
        "password authentication failed": postgres.replace("effnet-pw", "nope"),
        'database "nosuch" does not exist': postgres.rsplit("/", 1)[0] + "/nosuch",
    }
    for command in ("nas", "search"):
        for msg, url in wrong.items():
            out = tmp_path / f"bad_{command}"
            assert main([command, "--storage", url, "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert msg in err and err.count("\n") == 1, err
            assert "effnet-pw" not in err and "nope" not in err
            assert not out.exists()
