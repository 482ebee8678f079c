"""Orchestration of a training run: setup, the epoch loop, checkpoints, resume, signals."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effnet.data.datasets import describe, load_data
from effnet.data.loaders import eval_loader, steps_per_epoch, train_loader
from effnet.training import builders as B
from effnet.training import distributed as D
from effnet.training import report as R
from effnet.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, set_rng_state
from effnet.training.config import TrainConfig, from_dict
from effnet.training.faults import fault_point
from effnet.training.lock import RunLock
from effnet.training.loop import EpochState, NonFiniteLoss, StepContext, evaluate, train_one_epoch
from effnet.training.optim import EMA, build_optimizer
from effnet.training.schedule import lr_at, stage_for_epoch
from effnet.weights.serialize import remove_stale_temps, save_model

log = logging.getLogger("effnet.train")
# Options a resumed run may change; everything else comes from the run's own config.
RESUME_OVERRIDES = ("epochs", "device", "workers", "progress", "threads", "checkpoint_every")


class Interrupted(Exception):
    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def default_run_dir(cfg: TrainConfig) -> Path:
    data = Path(cfg.data).name or "data"
    return Path("runs") / f"{cfg.model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = (seed * 1_000_003 + epoch * 7_919 + rank) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


class _Signals:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint at the next step and exits."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


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
        with _Signals() as signals:
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
        row = _epoch_row(
            cfg, model, ema, data, epoch, epoch_state, optimizer, stage, per_rank, dist, device, ctx
        )
        history.append(row)
        _update_best(row, best, model, ema, run_dir, data_cfg, epoch, dist.is_main)
        if dist.is_main:
            R.write_metrics(run_dir, history)
        checkpoint(epoch + 1, 0, EpochState())
        fault_point("epoch_end")
        _say(dist, _format_row(row, cfg.epochs))
        if signals.received is not None:
            name = signal.Signals(signals.received).name
            raise Interrupted(
                signals.received,
                f"{name} received: saved {run_dir / CHECKPOINT} "
                f"after epoch {epoch + 1}; continue with effnet train --resume "
                f"{run_dir}",
            )
    wall = wall0 + time.perf_counter() - t_start
    summary = _finish(cfg, run_dir, model, data, history, best, wall, dist, data_cfg)
    D.barrier()
    return summary


def _base_lr(cfg: TrainConfig) -> float:
    return cfg.lr * cfg.batch_size / 256 if cfg.lr_per_256 else cfg.lr


def _bar_enabled(cfg: TrainConfig) -> bool:
    return cfg.progress == "bar" or (cfg.progress == "auto" and sys.stderr.isatty())


def _epoch_row(cfg, model, ema, data, epoch, st, optimizer, stage, per_rank, dist, device, ctx):
    sums = D.all_sum(torch.tensor([st.loss_sum, st.images, st.skipped], dtype=torch.float64))
    ev_loader = eval_loader(
        data.val,
        batch_size=max(per_rank, 64),
        world=dist.world,
        rank=dist.rank,
        workers=cfg.workers,
    )
    ev = evaluate(model, ev_loader, device, data.num_classes, ctx.amp_dtype, cfg.channels_last)
    row = {
        "epoch": epoch + 1,
        "stage": stage.index + 1,
        "image_size": stage.image_size,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": float(sums[0] / max(1.0, float(sums[1]))),
        "train_images_per_s": float(sums[1]) / max(1e-9, st.seconds),
        "skipped_images": int(sums[2]),
        "val_loss": ev["loss"],
        "val_top1": ev["top1"],
        "val_top5": ev["top5"],
    }
    if ema is not None:
        ev_e = evaluate(
            ema.module, ev_loader, device, data.num_classes, ctx.amp_dtype, cfg.channels_last
        )
        row.update(val_top1_ema=ev_e["top1"], val_top5_ema=ev_e["top5"])
    return row


def _update_best(row, best, model, ema, run_dir, data_cfg, epoch, save: bool) -> None:
    use_ema = ema is not None and row["val_top1_ema"] > row["val_top1"]
    top1 = row["val_top1_ema"] if use_ema else row["val_top1"]
    if top1 > best["top1"]:
        top5 = row["val_top5_ema"] if use_ema else row["val_top5"]
        best.update(top1=top1, top5=top5, epoch=epoch + 1, weights="ema" if use_ema else "raw")
        if not save:
            return
        src = ema.module if use_ema else model
        src.class_names = model.class_names
        save_model(
            src,
            run_dir / "model_best.safetensors",
            class_names=model.class_names,
            data_config=data_cfg,
            epoch=epoch + 1,
            top1=top1,
        )


def _format_row(row: dict, epochs: int) -> str:
    ema = f"  ema {row['val_top1_ema']:.2f}" if "val_top1_ema" in row else ""
    return (
        f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  val top-1 "
        f"{row['val_top1']:.2f}  top-5 {row['val_top5']:.2f}{ema}  lr {row['lr']:.3g}  "
        f"{row['train_images_per_s']:.0f} img/s"
    )


def _finish(cfg, run_dir, model, data, history, best, wall, dist, data_cfg) -> dict:
    last = history[-1]
    train_images = sum(len(data.train) // cfg.batch_size * cfg.batch_size for _ in history)
    ips = [r["train_images_per_s"] for r in history]
    summary = {
        "run_dir": str(run_dir),
        "model": cfg.model,
        "data": data.source,
        "classes": data.num_classes,
        "epochs": len(history),
        "best_top1": best["top1"],
        "best_top5": best.get("top5"),
        "best_epoch": best.get("epoch"),
        "best_weights": best.get("weights"),
        "final_top1": last["val_top1"],
        "final_top5": last["val_top5"],
        "final_top1_ema": last.get("val_top1_ema"),
        "wall_time_s": round(wall, 2),
        "images_per_s": round(sum(ips) / len(ips), 1),
        "train_images_seen": train_images,
        "skipped_files": len(data.skipped),
    }
    if dist.is_main:
        save_model(
            model,
            run_dir / "model_last.safetensors",
            class_names=data.class_names,
            data_config=data_cfg,
            epoch=len(history),
        )
        R.write_json(run_dir / R.SUMMARY, summary)
        R.plot_curves(run_dir, history)
    return summary


def _write_yaml(path: Path, obj: dict) -> None:
    import yaml

    text = yaml.safe_dump(obj, sort_keys=False)
    R.atomic_write(path, lambda tmp: Path(tmp).write_text(text))
