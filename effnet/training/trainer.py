"""Orchestration of a training run: setup, the epoch loop, checkpoints, resume, signals."""

from __future__ import annotations

import contextlib
import logging
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from effnet.data.datasets import DataSplit, describe, load_data
from effnet.data.loaders import steps_per_epoch, train_loader
from effnet.env.device import kept_process_state
from effnet.fast import accelerate
from effnet.training import builders as B
from effnet.training import distributed as D
from effnet.training import report as R
from effnet.training.callbacks import Callback, Callbacks
from effnet.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, set_rng_state
from effnet.training.config import TrainConfig, from_dict
from effnet.training.faults import fault_point
from effnet.training.lock import RunLock
from effnet.training.loggers import make_loggers
from effnet.training.loop import EpochState, NonFiniteLoss, StepContext, train_one_epoch
from effnet.training.optim import EMA, build_optimizer
from effnet.training.results import epoch_row, format_row, summarize, update_best
from effnet.training.schedule import Stage, lr_at, stage_for_epoch
from effnet.training.signals import Interrupted, SignalFlag
from effnet.training.syncbn import SyncBatchNorm2d, convert_sync_batchnorm
from effnet.weights.serialize import remove_stale_temps

log = logging.getLogger("effnet.train")
# Options a resumed run may change; everything else comes from the run's own config.
RESUME_OVERRIDES = (
    "epochs", "device", "workers", "progress", "threads", "checkpoint_every", "loggers"
)


def default_run_dir(cfg: TrainConfig) -> Path:
    data = re.sub(r"[^\w.-]+", "_", Path(cfg.data).name) or "data"  # python:Name -> python_Name
    return Path("runs") / f"{cfg.model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = (seed * 1_000_003 + epoch * 7_919 + rank) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def resume_config(resume: str | Path, overrides: dict | None) -> tuple[TrainConfig, dict]:
    """The run's own config (plus the few options a resume may change) and its checkpoint."""
    ckpt = load_checkpoint(resume)
    saved = dict(ckpt["config"])
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in RESUME_OVERRIDES:
            if saved.get(k) != v:
                raise ValueError(
                    f"--resume continues the run's own config; {k} cannot change on resume "
                    f"(allowed: {', '.join(RESUME_OVERRIDES)})"
                )
            continue
        saved[k] = v
    if saved["epochs"] < int(ckpt["epoch"]):
        raise ValueError(f"epochs {saved['epochs']} is below the {ckpt['epoch']} already trained")
    return from_dict(saved), ckpt


def prepare(cfg: TrainConfig, resume: str | Path | None) -> tuple[TrainConfig, Path, dict | None]:
    """Resolve the run folder and (when resuming) the checkpoint and the run's own config."""
    if resume is not None:
        cfg, ckpt = resume_config(resume, None)
        run_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent
        return cfg, run_dir, ckpt
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    RunLock.check(run_dir)
    if (run_dir / CHECKPOINT).exists():
        raise ValueError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} "
            "or pick another --out"
        )
    return cfg, run_dir, None


@kept_process_state()  # cfg.threads is for this run; the caller gets its own count back
def run(
    cfg: TrainConfig | None,
    resume: str | Path | None = None,
    resume_overrides: dict | None = None,
    *,
    dataset=None,
    class_names: list[str] | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
) -> dict:
    """Train according to ``cfg``, or continue the run in ``resume`` (its own config plus
    ``resume_overrides``, e.g. more epochs); return the summary. ``dataset`` (a torch Dataset
    or a (train, val) pair) replaces ``cfg.data``; ``callbacks`` watch the run (rank 0)."""
    if resume is not None:
        RunLock.check(resume if Path(resume).is_dir() else Path(resume).parent)
        cfg, ckpt = resume_config(resume, resume_overrides)
        run_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent
    else:
        cfg, run_dir, ckpt = prepare(cfg, None)
    dist = D.env_info()
    device = D.device_for(cfg.device, dist)
    # Data problems (missing folder, empty class, one class) surface before the run folder exists.
    data = load_split(cfg, dataset, class_names)
    batch_plan(cfg, data, dist)  # batch-size problems, too, before the run folder exists
    B.amp_dtype(cfg, device)
    # Loggers are built here, so a missing package is an error before the run folder exists.
    hooks = Callbacks([*make_loggers(cfg.loggers), *callbacks], active=dist.is_main)
    D.setup(device)
    created = dist.is_main and not run_dir.exists()
    lock = RunLock(run_dir).acquire() if dist.is_main else None
    if lock:  # a killed run may have left a half-written temp file; the lock makes removal safe
        remove_stale_temps(run_dir)
    failed = True
    try:
        with SignalFlag() as signals:
            summary = _train(cfg, run_dir, ckpt, dist, device, signals, data, hooks)
        failed = False
        return summary
    finally:
        hooks.close()
        if lock:
            lock.release()
        if failed and created:
            remove_stub(run_dir)
        D.teardown()


