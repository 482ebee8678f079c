"""Datasets for training: ImageFolder trees, CIFAR-10/100 folders and the built-in ``digits``.

Every dataset yields ``(image tensor, label)`` through a ``transform`` attribute that the trainer
may swap between epochs (progressive learning). Unreadable image files are skipped and counted,
or refused up front with ``strict=True``. Class problems (an empty class folder, a single class,
a split that leaves a class without images) are ValueErrors before training starts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from effnet.data.images import UnreadableImageError, is_image_file, open_rgb, to_rgb

log = logging.getLogger("effnet.data")
DIGITS_SIZE = 32  # the 8x8 digits are upscaled once to this size; crops then resize to the model


class TensorImages(Dataset):
    """In-memory uint8 images (N, 3, H, W) with integer labels."""

    def __init__(self, images: torch.Tensor, targets: list[int], transform=None) -> None:
        self.images, self.targets, self.transform = images, list(targets), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = self.images[i]
        return (self.transform(img) if self.transform else img), self.targets[i]


class ImageFiles(Dataset):
    """Image files with labels. A file that fails to decode yields ``None`` (skipped in collate)."""

    def __init__(self, samples: list[tuple[str, int]], transform=None) -> None:
        self.samples, self.transform = list(samples), transform
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        try:
            img = open_rgb(path)
        except (UnreadableImageError, FileNotFoundError) as e:
            log.warning("skipping unreadable image: %s", e)
            return None
        return (self.transform(img) if self.transform else img), target


class UserImages(Dataset):
    """A user's torch ``Dataset`` of ``(image, label)`` items, seen through ``indices``.

    An image may be a PIL image, an ``HxW``/``HxWxC`` uint8 array, or a ``CxHxW`` tensor (uint8,
    or float in [0, 1]); grayscale and RGBA become RGB. Labels are integers from 0.
    """

    def __init__(self, dataset: Dataset, indices: list[int], targets: list[int], transform=None):
        self.dataset, self.indices, self.targets = dataset, list(indices), list(targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = self.dataset[self.indices[i]]
        if not isinstance(item, tuple | list) or len(item) < 2:
            raise ValueError(
                f"dataset item {self.indices[i]} is a {type(item).__name__}; effnet.train needs "
                "(image, label) pairs"
            )
        img = _user_image(item[0], self.indices[i])
        return (self.transform(img) if self.transform else img), int(item[1])


def _user_image(img: Any, index: int):
    if isinstance(img, Image.Image):
        return to_rgb(img)
    if isinstance(img, np.ndarray):
        return to_rgb(Image.fromarray(img))
    if isinstance(img, torch.Tensor) and img.ndim == 3 and img.shape[0] in (1, 3, 4):
        img = img[:3] if img.shape[0] == 4 else img
        return img.expand(3, -1, -1) if img.shape[0] == 1 else img
    shape = tuple(getattr(img, "shape", ()))
    raise ValueError(
        f"dataset item {index}: image is a {type(img).__name__}{list(shape) if shape else ''}; "
        "use a PIL image, an HxWxC uint8 array or a CxHxW tensor"
    )


def _labels_of(ds: Dataset) -> list[int]:
    """A dataset's labels: its ``targets`` attribute (torchvision datasets have one), or one pass
    over its items."""
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = [ds[i][1] for i in range(len(ds))]
    out = [int(t) for t in (targets.tolist() if hasattr(targets, "tolist") else targets)]
    if len(out) != len(ds):
        raise ValueError(f"dataset has {len(ds)} items but {len(out)} targets")
    return out


def dataset_split(
    dataset: Dataset | tuple[Dataset, Dataset],
    class_names: list[str] | None,
    val_fraction: float,
    seed: int,
) -> DataSplit:
    """A DataSplit of a user's Dataset (split train/val like a folder, stratified and seeded) or
    of a ``(train, val)`` pair. Class names: ``class_names``, else the dataset's ``classes``
    attribute, else ``0 .. N-1``."""
    pair = isinstance(dataset, tuple | list)
    if pair and len(dataset) != 2:
        raise ValueError(f"dataset must be a Dataset or a (train, val) pair, got {len(dataset)}")
    first = dataset[0] if pair else dataset
    if len(first) == 0 or (pair and len(dataset[1]) == 0):
        raise ValueError("dataset is empty")
    labels = [_labels_of(d) for d in (dataset if pair else [dataset])]
    n = max(max(t) for t in labels) + 1
    if min(min(t) for t in labels) < 0:
        raise ValueError("dataset labels must be integers >= 0")
    names = list(class_names or getattr(first, "classes", None) or [str(i) for i in range(n)])
    if len(names) < n:
        raise ValueError(f"dataset has labels up to {n - 1} but {len(names)} class names")
    source = f"python:{type(first).__name__}"
    if pair:
        tr, va = (UserImages(d, range(len(d)), t) for d, t in zip(dataset, labels, strict=True))
        return DataSplit(tr, va, names, source)
    tr_idx, va_idx = split_train_val(labels[0], names, val_fraction, seed)
    def pick(idx: list[int]) -> UserImages:
        return UserImages(dataset, idx, [labels[0][i] for i in idx])

    return DataSplit(pick(tr_idx), pick(va_idx), names, source)


@dataclass
class DataSplit:
    train: Dataset
    val: Dataset
    class_names: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)  # unreadable files left out up front

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def subset(ds: Dataset, n: int, seed: int) -> Dataset:
    """A stratified seeded subset of ``n`` items (keeps every class represented)."""
    if not n or n >= len(ds):
        return ds
    idx = stratified_pick(ds.targets, n / len(ds), seed, at_least_one=True, total=n)
    if isinstance(ds, TensorImages):
        return TensorImages(ds.images[idx], [ds.targets[i] for i in idx], ds.transform)
    if isinstance(ds, UserImages):
        return UserImages(
            ds.dataset, [ds.indices[i] for i in idx], [ds.targets[i] for i in idx], ds.transform
        )
    return ImageFiles([ds.samples[i] for i in idx], ds.transform)


def stratified_pick(
    targets: list[int], fraction: float, seed: int, at_least_one: bool, total: int | None = None
) -> list[int]:
    """A seeded share ``fraction`` of each class's items. With ``total``, exactly ``total`` items
    (per-class counts rounded down, the rest to the classes with the largest remainders), unless
    keeping one per class needs more."""
    rng = np.random.RandomState(seed)
    targets_arr = np.asarray(targets)
    classes = np.unique(targets_arr)
    members = []
    for c in classes:
        m = np.flatnonzero(targets_arr == c)
        rng.shuffle(m)
        members.append(m)
    want = np.array([len(m) * fraction for m in members])
    k = np.floor(want).astype(int) if total is not None else np.round(want).astype(int)
    if at_least_one:
        k = np.maximum(k, 1)
    if total is not None:
        sizes = np.array([len(m) for m in members])
        for i in np.argsort(-(want - np.floor(want)), kind="stable"):
            if k.sum() >= total:
                break
            if k[i] < sizes[i]:
                k[i] += 1
    picked = [int(i) for m, n in zip(members, k, strict=True) for i in m[:n]]
    return sorted(picked)


def split_train_val(
    targets: list[int], class_names: list[str], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    counts = np.bincount(np.asarray(targets), minlength=len(class_names))
    for c, n in enumerate(counts):
        if n < 2:
            raise ValueError(
                f"class {class_names[c]!r} has {n} usable image(s); a train/val split needs at "
                "least 2 per class (add images or provide train/ and val/ folders)"
            )
    val = stratified_pick(targets, val_fraction, seed, at_least_one=True)
    val_set = set(val)
    train = [i for i in range(len(targets)) if i not in val_set]
    return train, val


# ---------------------------------------------------------------- digits


def load_digits_split(val_fraction: float, seed: int) -> DataSplit:
    """sklearn's 1,797 real 8x8 handwritten digits, upscaled to RGB; seeded stratified split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=DIGITS_SIZE, mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    targets = d.target.tolist()
    names = [str(i) for i in range(10)]
    tr, va = split_train_val(targets, names, val_fraction, seed)
    return DataSplit(
        TensorImages(x[tr], [targets[i] for i in tr]),
        TensorImages(x[va], [targets[i] for i in va]),
        names,
        "digits",
    )


