"""The paper's step 1: grid search of (alpha, beta, gamma) at phi = 1, alpha*beta^2*gamma^2 ~ 2.

Trials live in an Optuna study (``GridSampler`` over the constraint-filtered grid, RDB storage,
SQLite in the output folder by default). Finished trials are never redone: a re-run of the same
search skips them, a trial whose process died is marked failed and queued again (its training run
resumes from its own checkpoint), and several processes or machines can share one database.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch

from effnet.env import require
from effnet.lab.experiment import (
    Base,
    base_config,
    chance_level,
    chance_warning,
    fingerprint,
    train_candidate,
)
from effnet.lab.plots import plot_search
from effnet.training.trainer import Interrupted
from effnet.weights.serialize import atomic_write

STUDY = "effnet-search"
PARAM = "abg"


def grid(
    step: float = 0.1, max_coef: float = 2.0, target: float = 2.0, tolerance: float = 0.1
) -> list[tuple[float, float, float]]:
    """(alpha, beta, gamma) on a grid from 1 to ``max_coef`` with |a*b^2*g^2 - target| <= tol."""
    for label, v in (("step", step), ("max_coef", max_coef), ("target", target)):
        if not (isinstance(v, int | float) and v > 0):
            raise ValueError(f"{label} must be a positive number, got {v}")
    if max_coef < 1:
        raise ValueError(f"max_coef must be >= 1 (alpha, beta, gamma >= 1), got {max_coef}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    n = round((max_coef - 1) / step)
    values = [round(1 + i * step, 6) for i in range(n + 1)]
    pts = [
        (a, b, g)
        for a in values
        for b in values
        for g in values
        if abs(a * b * b * g * g - target) <= tolerance + 1e-12
    ]
    if not pts:
        raise ValueError(
            f"no grid point satisfies |alpha*beta^2*gamma^2 - {target:g}| <= {tolerance:g} with "
            f"step {step:g} and coefficients in [1, {max_coef:g}]; raise the tolerance or refine "
            "the step"
        )
    return pts


def select(
    points: list[tuple[float, float, float]], max_candidates: int | None, target: float = 2.0
) -> list[tuple[float, float, float]]:
    """At most ``max_candidates`` points, those closest to the constraint first (deterministic,
    so a re-run sees the same search space)."""
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
    ranked = sorted(points, key=lambda p: (abs(p[0] * p[1] ** 2 * p[2] ** 2 - target), p))
    return sorted(ranked[:max_candidates] if max_candidates else ranked)


def key(p: tuple[float, float, float]) -> str:
    return "a{:.3f}_b{:.3f}_g{:.3f}".format(*p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shown_url(url: str) -> str:
    """A storage URL as logs, messages and saved summaries show it: its password masked."""
    try:
        return require("sqlalchemy.engine").make_url(url).render_as_string(hide_password=True)
    except require("sqlalchemy.exc").ArgumentError:
        return url


def rdb_storage(url: str):
    """Optuna's RDB storage at ``url``, safe for several processes on one SQLite file.

    Optuna moves a trial between states by reading it ``FOR UPDATE``, checking its state and
    writing the new one. PostgreSQL and MySQL lock the row for that; SQLite ignores the clause,
    and Python's sqlite3 opens a transaction only at the first write, so two processes can both
    read a queued (WAITING) trial and both start it, or both fail the same dead trial. Here
    every SQLite transaction is ``BEGIN IMMEDIATE``: it takes the database's write lock before
    its first read, so those read-check-write steps run one process at a time.
    """
    sqlalchemy = require("sqlalchemy")
    sqlite = sqlalchemy.engine.make_url(url).get_backend_name() == "sqlite"
    if not sqlite:
        return _new_storage(url, {}, sqlite)
    kwargs = {"connect_args": {"isolation_level": None, "timeout": 60.0}}
    storage = _new_storage(url, kwargs, sqlite)
    sqlalchemy.event.listen(
        storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE")
    )
    return storage


def _new_storage(url: str, engine_kwargs: dict[str, Any], sqlite: bool, tries: int = 5):
    """``RDBStorage(url)``, tried again when another process creating the same fresh database
    at the same moment wins a race for its tables or its schema version row (SQLite reports a
    table that already exists as an OperationalError, PostgreSQL as a ProgrammingError)."""
    optuna, exc = require("optuna"), require("sqlalchemy.exc")
    lost = (exc.IntegrityError, exc.OperationalError if sqlite else exc.ProgrammingError)
    for i in range(tries):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except lost:
            if i == tries - 1:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def requeue_dead_trials(study, keys: list[str], params_of=None) -> int:
    """Fail RUNNING trials whose process (on this host) is gone and queue their point again.

    A trial that never recorded its owner (killed within its first moments) counts as dead
    after a minute. Trials of other hosts are left alone: only their host can tell.
    ``params_of(trial)``: the parameters to queue again (default: the grid point of ``keys``).
    Several workers may see the same dead trial: only the one whose state change wins (the
    storage serialises them, see ``rdb_storage``) queues it; the others skip it.
    """
    TrialState = require("optuna.trial").TrialState
    Finished = require("optuna.exceptions").UpdateFinishedTrialError

    host, n = socket.gethostname(), 0
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs
        if "pid" in owner:
            dead = owner.get("host") == host and not _alive(int(owner["pid"]))
        else:
            dead = t.datetime_start is not None and (now - t.datetime_start).total_seconds() > 60
        if not dead:
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Finished:  # another worker failed it first, and queues it
            continue
        n += 1
        if params_of is not None:
            if params_of(t):
                study.enqueue_trial(params_of(t))
            continue
        k = t.params.get(PARAM) or owner.get(PARAM)
        if k is None and "grid_id" in t.system_attrs:
            k = keys[t.system_attrs["grid_id"]]  # the grid sampler's order is ours
        if k is not None:
            study.enqueue_trial({PARAM: k})
    return n


def study_name(base: Base) -> str:
    """One study per base setting (config, budget, data): other settings never mix in."""
    return f"{STUDY}-{fingerprint(base)}-seed{base.config.seed}"


def open_study(storage: str, points: list[tuple[float, float, float]], name: str):
    optuna = require("optuna")

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # errors reach the caller
    sampler = optuna.samplers.GridSampler({PARAM: [key(p) for p in points]}, seed=0)
    return optuna.create_study(
        study_name=name,
        storage=rdb_storage(storage),
        sampler=sampler,
        direction="maximize",
        load_if_exists=True,
    )


def run_worker(
    base: Base,
    points: list[tuple[float, float, float]],
    out: Path,
    storage: str,
    train_overrides: dict[str, Any],
    log=print,
    on_trial=None,
) -> None:
    """Run trials until every grid point has a finished trial (this process's share)."""
    optuna = require("optuna")
    TrialState = require("optuna.trial").TrialState

    study = open_study(storage, points, study_name(base))
    by_key = {key(p): p for p in points}

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        k = trial.suggest_categorical(PARAM, list(by_key))
        trial.set_user_attr(PARAM, k)
        # Another worker finished or runs this point (two workers can queue a failed point at
        # once): skip it; if both skip, the point is queued again on the next round.
        states = (TrialState.COMPLETE, TrialState.RUNNING)
        same = [
            t
            for t in study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number and (t.params.get(PARAM) or t.user_attrs.get(PARAM)) == k
        ]
        if same:
            raise optuna.TrialPruned(f"{k} is handled by trial {same[0].number}")
        a, b, g = by_key[k]
        res = train_candidate(
            base, a, b, g, out / "trials" / fingerprint(base) / k, **train_overrides
        )
        for name in ("macs", "params", "image_size", "wall_time_s", "run_dir", "best_epoch"):
            trial.set_user_attr(name, res.get(name))
        log(
            f"trial {trial.number}: alpha {a:g} beta {b:g} gamma {g:g} -> top-1 "
            f"{res['best_top1']:.2f}%  {res['macs'] / 1e6:.1f}M MACs  {res['image_size']}px"
        )
        return float(res["best_top1"])

    def status() -> tuple[bool, bool]:
        """(all points complete, work left for this process); queues points whose every trial
        failed (e.g. a search interrupted by Ctrl-C): the grid sampler counts them as done."""
        seen: dict[str, set] = {}
        for t in study.get_trials(deepcopy=False):
            k = t.params.get(PARAM) or t.user_attrs.get(PARAM)
            if k is None and t.state == TrialState.WAITING:
                k = (t.system_attrs.get("fixed_params") or {}).get(PARAM)
            seen.setdefault(k, set()).add(t.state)
        live = {TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING}
        for k in by_key:
            if seen.get(k) and not seen[k] & live:
                study.enqueue_trial({PARAM: k})
                seen[k].add(TrialState.WAITING)
        complete = all(TrialState.COMPLETE in seen.get(k, ()) for k in by_key)
        work = any(not seen.get(k, set()) & live or TrialState.WAITING in seen[k] for k in by_key)
        return complete, work

    while True:
        requeue_dead_trials(study, list(by_key))
        complete, work = status()
        if complete:
            return
        if work:
            study.optimize(objective, n_trials=1)
            if on_trial is not None:
                on_trial()
        else:
            time.sleep(2.0)  # other workers run the last points; wait for them (or their death)


def results(
    storage: str, points: list[tuple[float, float, float]], target: float, name: str
) -> dict:
    """The ranking (best top-1 first; fewer MACs breaks ties) from the study's finished trials."""
    TrialState = require("optuna.trial").TrialState

    study = open_study(storage, points, name)
    want = {key(p): p for p in points}
    rows: dict[str, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        k = t.params.get(PARAM)
        if k not in want or k in rows:
            continue
        a, b, g = want[k]
        rows[k] = {
            "alpha": a,
            "beta": b,
            "gamma": g,
            "constraint": round(a * b * b * g * g, 6),
            "top1": t.value,
            "trial": t.number,
            **{
                n: t.user_attrs.get(n)
                for n in ("macs", "params", "image_size", "wall_time_s", "run_dir")
            },
        }
    ranking = sorted(rows.values(), key=lambda r: (-r["top1"], r["macs"] or 0))
    return {
        "target": target,
        "candidates": len(points),
        "finished": len(ranking),
        "best": ranking[0] if ranking else None,
        "ranking": ranking,
    }


def search(
    data: str = "digits",
    *,
    out: str | Path = "runs/search",
    budget: float = 3,
    config: str | None = None,
    step: float = 0.1,
    max_coef: float = 2.0,
    target: float = 2.0,
    tolerance: float = 0.1,
    max_candidates: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    seed: int = 0,
    log=print,
    **train_overrides: Any,
) -> dict[str, Any]:
    """Search (alpha, beta, gamma) on ``data``; every candidate trains ``budget`` epochs at phi=1.

    Returns the ranking dict also written to ``OUT/search.json`` (with ``search.png``, accuracy
    against MACs). Its ``chance`` entry says whether any trial beat chance accuracy beyond noise;
    if none did, ``warning`` says so and what to change (it is also logged), and ``best`` is
    only the luckiest guess. ``workers`` > 1 starts that many processes on the same study; other
    machines join by running the same search with the same ``storage`` URL.
    """
    if not (isinstance(budget, int | float) and budget >= 1 and float(budget).is_integer()):
        raise ValueError(f"budget must be a whole number of epochs >= 1, got {budget}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers}")
    points = select(grid(step, max_coef, target, tolerance), max_candidates, target)
    base = base_config(config, data=data, seed=seed, epochs=int(budget), **train_overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'search.db').resolve()}"
    overrides: dict[str, Any] = {}
    log(
        f"effnet search: {len(points)} candidates (alpha, beta, gamma) with "
        f"|a*b^2*g^2 - {target:g}| <= {tolerance:g}, {int(budget)} epoch(s) each, "
        f"{workers} worker(s), storage {shown_url(storage)}"
    )

    def write(final: bool = False) -> dict[str, Any]:
        res = results(storage, points, target, study_name(base))
        res.update(
            data=data,
            budget_epochs=int(budget),
            tolerance=tolerance,
            step=step,
            storage=shown_url(storage),
            study=study_name(base),
        )
        if final:  # did any trial learn anything? (every one at chance: the ranking is noise)
            res["chance"] = chance_level(base, [r["top1"] for r in res["ranking"]])
            res["warning"] = chance_warning(res["chance"], "search")
        text = json.dumps(res, indent=2)
        atomic_write(out / "search.json", lambda tmp: Path(tmp).write_text(text))
        return res

    if workers == 1:
        run_worker(base, points, out, storage, overrides, log, on_trial=write)
    else:
        _run_parallel(base, points, out, storage, overrides, workers)
    res = write(final=True)
    if res["warning"]:
        log(res["warning"])
    res["plot"] = str(plot_search(res, out / "search.png"))
    return res


def _worker_main(base, points, out, storage, overrides, threads) -> None:
    torch.set_num_threads(threads)
    try:
        run_worker(
            base,
            points,
            out,
            storage,
            {**overrides, "threads": threads},
            log=lambda m: print(m, flush=True),
        )
    except Interrupted as e:  # Ctrl-C reaches every worker: leave quietly, the parent reports
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ValueError as e:
        print(f"effnet search worker: error: {str(e).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_parallel(base, points, out, storage, overrides, workers) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    open_study(
        storage, points, study_name(base)
    )  # create the study once, before workers race to do it
    procs = [
        ctx.Process(target=_worker_main, args=(base, points, out, storage, overrides, threads))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode]
    if any(code in (130, 143) for code in bad):  # the workers were told to stop (SIGINT/TERM)
        raise KeyboardInterrupt
    if bad:
        raise ValueError(f"{len(bad)} search worker(s) failed (exit codes {bad}); see above")
