"""Training-aware architecture search (EfficientNetV2 section 3.3, MnasNet's reward for B0).

Each trial samples a genotype of a space (``effnet.lab.nas_space``), writes it as a spec file and
measures it on this machine: its training step time (warm, the median of several steps, the
same batch and threads for every candidate), its parameters and MACs (exact, from its plan), and
its accuracy after a short run of the ordinary trainer (its recipe, crash safety and resume).
Trials live in an Optuna study in RDB storage (SQLite in the output folder by default), as in
``effnet search``: a re-run skips finished trials, a trial whose process died is queued again and
resumes from its checkpoint, and several processes or machines can share one database. However
many workers share a study, it trains exactly ``trials`` candidates, each genotype once at a time.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import os
import socket
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from effnet.analysis.info import model_info
from effnet.api import create_model
from effnet.benchmark.engine import _sgd_step, steady_allocator
from effnet.env import require
from effnet.env.device import kept_process_state
from effnet.lab import nas_space
from effnet.lab.experiment import (
    Base,
    base_config,
    chance_level,
    chance_warning,
    fingerprint,
    train_once,
)
from effnet.lab.plots import plot_nas
from effnet.lab.search import rdb_storage, requeue_dead_trials, shown_url
from effnet.registry import Variant, get_variant, variant_to_dict
from effnet.weights.serialize import atomic_write

SAMPLERS = ("random", "tpe", "nsga2")
SPEC = "spec.json"
BEST_SPEC = "best_spec.json"
COLUMNS = ("trial", "genotype", "acc", "step_time", "params", "macs", "image_size", "reward")


@kept_process_state(rng=True)
def step_time(
    variant: Variant,
    classes: int,
    size: int,
    batch: int,
    threads: int | None = None,
    warmup: int = 5,
    steps: int = 15,
) -> float:
    """Seconds of one SGD training step (forward, backward, update) on ``batch`` random images
    at ``size`` px: the fastest of ``steps`` timed steps after ``warmup`` (noise only ever adds
    time), in ``threads`` torch threads (default: the process's; the trainer may change them, so
    a search passes the same number every time). The allocator is put in the same state first
    (``steady_allocator``) and the garbage collector is off while timing. How stable this is on
    a given machine is measured by ``benchmarks/nas_step_time.py`` (docs/nas.md)."""
    if threads:
        torch.set_num_threads(threads)
    steady_allocator()
    torch.manual_seed(0)
    model = create_model(spec=variant, num_classes=classes).train()
    step = _sgd_step(model)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, classes, (batch,))
    times = []
    gc_was_on = gc.isenabled()
    gc.disable()  # a collection inside a timed step would be charged to that step
    try:
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            step(x, y)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        if gc_was_on:
            gc.enable()
    return min(times)


def cost(variant: Variant, classes: int, size: int) -> dict[str, int]:
    info = model_info(create_model(spec=variant, num_classes=classes, device="meta"), size)
    return {"params": info["params"], "macs": info["macs"]}


def candidate_variant(base: Base, family) -> Variant:
    """``family`` with the base config's width/depth multipliers, size and preprocessing."""
    v = get_variant(base.config.model)
    return Variant(
        family, base.width, base.depth, base.image_size, v.dropout, mean=v.mean, std=v.std
    )