# ---------------------------------------------------------------- CIFAR


def _cifar_root(path: Path) -> tuple[str, Path] | None:
    for kind, folder in (("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")):
        if path.name == folder and path.is_dir():
            return kind, path.parent
        if (path / folder).is_dir():
            return kind, path
    return None


def load_cifar_split(kind: str, root: Path) -> DataSplit:
    from torchvision import datasets

    cls = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=False)
        val = cls(str(root), train=False, download=False)
    except RuntimeError as e:
        raise ValueError(f"{root}: incomplete {kind} folder ({str(e).splitlines()[0]})") from None

    def as_tensor(ds) -> torch.Tensor:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()

    return DataSplit(
        TensorImages(as_tensor(train), train.targets),
        TensorImages(as_tensor(val), val.targets),
        list(train.classes),
        kind,
    )


# ---------------------------------------------------------------- ImageFolder


def scan_folder(root: Path, strict: bool) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """(samples, class names, skipped files) of a one-folder-per-class tree."""
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class folders (expected one sub-folder per class)")
    samples: list[tuple[str, int]] = []
    skipped: list[str] = []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (root / name).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        usable = 0
        for f in files:
            reason = _unreadable(f, strict)
            if reason:
                if strict:
                    raise ValueError(f"unreadable image {f}: {reason} (--strict)")
                skipped.append(f"{f}: {reason}")
                continue
            samples.append((str(f), label))
            usable += 1
        if usable == 0:
            raise ValueError(f"class folder {root / name} has no readable images")
    if len(classes) < 2:
        raise ValueError(f"{root}: found one class ({classes[0]!r}); training needs at least 2")
    return samples, classes, skipped


