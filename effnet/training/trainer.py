"""Orchestration of a training run: setup, the epoch loop, checkpoints, resume, signals."""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effnet.data.datasets import describe, load_data
from effnet.data.loaders import steps_per_epoch, train_loader
from effnet.training import builders as B
from effnet.training import distributed as D
from effnet.training import report as R
from effnet.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, set_rng_state
from effnet.training.config import TrainConfig, from_dict
from effnet.training.faults import fault_point
from effnet.training.lock import RunLock
from effnet.training.loop import EpochState, NonFiniteLoss, StepContext, train_one_epoch
from effnet.training.optim import EMA, build_optimizer
from effnet.training.results import epoch_row, format_row, summarize, update_best
from effnet.training.schedule import lr_at, stage_for_epoch
from effnet.training.signals import Interrupted, SignalFlag
from effnet.weights.serialize import remove_stale_temps

log = logging.getLogger("effnet.train")
# Options a resumed run may change; everything else comes from the run's own config.
RESUME_OVERRIDES = ("epochs", "device", "workers", "progress", "threads", "checkpoint_every")


def default_run_dir(cfg: TrainConfig) -> Path:
    data = Path(cfg.data).name or "data"
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


def run(
    cfg: TrainConfig | None, resume: str | Path | None = None, resume_overrides: dict | None = None
) -> dict:
    """Train according to ``cfg``, or continue the run in ``resume`` (its own config plus
    ``resume_overrides``, e.g. more epochs); return the summary."""
    if resume is not None:
        RunLock.check(resume if Path(resume).is_dir() else Path(resume).parent)
        cfg, ckpt = resume_config(resume, resume_overrides)
        run_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent
    else:
        cfg, run_dir, ckpt = prepare(cfg, None)
    dist = D.env_info()
    device = D.device_for(cfg.device, dist)
    # Data problems (missing folder, empty class, one class) surface before the run folder exists.
    data = load_data(
        cfg.data,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        strict=cfg.strict,
        max_train_samples=cfg.max_train_samples,
        max_val_samples=cfg.max_val_samples,
    )
    D.setup(device)
    lock = RunLock(run_dir).acquire() if dist.is_main else None
    if lock:  # a killed run may have left a half-written temp file; the lock makes removal safe
        remove_stale_temps(run_dir)
    try:
        with SignalFlag() as signals:
            return _train(cfg, run_dir, ckpt, dist, device, signals, data)
    finally:
        if lock:
            lock.release()
        D.teardown()


def _say(dist: D.DistInfo, msg: str) -> None:
    if dist.is_main:
        print(msg, file=sys.stderr, flush=True)


