"""What each epoch and the whole run produce: metrics rows, the best model, the summary."""

from __future__ import annotations

import torch

from effnet.data.loaders import eval_loader
from effnet.training import distributed as D
from effnet.training.loop import evaluate
from effnet.training.report import SKIPPED, SUMMARY, plot_curves, write_json
from effnet.weights.serialize import save_model


def epoch_row(cfg, model, ema, data, epoch, st, optimizer, stage, per_rank, dist, device, ctx):
    """The epoch's metrics row and its validation confusion matrix."""
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
    return row, ev["confusion"]


def update_best(row, best, model, ema, run_dir, data_cfg, epoch, save: bool) -> None:
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


def format_row(row: dict, epochs: int) -> str:
    ema = f"  ema {row['val_top1_ema']:.2f}" if "val_top1_ema" in row else ""
    return (
        f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  val top-1 "
        f"{row['val_top1']:.2f}  top-5 {row['val_top5']:.2f}{ema}  lr {row['lr']:.3g}  "
        f"{row['train_images_per_s']:.0f} img/s"
    )


def summarize(cfg, run_dir, model, data, history, best, wall, dist, data_cfg) -> dict:
    last = history[-1]
    train_images = sum(len(data.train) // cfg.batch_size * cfg.batch_size for _ in history)
    ips = [r["train_images_per_s"] for r in history]
    summary = {
        "run_dir": str(run_dir),
        "model": cfg.model,
        "data": data.source,
        "params": sum(p.numel() for p in model.parameters()),  # as built (model_kwargs applied)
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
        "skipped_list": SKIPPED if data.skipped else None,  # in the run folder
    }
    if dist.is_main:
        save_model(
            model,
            run_dir / "model_last.safetensors",
            class_names=data.class_names,
            data_config=data_cfg,
            epoch=len(history),
        )
        write_json(run_dir / SUMMARY, summary)
        plot_curves(run_dir, history, f"{cfg.model} on {data.source} ({run_dir.name})")
    return summary