def write_spec(variant: Variant, path: Path) -> Path:
    text = json.dumps(variant_to_dict(variant), indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


class Reward:
    """The space's paper reward, or a ``--reward`` expression over the measured names."""

    def __init__(self, space: str, expression: str | None = None) -> None:
        self.space, self.text = space, expression
        self._expr = nas_space.reward_expression(expression) if expression else None

    def __call__(self, m: dict[str, float], ref_step_time: float) -> float:
        if self._expr is not None:
            return self._expr({k: m[k] for k in nas_space.REWARD_NAMES})
        if self.space == "v2":
            return nas_space.v2_reward(m["acc"], m["step_time"], m["params"], ref_step_time)
        return nas_space.mnas_reward(m["acc"], m["macs"], m["image_size"])

    def label(self) -> str:
        if self.text:
            return self.text
        if self.space == "v2":
            return "A * (S/S_ref)^-0.07 * P^-0.05"
        return "ACC * (MACs / (400M * (size/224)^2))^-0.07"


def make_sampler(sampler: str, seed: int):
    samplers = require("optuna.samplers")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    make = {
        "random": samplers.RandomSampler,
        "tpe": samplers.TPESampler,
        "nsga2": samplers.NSGAIISampler,
    }[sampler]
    return make(seed=seed)


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number``. Workers that share a study run the same command,
    so a sampler seeded once per process would draw the same genotypes in every worker; seeded
    per trial number, the draws differ and a search stays repeatable under its ``seed``."""
    return int(hashlib.sha1(f"{seed}:{number}".encode()).hexdigest()[:8], 16)


def open_study(storage: str, name: str, sampler: str, seed: int):
    optuna = require("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    multi = {"directions": ["maximize", "minimize", "minimize"]}
    return optuna.create_study(
        study_name=name,
        storage=rdb_storage(storage),
        sampler=make_sampler(sampler, seed),
        load_if_exists=True,
        **(multi if sampler == "nsga2" else {"direction": "maximize"}),
    )


_THREADS = torch.get_num_threads()  # torch's default here, before any trainer changed it


def threads(base: Base) -> int:
    """The torch threads every step-time measurement of a search runs in."""
    return base.config.threads or _THREADS


def reference_step_time(study, base: Base, space, classes: int) -> float:
    """The backbone's step time (V2's S is normalised by it), measured once per study."""
    ref = study.user_attrs.get("ref_step_time")
    if ref is None:
        backbone = candidate_variant(base, space.backbone)
        ref = step_time(backbone, classes, base.image_size, base.config.batch_size, threads(base))
        study.set_user_attr("ref_step_time", ref)
    return float(ref)


LIVE = ("WAITING", "RUNNING", "COMPLETE")


def claim(study, trial, trials: int) -> bool:
    """Whether the RUNNING ``trial`` is within the study's ``trials``: fewer than ``trials``
    trials numbered below it are queued, running or complete. Trial numbers follow creation
    (the storage creates them one at a time), and a trial checks only once it is RUNNING, so
    of two workers that start a trial for the last place, the later one sees the earlier and
    yields: the study never trains more than ``trials``."""
    TrialState = require("optuna.trial").TrialState
    live = tuple(TrialState[s] for s in LIVE)
    before = [t for t in study.get_trials(deepcopy=False, states=live) if t.number < trial.number]
    return len(before) < trials


def twin(study, trial, gid: str) -> int | None:
    """Another RUNNING trial of genotype ``gid`` (it trains in the same run folder), if any.
    Each trial records its genotype before it looks, so of two that drew the same genotype at
    once, at least one sees the other."""
    TrialState = require("optuna.trial").TrialState
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number != trial.number and t.user_attrs.get("genotype_id") == gid:
            return t.number
    return None


def run_trial(trial, study, space, base: Base, reward: Reward, out: Path, classes: int, log):
    genotype = nas_space.sample(space, trial.suggest_categorical)
    gid = nas_space.genotype_id(genotype)
    trial.set_user_attr("genotype_id", gid)
    other = twin(study, trial, gid)
    if other is not None:
        raise require("optuna").TrialPruned(f"trial {other} trains genotype {gid}")
    variant = candidate_variant(base, nas_space.to_family(space, genotype))
    run_dir = out / "trials" / fingerprint(base) / gid
    spec = write_spec(variant, run_dir / SPEC)
    trial.set_user_attr("spec", variant_to_dict(variant))  # for machines without this folder
    size = base.image_size
    batch = base.config.batch_size
    m: dict[str, Any] = {"step_time": step_time(variant, classes, size, batch, threads(base))}
    m.update(cost(variant, classes, size), image_size=size)
    kw = {k: v for k, v in (base.config.model_kwargs or {}).items() if not k.endswith("_mult")}
    summary = train_once(
        base.config,
        run_dir,
        model=str(spec),
        model_kwargs=kw,
        image_size=size,
        crop_pct=base.config.crop_pct,
    )
    m["acc"] = float(summary["best_top1"]) / 100.0
    m["reward"] = reward(m, reference_step_time(study, base, space, classes))
    for k, v in {
        **m,
        "genotype": nas_space.genotype_text(genotype),
        "run_dir": str(run_dir),
    }.items():
        trial.set_user_attr(k, v)
    log(
        f"trial {trial.number}: {nas_space.genotype_text(genotype)} -> top-1 {100 * m['acc']:.2f}%"
        f"  {m['step_time'] * 1e3:.1f} ms/step  {m['params'] / 1e6:.2f}M params  "
        f"{m['macs'] / 1e6:.1f}M MACs  reward {m['reward']:.4f}"
    )
    if len(study.directions) > 1:
        return m["acc"], m["step_time"], float(m["params"])
    return m["reward"]


def run_worker(
    study, trials: int, space, base, reward, out: Path, classes: int, log, sampler="random", seed=0
) -> None:
    """Run trials until the study holds ``trials`` complete ones (this process's share, with
    any other workers on the study): queued trials first (a dead worker's genotype), else new
    ones; a trial beyond ``trials`` (``claim``) or of a genotype being trained (``twin``) is
    pruned before it trains. While other workers run the last trials, wait for them."""
    optuna = require("optuna")
    TrialState = require("optuna.trial").TrialState

    def params_of(t):
        return dict(t.params) or None

    def objective(trial):
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if not claim(study, trial, trials):
            raise optuna.TrialPruned(f"the study has its {trials} trials")
        study.sampler = make_sampler(sampler, trial_seed(seed, trial.number))
        return run_trial(trial, study, space, base, reward, out, classes, log)

    waiting_for = None
    while True:
        requeue_dead_trials(study, [], params_of=params_of)
        all_trials = study.get_trials(deepcopy=False)
        n = Counter(t.state for t in all_trials)
        if n[TrialState.COMPLETE] >= trials:
            return
        if n[TrialState.WAITING] or n[TrialState.COMPLETE] + n[TrialState.RUNNING] < trials:
            study.optimize(objective, n_trials=1)
            continue
        running = [t for t in all_trials if t.state == TrialState.RUNNING]
        if waiting_for != [t.number for t in running]:
            waiting_for = [t.number for t in running]
            who = ", ".join(
                f"{t.number} ({t.user_attrs.get('host')} pid {t.user_attrs.get('pid')})"
                for t in running
            )
            log(f"waiting for the last trial(s) that other workers run: {who}")
        time.sleep(2.0)


def results(study, reward: Reward) -> list[dict[str, Any]]:
    """One row per finished trial, the reward recomputed with ``reward`` (best first)."""
    TrialState = require("optuna.trial").TrialState
    ref = study.user_attrs.get("ref_step_time") or 1.0
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        m = {k: a[k] for k in ("acc", "step_time", "params", "macs", "image_size")}
        rows.append(
            {
                "trial": t.number,
                "genotype": a["genotype"],
                **m,
                "reward": reward(m, ref),
                "run_dir": a["run_dir"],
                "params_chosen": dict(t.params),
            }
        )
    rows.sort(key=lambda r: (-r["reward"], r["trial"]))
    return rows


def pareto(rows: list[dict[str, Any]]) -> list[int]:
    """Trial numbers not dominated on (accuracy up, step time down, params down)."""

    def dominates(a, b) -> bool:
        ge = a["acc"] >= b["acc"] and a["step_time"] <= b["step_time"]
        ge = ge and a["params"] <= b["params"]
        return ge and (
            a["acc"] > b["acc"] or a["step_time"] < b["step_time"] or a["params"] < b["params"]
        )

    return sorted(r["trial"] for r in rows if not any(dominates(o, r) for o in rows))


def best_spec(study, best: dict[str, Any] | None) -> dict[str, Any] | None:
    """The best trial's spec file body, as the trial recorded it: another machine sharing the
    storage may have trained it, so its run folder need not be on this one."""
    if best is None:
        return None
    (trial,) = [t for t in study.get_trials(deepcopy=False) if t.number == best["trial"]]
    if "spec" in trial.user_attrs:
        return trial.user_attrs["spec"]
    return json.loads((Path(best["run_dir"]) / SPEC).read_text())


def write_outputs(out: Path, res: dict[str, Any], spec: dict[str, Any] | None) -> None:
    rows = res["trials"]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "trials.csv", lambda tmp: Path(tmp).write_text(table.getvalue()))
    text = json.dumps(rows, indent=2)
    atomic_write(out / "trials.json", lambda tmp: Path(tmp).write_text(text))
    if spec is not None:
        body = json.dumps(spec, indent=2)
        atomic_write(out / BEST_SPEC, lambda tmp: Path(tmp).write_text(body))
    summary = json.dumps({k: v for k, v in res.items() if k != "trials"}, indent=2)
    atomic_write(out / "nas.json", lambda tmp: Path(tmp).write_text(summary))


def nas(
    data: str = "digits",
    *,
    space: str = "v2",
    trials: int = 20,
    epochs: int = 1,
    image_size: int | None = None,
    sampler: str = "random",
    reward: str | None = None,
    storage: str | None = None,
    out: str | Path = "runs/nas",
    config: str | None = None,
    seed: int = 0,
    log=print,
    **train_overrides: Any,
) -> dict[str, Any]:
    """Search ``space`` on ``data``: ``trials`` candidates, each trained ``epochs`` epochs.

    Returns the summary also written to ``OUT/nas.json``, with ``OUT/trials.csv`` and
    ``OUT/trials.json`` (every finished trial), ``OUT/pareto.png`` and the best genotype as the
    spec file ``OUT/best_spec.json`` (``effnet train --model``, ``create_model``, ``effnet info``
    and ``effnet scale`` take it).
    """
    the_space = nas_space.get_space(space)
    rew = Reward(space, reward)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    base = base_config(
        config, data=data, seed=seed, epochs=epochs, image_size=image_size, **train_overrides
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'nas.db').resolve()}"
    tag = (
        hashlib.sha1(str(reward).encode()).hexdigest()[:6] if reward and sampler != "nsga2" else ""
    )
    name = f"effnet-nas-{space}-{sampler}-{fingerprint(base)}-seed{seed}{tag and '-r' + tag}"
    study = open_study(storage, name, sampler, seed)
    classes = chance_level(base, [])["classes"]
    log(
        f"effnet nas: space {space} ({the_space.size():.3g} genotypes), {trials} trial(s) of "
        f"{epochs} epoch(s) at {base.image_size}px, sampler {sampler}, reward {rew.label()}, "
        f"storage {shown_url(storage)}"
    )
    run_worker(study, trials, the_space, base, rew, out, classes, log, sampler, seed)
    rows = results(study, rew)
    front = pareto(rows)
    level = chance_level(base, [100 * r["acc"] for r in rows])
    res = {
        "space": space,
        "data": data,
        "sampler": sampler,
        "reward": rew.label(),
        "epochs": epochs,
        "image_size": base.image_size,
        "storage": shown_url(storage),
        "study": name,
        "ref_step_time": study.user_attrs.get("ref_step_time"),
        "threads": threads(base),
        "finished": len(rows),
        "best": rows[0] if rows else None,
        "median_reward": statistics.median([r["reward"] for r in rows]) if rows else None,
        "pareto": front,
        "chance": level,
        "warning": chance_warning(level, "nas"),
        "trials": rows,
    }
    write_outputs(out, res, best_spec(study, res["best"]))
    if res["warning"]:
        log(res["warning"])
    res["plot"] = str(plot_nas(res, out / "pareto.png"))
    res["spec"] = str(out / BEST_SPEC) if rows else None
    return res