STUB_FILES = (".lock", "config.json", "config.yaml", R.SKIPPED)


def remove_stub(run_dir: Path) -> None:
    """Remove a run folder that a failed start created, unless it holds a checkpoint: the files
    a start writes first (``STUB_FILES``, temp files), then the folder if nothing else is left."""
    if (run_dir / CHECKPOINT).exists():
        return
    remove_stale_temps(run_dir)
    for name in STUB_FILES:
        (run_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else is in it: keep it
        run_dir.rmdir()


def batch_plan(cfg: TrainConfig, data: DataSplit, dist: D.DistInfo) -> tuple[int, int]:
    """(batch size per process, steps per epoch), or a ValueError for a batch that cannot be."""
    if cfg.batch_size % dist.world:
        raise ValueError(f"batch_size {cfg.batch_size} must divide by the {dist.world} processes")
    per_rank = cfg.batch_size // dist.world
    return per_rank, steps_per_epoch(data.train, per_rank, dist.world)


def _say(dist: D.DistInfo, msg: str) -> None:
    if dist.is_main:
        print(msg, file=sys.stderr, flush=True)


@dataclass
class RunState:
    """What a run carries from step to step, and what its checkpoint saves."""

    cfg: TrainConfig
    run_dir: Path
    dist: D.DistInfo
    device: torch.device
    data: DataSplit
    signals: SignalFlag
    model: nn.Module
    data_cfg: dict
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    stages: list[Stage]
    per_rank: int  # batch size of each process
    steps_per_epoch: int
    start_epoch: int = 0  # where this process (re)starts: epoch and batch within it
    start_batch: int = 0
    epoch: int = 0  # the epoch being trained
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"top1": -1.0})
    epoch_state: EpochState = field(default_factory=EpochState)
    wall0: float = 0.0  # training seconds before this process started (a resumed run)
    t_start: float = 0.0
    callbacks: Callbacks = field(default_factory=Callbacks)

    def wall_time(self) -> float:
        return self.wall0 + time.perf_counter() - self.t_start


def load_split(cfg: TrainConfig, dataset=None, class_names=None) -> DataSplit:
    """The train/validation split ``cfg`` trains on: its data (or a user's ``dataset``),
    validation fraction, seed and subsets."""
    return load_data(
        cfg.data,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        strict=cfg.strict,
        max_train_samples=cfg.max_train_samples,
        max_val_samples=cfg.max_val_samples,
        dataset=dataset,
        class_names=class_names,
    )


def build_model(cfg: TrainConfig, data: DataSplit, device: torch.device) -> nn.Module:
    """The model to train, on ``device``, with effnet's fast paths (``effnet.accelerate``) and
    the memory options of ``cfg`` applied."""
    model = B.build_model(cfg, data.num_classes, data.class_names).to(device)
    # Channels-last inside on CPU (faster there) or wherever cfg asks for it.
    accelerate(model, channels_last=True if cfg.channels_last else None)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.activation_recompute and hasattr(model, "set_activation_recompute"):
        model.set_activation_recompute(True)
    return model


