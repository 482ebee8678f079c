"""Does the input pipeline keep up? Loader throughput on synthetic JPEGs, to set against the
training throughput from the benchmark (a ratio above 1 means the model is not starved)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2 as T


class _JpegFolder(torch.utils.data.Dataset):
    def __init__(self, files: list[Path], transform: Callable) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB")), i % 1000


def write_jpegs(folder: Path, n: int, size: tuple[int, int] = (500, 375)) -> list[Path]:
    """``n`` photo-sized JPEGs (smooth gradients plus noise, so they decode like photos)."""
    g = torch.Generator().manual_seed(0)
    files = []
    w, h = size
    ramp = torch.linspace(0, 1, w).expand(h, w)
    for i in range(n):
        base = torch.stack([ramp, ramp.flip(1), ramp.t()[:h, :w] if h >= w else ramp * 0.5])
        img = (base * 200 + torch.rand(3, h, w, generator=g) * 55).clamp(0, 255).byte()
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path, quality=90)
        files.append(path)
    return files


def train_transform(image_size: int) -> T.Compose:
    """The usual ImageNet training pipeline: random resized crop, flip, scale, normalise."""
    return T.Compose(
        [
            T.ToImage(),
            T.RandomResizedCrop(image_size, antialias=True),
            T.RandomHorizontalFlip(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )


def loader_throughput(
    image_size: int = 224,
    batch_size: int = 16,
    workers: int = 1,
    n_images: int = 96,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Images per second a DataLoader delivers (decode + augment + collate), after one warm-up
    batch; ``workers`` processes decode in parallel with the caller."""
    if workers < 0 or batch_size < 1 or n_images < 2 * batch_size:
        raise ValueError(
            f"need workers >= 0, batch_size >= 1 and n_images >= 2 * batch_size, got "
            f"{workers}, {batch_size}, {n_images}"
        )
    with tempfile.TemporaryDirectory(prefix="effnet-loader-") as tmp:
        log(f"loader: writing {n_images} synthetic JPEGs")
        files = write_jpegs(Path(tmp), n_images)
        loader = torch.utils.data.DataLoader(
            _JpegFolder(files, train_transform(image_size)),
            batch_size=batch_size,
            num_workers=workers,
            shuffle=True,
            drop_last=True,
        )
        it = iter(loader)
        next(it)  # workers start, first batch
        t0 = time.perf_counter()
        n = sum(len(x) for x, _ in it)
        dt = time.perf_counter() - t0
    return {"img_s": n / dt, "workers": workers, "images": n, "image_size": image_size}
