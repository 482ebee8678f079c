"""Data loaders with a deterministic order per epoch (from seed + epoch), resumable mid-epoch.

The order is a ``DistributedSampler`` permutation (also with one process), so a run with N
processes sees the same global order as a run with one; a resumed epoch skips the batches that
were already trained on.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.data.dataloader import default_collate


def skipping_collate(batch):
    """Collate, dropping items a dataset returned as None (unreadable files); count them."""
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return None, None, skipped
    images, targets = default_collate(good)
    return images, targets, skipped


def epoch_indices(
    ds: Dataset, *, epoch: int, seed: int, world: int, rank: int, shuffle: bool, drop_last: bool
) -> list[int]:
    sampler = DistributedSampler(
        ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def train_loader(
    ds: Dataset,
    *,
    batch_size: int,
    epoch: int,
    seed: int,
    world: int = 1,
    rank: int = 0,
    skip_batches: int = 0,
    workers: int = 0,
) -> DataLoader:
    """This process's batches of ``epoch`` (``batch_size`` is per process), minus the first
    ``skip_batches`` (already trained on before a resume)."""
    idx = epoch_indices(
        ds, epoch=epoch, seed=seed, world=world, rank=rank, shuffle=True, drop_last=True
    )
    n = (len(idx) // batch_size) * batch_size
    idx = idx[skip_batches * batch_size : n]
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)  # worker seeds per epoch
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=idx,
        num_workers=workers,
        collate_fn=skipping_collate,
        generator=gen,
        drop_last=True,
        persistent_workers=False,
    )


def steps_per_epoch(ds: Dataset, batch_size: int, world: int) -> int:
    per_rank = len(ds) // world
    steps = per_rank // batch_size
    if steps < 1:
        raise ValueError(
            f"batch_size {batch_size * world} is larger than the {len(ds)} training images; "
            "lower --batch-size"
        )
    return steps


def eval_loader(
    ds: Dataset, *, batch_size: int, world: int = 1, rank: int = 0, workers: int = 0
) -> DataLoader:
    """Each process evaluates a disjoint shard (rank::world), so counts add up exactly."""
    idx = list(range(rank, len(ds), world))
    return DataLoader(
        ds, batch_size=batch_size, sampler=idx, num_workers=workers, collate_fn=skipping_collate
    )