def distribute(model: nn.Module, cfg: TrainConfig, dist: D.DistInfo, device) -> nn.Module:
    """What the training loop calls: ``model`` with synchronised BatchNorm (``sync_bn``), in
    DistributedDataParallel under torchrun, compiled with ``compile``. ``model`` keeps its
    parameters and state-dict keys (checkpoints and evaluation use it directly).

    DDP fixes two things about the parameters when it wraps them, so wrap (again) only once
    they are final: which of them require a gradient (it reduces exactly those; ``_train``
    wraps anew when the frozen backbone thaws) and their memory format (its gradient buckets
    take each parameter's strides, and a gradient in another layout goes through a slow copy
    with a "Grad strides do not match bucket view strides" warning on every rank).
    ``build_model`` puts the weights in the layout the network runs in before this is called.
    """
    net: nn.Module = model
    if cfg.sync_bn and dist.enabled and not _synced(net):
        net = convert_sync_batchnorm(net)
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(net) if cfg.compile else net


def _synced(model: nn.Module) -> bool:
    return any(isinstance(m, nn.SyncBatchNorm | SyncBatchNorm2d) for m in model.modules())


def new_run_state(cfg, run_dir, ckpt, dist, device, data, signals) -> RunState:
    """Build model, EMA, optimizer and schedule stages; continue from ``ckpt`` if given."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_epoch(cfg.seed, -1, 0)  # model init is identical on every process
    per_rank, spe = batch_plan(cfg, data, dist)
    model = build_model(cfg, data, device)
    st = RunState(
        cfg=cfg,
        run_dir=run_dir,
        dist=dist,
        device=device,
        data=data,
        signals=signals,
        model=model,
        data_cfg=dict(model.pretrained_cfg),
        ema=EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None,
        optimizer=build_optimizer(model, cfg),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"),
        stages=B.stages_for(cfg, model.dropout.p),
        per_rank=per_rank,
        steps_per_epoch=spe,
    )
    if ckpt is not None:
        restore(st, ckpt)
    return st


def restore(st: RunState, ckpt: dict) -> None:
    """Load weights, optimizer, EMA, scaler, position, history and (mid-epoch) RNG states."""
    st.model.load_state_dict(ckpt["model"])
    st.optimizer.load_state_dict(ckpt["optimizer"])
    if st.ema is not None and ckpt.get("ema"):
        st.ema.load_state_dict(ckpt["ema"])
    if ckpt.get("scaler"):
        st.scaler.load_state_dict(ckpt["scaler"])
    st.start_epoch, st.start_batch = int(ckpt["epoch"]), int(ckpt["batch"])
    st.global_step, st.history = int(ckpt["global_step"]), list(ckpt["history"])
    st.wall0, st.best = float(ckpt["wall_time"]), dict(ckpt["best"])
    st.epoch_state = EpochState(**ckpt["epoch_state"])
    if st.start_batch:
        set_rng_state(ckpt["rng"])
    _say(st.dist, f"resuming {st.run_dir} at epoch {st.start_epoch + 1}, batch {st.start_batch}")
    fault_point("after_resume")


def save(st: RunState, epoch: int, batch: int, state: EpochState) -> None:
    """Write ``checkpoint_last.pt`` (rank 0): the run continues at ``epoch``, ``batch``."""
    if not st.dist.is_main:
        return
    save_checkpoint(
        st.run_dir / CHECKPOINT,
        model=st.model,
        optimizer=st.optimizer,
        ema=st.ema,
        scaler=st.scaler,
        extra={
            "config": st.cfg.to_dict(),
            "epoch": epoch,
            "batch": batch,
            "global_step": st.global_step,
            "history": st.history,
            "best": st.best,
            "epoch_state": state.to_dict(),
            "class_names": st.data.class_names,
            "stage": stage_for_epoch(st.stages, epoch).index,
            "wall_time": st.wall_time(),
        },
    )


def write_run_config(st: RunState) -> None:
    """config.json / config.yaml in the run folder (rank 0), and the run's one-line header."""
    cfg, dist = st.cfg, st.dist
    if dist.is_main:
        st.run_dir.mkdir(parents=True, exist_ok=True)
        R.write_json(st.run_dir / "config.json", cfg.to_dict())
        _write_yaml(st.run_dir / "config.yaml", cfg.to_dict())
        if st.data.skipped:  # unreadable files left out: which ones, not only how many
            text = "".join(line + "\n" for line in st.data.skipped)
            R.atomic_write(st.run_dir / R.SKIPPED, lambda tmp: Path(tmp).write_text(text))
    info = describe(st.data)
    params = sum(p.numel() for p in st.model.parameters())
    _say(
        dist,
        f"effnet train: {cfg.model} ({params / 1e6:.2f}M params) on {info['source']} "
        f"({info['classes']} classes, "
        f"{info['train_images']} train / {info['val_images']} val images, "
        f"{info['skipped_files']} unreadable skipped{' (skipped.txt)' if st.data.skipped else ''}) "
        f"-> {st.run_dir}",
    )


