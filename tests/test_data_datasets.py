"""Datasets: ImageFolder trees with bad files, class problems, CIFAR folders, digits, loaders."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.data.datasets import load_data
from effnet.data.loaders import eval_loader, train_loader
from effnet.data.transforms import batch_mixer, train_transform

CFG = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear"}


def _digit_images(n_per_class=6, classes=3):
    from sklearn.datasets import load_digits

    d = load_digits()
    out = {}
    for c in range(classes):
        imgs = d.images[d.target == c][:n_per_class]
        out[str(c)] = [Image.fromarray((im * 15).astype(np.uint8)).resize((24, 24)) for im in imgs]
    return out


def make_folder(root, n_per_class=6, classes=3, modes=("L",)):
    for c, imgs in _digit_images(n_per_class, classes).items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(imgs):
            mode = modes[i % len(modes)]
            if mode == "I;16":
                im = Image.fromarray(np.asarray(im, dtype=np.uint16) * 256)
                im.save(root / c / f"{i}.png")
            elif mode == "CMYK":
                im.convert("CMYK").save(root / c / f"{i}.jpg")
            else:
                im.convert(mode).save(root / c / f"{i}.png")
    return root


def test_folder_split_is_stratified_seeded_and_converts_modes(tmp_path):
    root = make_folder(tmp_path / "d", 10, 3, modes=("L", "RGBA", "P", "CMYK", "I;16", "RGB"))
    a = load_data(str(root), val_fraction=0.2, seed=1)
    b = load_data(str(root), val_fraction=0.2, seed=1)
    assert a.class_names == ["0", "1", "2"] and len(a.val) == 6 and len(a.train) == 24
    assert a.val.samples == b.val.samples
    assert sorted(a.val.targets) == [0, 0, 1, 1, 2, 2]
    c = load_data(str(root), val_fraction=0.2, seed=2)
    assert c.val.samples != a.val.samples
    a.train.transform = train_transform(CFG, 32, augment="randaugment", magnitude=9)
    for i in range(len(a.train)):  # every mode decodes to a 3-channel tensor
        x, _ = a.train[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_unreadable_files_are_skipped_and_counted_or_refused_with_strict(tmp_path):
    root = make_folder(tmp_path / "d", 6, 2)
    (root / "0" / "empty.png").write_bytes(b"")
    (root / "0" / "notes.txt").write_text("not an image")
    (root / "1" / "fake.jpg").write_text("<html>not a jpeg</html>")
    good = (root / "1" / "0.png").read_bytes()
    (root / "1" / "truncated.png").write_bytes(good[: len(good) // 2])
    split = load_data(str(root), seed=0)
    assert len(split.skipped) == 4
    assert any("empty file" in s for s in split.skipped)
    assert len(split.train) + len(split.val) == 12
    with pytest.raises(ValueError, match=r"unreadable image .*--strict"):
        load_data(str(root), strict=True)


def test_corrupt_file_found_at_load_time_is_skipped_in_the_batch(tmp_path):
    root = make_folder(tmp_path / "d", 6, 2)
    split = load_data(str(root), seed=0)
    path, _ = split.train.samples[0]
    with open(path, "wb") as f:  # damaged after the scan
        f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    split.train.transform = train_transform(CFG, 32)
    batches = list(train_loader(split.train, batch_size=len(split.train), epoch=0, seed=0))
    ((x, _, skipped),) = batches
    assert skipped == 1 and x.shape[0] == len(split.train) - 1


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("empty_class", "has no readable images"),
        ("one_class", "found one class"),
        ("lonely_image", "has 1 usable image"),
        ("no_classes", "no class folders"),
        ("val_mismatch", "different classes"),
    ],
)
def test_class_problems_are_clear_errors(tmp_path, setup, needle):
    root = tmp_path / "d"
    if setup == "empty_class":
        make_folder(root, 4, 2)
        (root / "9").mkdir()
    elif setup == "one_class":
        make_folder(root, 4, 1)
    elif setup == "lonely_image":
        make_folder(root, 4, 2)
        (root / "9").mkdir()
        (root / "0" / "0.png").rename(root / "9" / "only.png")
    elif setup == "no_classes":
        root.mkdir()
        (root / "a.png").write_bytes(b"x")
    elif setup == "val_mismatch":
        make_folder(root / "train", 4, 2)
        make_folder(root / "val", 4, 3)
    with pytest.raises(ValueError, match=needle):
        load_data(str(root))


def test_train_val_folders_are_used_as_given(tmp_path):
    make_folder(tmp_path / "d" / "train", 5, 2)
    make_folder(tmp_path / "d" / "val", 2, 2)
    s = load_data(str(tmp_path / "d"))
    assert (len(s.train), len(s.val)) == (10, 4)


def test_cifar_folder_in_torchvision_format(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    # Real CIFAR files carry known md5 sums; these small stand-ins have the same layout.
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.RandomState(0)
    for name, n in [*[(f"data_batch_{i}", 4) for i in range(1, 6)], ("test_batch", 6)]:
        batch = {
            "data": rng.randint(0, 255, (n, 3072), dtype=np.uint8),
            "labels": list(rng.randint(0, 10, n)),
        }
        (base / name).write_bytes(pickle.dumps(batch))
    names = [f"c{i}" for i in range(10)]
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    s = load_data(str(tmp_path))
    assert s.source == "cifar10" and s.class_names == names
    assert (len(s.train), len(s.val)) == (20, 6)
    assert s.train.images.shape == (20, 3, 32, 32)


def test_digits_and_subsets():
    s = load_data("digits", seed=0, max_train_samples=100, max_val_samples=50)
    assert s.num_classes == 10 and s.source == "digits"
    assert 95 <= len(s.train) <= 105 and set(s.train.targets) == set(range(10))
    full = load_data("digits", seed=0)
    assert len(full.train) + len(full.val) == 1797


def test_epoch_order_is_seeded_and_shards_partition_the_global_batch():
    s = load_data("digits", max_train_samples=128)
    s.train.transform = None

    def order(epoch, world=1, rank=0, bs=16, skip=0):
        loader = train_loader(
            s.train, batch_size=bs, epoch=epoch, seed=0, world=world, rank=rank, skip_batches=skip
        )
        return list(loader.sampler)

    assert order(0) == order(0) and order(0) != order(1)
    assert order(0, skip=2) == order(0)[32:]
    one = order(0)
    r0, r1 = order(0, 2, 0, 8), order(0, 2, 1, 8)
    assert sorted(r0[:8] + r1[:8]) == sorted(one[:16])  # same global first batch
    ev = [list(eval_loader(s.val, batch_size=8, world=2, rank=r).sampler) for r in (0, 1)]
    assert sorted(ev[0] + ev[1]) == list(range(len(s.val)))


def test_batch_mixer_gives_soft_labels():
    assert batch_mixer(0.0, 0.0, 5) is None
    mix = batch_mixer(0.4, 1.0, 5)
    _, y = mix(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert y.shape == (4, 5) and torch.allclose(y.sum(1), torch.ones(4))