def _train(cfg, run_dir, ckpt, dist, device, signals, data) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_epoch(cfg.seed, -1, 0)  # model init is identical on every process
    if cfg.batch_size % dist.world:
        raise ValueError(f"batch_size {cfg.batch_size} must divide by the {dist.world} processes")
    per_rank = cfg.batch_size // dist.world
    spe = steps_per_epoch(data.train, per_rank, dist.world)
    model = B.build_model(cfg, data.num_classes, data.class_names).to(device)
    data_cfg = dict(model.pretrained_cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.activation_recompute and hasattr(model, "set_activation_recompute"):
        model.set_activation_recompute(True)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    default_dropout = model.dropout.p
    stages = B.stages_for(cfg, default_dropout)
    start_epoch, start_batch, global_step, history, wall0 = 0, 0, 0, [], 0.0
    epoch_state = EpochState()
    best = {"top1": -1.0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, start_batch = int(ckpt["epoch"]), int(ckpt["batch"])
        global_step, history = int(ckpt["global_step"]), list(ckpt["history"])
        wall0, best = float(ckpt["wall_time"]), dict(ckpt["best"])
        epoch_state = EpochState(**ckpt["epoch_state"])
        if start_batch:
            set_rng_state(ckpt["rng"])
        _say(dist, f"resuming {run_dir} at epoch {start_epoch + 1}, batch {start_batch}")
        fault_point("after_resume")
    net: nn.Module = model
    if cfg.sync_bn and dist.enabled and device.type == "cpu":
        raise ValueError("sync_bn needs GPUs (torch's SyncBatchNorm has no CPU kernel)")
    if cfg.sync_bn and dist.enabled:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    fwd = torch.compile(net) if cfg.compile else net
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        R.write_json(run_dir / "config.json", cfg.to_dict())
        _write_yaml(run_dir / "config.yaml", cfg.to_dict())
    info = describe(data)
    _say(
        dist,
        f"effnet train: {cfg.model} on {info['source']} ({info['classes']} classes, "
        f"{info['train_images']} train / {info['val_images']} val images, "
        f"{info['skipped_files']} unreadable skipped) -> {run_dir}",
    )
    total_steps = spe * cfg.epochs
    ctx = StepContext(
        device=device,
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
        amp_dtype=B.amp_dtype(cfg, device),
        scaler=scaler,
        clip_grad=cfg.clip_grad,
        ema=ema,
        channels_last=cfg.channels_last,
    )
    stage_now = None
    t_start = time.perf_counter()

    def checkpoint(epoch: int, batch: int, state: EpochState) -> None:
        if not dist.is_main:
            return
        save_checkpoint(
            run_dir / CHECKPOINT,
            model=model,
            optimizer=optimizer,
            ema=ema,
            scaler=scaler,
            extra={
                "config": cfg.to_dict(),
                "epoch": epoch,
                "batch": batch,
                "global_step": ctx_step[0],
                "history": history,
                "best": best,
                "epoch_state": state.to_dict(),
                "class_names": data.class_names,
                "stage": stage_for_epoch(stages, epoch).index,
                "wall_time": wall0 + time.perf_counter() - t_start,
            },
        )

    ctx_step = [global_step]

    def after_step(step: int, state: EpochState) -> bool:
        ctx_step[0] = step
        stop = D.broadcast_flag(signals.received is not None, device)
        if stop or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
            checkpoint(epoch, state.batches, state)
        return stop

    ctx.after_step = after_step
    for epoch in range(start_epoch, cfg.epochs):
        stage = stage_for_epoch(stages, epoch)
        if stage != stage_now:
            if stage_now is not None:
                fault_point("stage_boundary")
            stage_now = stage
            train_tf, eval_tf = B.transforms_for(cfg, data_cfg, stage.image_size, stage.magnitude)
            data.train.transform, data.val.transform = train_tf, eval_tf
            model.set_dropout(stage.dropout)
            ctx.mixer = B.mixer_for(cfg, stage.mixup, data.num_classes)
            if cfg.progressive:
                _say(
                    dist,
                    f"stage {stage.index + 1}/{len(stages)} (epochs {stage.first_epoch + 1}"
                    f"-{stage.last_epoch}): image size {stage.image_size}, RandAugment "
                    f"magnitude {stage.magnitude}, mixup {stage.mixup}, "
                    f"dropout {stage.dropout}",
                )
        batch0 = start_batch if epoch == start_epoch else 0
        if batch0 == 0:
            seed_epoch(cfg.seed, epoch, dist.rank)
            epoch_state = EpochState()
        B.set_trainable(model, epoch < cfg.freeze_epochs, cfg.freeze_bn)
        loader = train_loader(
            data.train,
            batch_size=per_rank,
            epoch=epoch,
            seed=cfg.seed,
            world=dist.world,
            rank=dist.rank,
            skip_batches=batch0,
            workers=cfg.workers,
        )
        bar = R.Progress(
            len(loader), f"epoch {epoch + 1}/{cfg.epochs}", dist.is_main and _bar_enabled(cfg)
        )
        try:
            ctx_step[0], stopped = train_one_epoch(
                fwd,
                loader,
                optimizer,
                ctx,
                epoch=epoch,
                global_step=ctx_step[0],
                state=epoch_state,
                progress=bar,
            )
        except NonFiniteLoss as e:
            bar.close()
            last = (
                f"the last good checkpoint is {run_dir / CHECKPOINT}"
                if (run_dir / CHECKPOINT).exists()
                else "no checkpoint was written yet"
            )
            raise NonFiniteLoss(f"{e}; training stopped ({last}); try a lower --lr") from None
        bar.close()
        if stopped:
            name = signal.Signals(signals.received).name
            raise Interrupted(
                signals.received,
                f"{name} received: saved {run_dir / CHECKPOINT} "
                f"(epoch {epoch + 1}, batch {epoch_state.batches}); continue with "
                f"effnet train --resume {run_dir}",
            )
        row = epoch_row(
            cfg, model, ema, data, epoch, epoch_state, optimizer, stage, per_rank, dist, device, ctx
        )
        history.append(row)
        update_best(row, best, model, ema, run_dir, data_cfg, epoch, dist.is_main)
        if dist.is_main:
            R.write_metrics(run_dir, history)
        checkpoint(epoch + 1, 0, EpochState())
        fault_point("epoch_end")
        _say(dist, format_row(row, cfg.epochs))
        if signals.received is not None:
            name = signal.Signals(signals.received).name
            raise Interrupted(
                signals.received,
                f"{name} received: saved {run_dir / CHECKPOINT} "
                f"after epoch {epoch + 1}; continue with effnet train --resume "
                f"{run_dir}",
            )
    wall = wall0 + time.perf_counter() - t_start
    summary = summarize(cfg, run_dir, model, data, history, best, wall, dist, data_cfg)
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


def _bar_enabled(cfg: TrainConfig) -> bool:
    return cfg.progress == "bar" or (cfg.progress == "auto" and sys.stderr.isatty())


def _write_yaml(path: Path, obj: dict) -> None:
    import yaml

    text = yaml.safe_dump(obj, sort_keys=False)
    R.atomic_write(path, lambda tmp: Path(tmp).write_text(text))