def step_context(st: RunState) -> StepContext:
    """The per-step settings; ``after_step`` checkpoints every ``checkpoint_every`` steps and
    stops every process at the next step once any of them received a signal."""
    cfg, spe = st.cfg, st.steps_per_epoch
    total_steps = spe * cfg.epochs

    def after_step(step: int, state: EpochState) -> bool:
        st.global_step = step
        stop = D.broadcast_flag(st.signals.received is not None, st.device)
        if stop or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
            save(st, st.epoch, state.batches, state)
        return stop

    return StepContext(
        device=st.device,
        lr_fn=lambda s: lr_at(
            s,
            base_lr=_base_lr(cfg),
            total_steps=total_steps,
            steps_per_epoch=spe,
            warmup_epochs=cfg.warmup_epochs,
            schedule=cfg.schedule,
            decay_rate=cfg.decay_rate,
            decay_epochs=cfg.decay_epochs,
            min_lr=cfg.min_lr,
        ),
        criterion=B.criterion_for(cfg),
        amp_dtype=B.amp_dtype(cfg, st.device),
        scaler=st.scaler,
        clip_grad=cfg.clip_grad,
        ema=st.ema,
        channels_last=cfg.channels_last,
        after_step=after_step,
        on_step=st.callbacks.on_step if st.callbacks.items else None,
    )


def enter_stage(st: RunState, ctx: StepContext, stage: Stage) -> None:
    """Image size, augmentation, dropout and mixup of a (progressive) stage."""
    cfg, data = st.cfg, st.data
    train_tf, eval_tf = B.transforms_for(cfg, st.data_cfg, stage.image_size, stage.magnitude)
    data.train.transform, data.val.transform = train_tf, eval_tf
    st.model.set_dropout(stage.dropout)
    ctx.mixer = B.mixer_for(cfg, stage.mixup, data.num_classes)
    if cfg.progressive:
        _say(
            st.dist,
            f"stage {stage.index + 1}/{len(st.stages)} (epochs {stage.first_epoch + 1}"
            f"-{stage.last_epoch}): image size {stage.image_size}, RandAugment "
            f"magnitude {stage.magnitude}, mixup {stage.mixup}, "
            f"dropout {stage.dropout}",
        )


def train_epoch(st: RunState, fwd: nn.Module, ctx: StepContext) -> None:
    """Train the rest of epoch ``st.epoch``; raise Interrupted if a signal stopped it."""
    cfg, dist, epoch = st.cfg, st.dist, st.epoch
    batch0 = st.start_batch if epoch == st.start_epoch else 0
    if batch0 == 0:
        seed_epoch(cfg.seed, epoch, dist.rank)
        st.epoch_state = EpochState()
    B.set_trainable(st.model, epoch < cfg.freeze_epochs, cfg.freeze_bn)
    loader = train_loader(
        st.data.train,
        batch_size=st.per_rank,
        epoch=epoch,
        seed=cfg.seed,
        world=dist.world,
        rank=dist.rank,
        skip_batches=batch0,
        workers=cfg.workers,
    )
    mode = R.progress_mode(cfg.progress) if dist.is_main else "none"
    # log lines name the epoch alone: "epoch N/M" starts the epoch's own result line
    label = f"epoch {epoch + 1}" + (f"/{cfg.epochs}" if mode == "bar" else "")
    bar = R.Progress(len(loader), label, mode)
    try:
        st.global_step, stopped = train_one_epoch(
            fwd,
            loader,
            st.optimizer,
            ctx,
            epoch=epoch,
            global_step=st.global_step,
            state=st.epoch_state,
            progress=bar,
        )
    except NonFiniteLoss as e:
        bar.close()
        last = (
            f"the last good checkpoint is {st.run_dir / CHECKPOINT}"
            if (st.run_dir / CHECKPOINT).exists()
            else "no checkpoint was written yet"
        )
        raise NonFiniteLoss(f"{e}; training stopped ({last}); try a lower --lr") from None
    bar.close()
    if stopped:
        raise _interrupted(
            st, f"(epoch {epoch + 1}, batch {st.epoch_state.batches}); continue with"
        )