def _unreadable(path: Path, full: bool) -> str | None:
    """Why ``path`` cannot be used, or None. Cheap header check unless ``full`` decodes it."""
    if not is_image_file(path):
        return "not an image file extension"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    if full:
        try:
            open_rgb(path)
        except UnreadableImageError as e:
            return str(e).split(": ", 1)[-1]
        return None
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # PIL raises many types for bad headers
        return f"not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None


def load_folder_split(root: Path, val_fraction: float, seed: int, strict: bool) -> DataSplit:
    if (root / "train").is_dir():
        train, classes, skipped = scan_folder(root / "train", strict)
        val_dir = root / "val" if (root / "val").is_dir() else root / "validation"
        if val_dir.is_dir():
            val, val_classes, skipped_val = scan_folder(val_dir, strict)
            if val_classes != classes:
                extra = sorted(set(val_classes) ^ set(classes))
                raise ValueError(
                    f"{root}: train/ and {val_dir.name}/ have different classes (e.g. {extra[0]!r})"
                )
            return DataSplit(
                ImageFiles(train), ImageFiles(val), classes, str(root), skipped + skipped_val
            )
        samples = train
    else:
        samples, classes, skipped = scan_folder(root, strict)
    targets = [t for _, t in samples]
    tr, va = split_train_val(targets, classes, val_fraction, seed)
    return DataSplit(
        ImageFiles([samples[i] for i in tr]),
        ImageFiles([samples[i] for i in va]),
        classes,
        str(root),
        skipped,
    )


def load_data(
    data: str,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    max_train_samples: int = 0,
    max_val_samples: int = 0,
    dataset: Dataset | tuple[Dataset, Dataset] | None = None,
    class_names: list[str] | None = None,
) -> DataSplit:
    """Resolve ``data`` (``digits``, a CIFAR folder, an ImageFolder tree) to train/val sets, or
    split a user's ``dataset`` (see ``dataset_split``)."""
    if dataset is not None:
        split = dataset_split(dataset, class_names, val_fraction, seed)
    elif data.startswith("python:"):
        raise ValueError(
            f"data {data!r} was a Python Dataset given to effnet.train(dataset=...); pass the "
            "same dataset again (effnet.train(resume=RUN, dataset=...)) or point --data at files"
        )
    elif data == "digits":
        split = load_digits_split(val_fraction, seed)
    else:
        path = Path(os.path.expanduser(data))
        if not path.exists():
            raise FileNotFoundError(
                f"data {data!r}: no such folder "
                "(use 'digits', an ImageFolder tree or a CIFAR folder)"
            )
        cifar = _cifar_root(path)
        if cifar:
            split = load_cifar_split(*cifar)
        else:
            split = load_folder_split(path, val_fraction, seed, strict)
    split.train = subset(split.train, max_train_samples, seed)
    split.val = subset(split.val, max_val_samples, seed + 1)
    if split.skipped:
        log.warning("skipped %d unreadable file(s), e.g. %s", len(split.skipped), split.skipped[0])
    return split


def describe(split: DataSplit) -> dict[str, Any]:
    return {
        "source": split.source,
        "classes": split.num_classes,
        "train_images": len(split.train),
        "val_images": len(split.val),
        "skipped_files": len(split.skipped),
    }