def end_epoch(st: RunState, ctx: StepContext, stage: Stage) -> None:
    """Evaluate, record the metrics row and the best model, checkpoint at the next epoch."""
    cfg, dist, epoch = st.cfg, st.dist, st.epoch
    row, confusion = epoch_row(
        cfg,
        st.model,
        st.ema,
        st.data,
        epoch,
        st.epoch_state,
        st.optimizer,
        stage,
        st.per_rank,
        dist,
        st.device,
        ctx,
    )
    st.history.append(row)
    st.callbacks.on_epoch_end(epoch + 1, row, confusion)
    update_best(row, st.best, st.model, st.ema, st.run_dir, st.data_cfg, epoch, dist.is_main)
    if dist.is_main:
        R.write_metrics(st.run_dir, st.history)
    save(st, epoch + 1, 0, EpochState())
    fault_point("epoch_end")
    _say(dist, format_row(row, cfg.epochs))
    if st.signals.received is not None:
        raise _interrupted(st, f"after epoch {epoch + 1}; continue with")


def _interrupted(st: RunState, where: str) -> Interrupted:
    name = signal.Signals(st.signals.received).name
    return Interrupted(
        st.signals.received,
        f"{name} received: saved {st.run_dir / CHECKPOINT} {where} "
        f"effnet train --resume {st.run_dir}",
    )


def _train(cfg, run_dir, ckpt, dist, device, signals, data, callbacks: Callbacks) -> dict:
    """Set up (or restore) the run, train its remaining epochs stage by stage, summarise."""
    st = new_run_state(cfg, run_dir, ckpt, dist, device, data, signals)
    st.callbacks = callbacks
    write_run_config(st)
    callbacks.on_train_start(run_dir, cfg.to_dict(), st.model, st.global_step)
    ctx = step_context(st)
    stage_now, fwd, frozen = None, None, None
    st.t_start = time.perf_counter()
    for epoch in range(st.start_epoch, cfg.epochs):
        st.epoch = epoch
        if (epoch < cfg.freeze_epochs) is not frozen:  # the trainable set is DDP's to reduce
            frozen = epoch < cfg.freeze_epochs
            B.set_trainable(st.model, frozen, cfg.freeze_bn)
            fwd = distribute(st.model, cfg, dist, device)
        stage = stage_for_epoch(st.stages, epoch)
        if stage != stage_now:
            if stage_now is not None:
                fault_point("stage_boundary")
            stage_now = stage
            enter_stage(st, ctx, stage)
        train_epoch(st, fwd, ctx)
        end_epoch(st, ctx, stage)
    summary = summarize(
        cfg, run_dir, st.model, data, st.history, st.best, st.wall_time(), dist, st.data_cfg
    )
    callbacks.on_train_end(summary)
    D.barrier()
    if signals.received is not None:
        # A signal after the last epoch's check (e.g. while the summary is written) still stops
        # the caller: the run is complete and checkpointed, but the user asked to stop.
        raise Interrupted(
            signals.received,
            f"{signal.Signals(signals.received).name} received after the last epoch; "
            f"the run in {run_dir} is complete (summary.json written)",
        )
    return summary


def _base_lr(cfg: TrainConfig) -> float:
    return cfg.lr * cfg.batch_size / 256 if cfg.lr_per_256 else cfg.lr


def _write_yaml(path: Path, obj: dict) -> None:
    text = yaml.safe_dump(obj, sort_keys=False)
    R.atomic_write(path, lambda tmp: Path(tmp).write_text(text))
