"""Corrupt files are refused with one clear line, never loaded with different content."""

import random

import pytest
import torch

import effnet
from effnet.weights import read_pretrained
from effnet.weights.integrity import CHECKPOINT_KEY, SAFETENSORS_KEY, IntegrityError
from effnet.weights.loading import read_safetensors
from effnet.weights.serialize import read_model_file, save_checkpoint


def _checkpoint(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "build_args": model.build_args,
        "epoch": 3,
        "rng": torch.get_rng_state(),
    }


def _flip(path, pos, bit=0x10):
    data = bytearray(path.read_bytes())
    data[pos] ^= bit
    path.write_bytes(bytes(data))


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _loaders(path):
    """Every public way a user can hand effnet a model file."""
    return {
        "load_model": lambda: effnet.load_model(path),
        "read_model_file": lambda: read_model_file(path)[0],
        "create_model(pretrained=)": lambda: effnet.create_model(
            "efficientnet_b0",
            num_classes=4,
            width_mult=0.25,
            depth_mult=0.25,
            image_size=32,
            pretrained=str(path),
        ),
        "read_pretrained": lambda: read_pretrained(str(path), "efficientnet_b0").state_dict,
    }


def test_model_file_carries_checksum(tmp_path, tiny):
    path = effnet.save_model(tiny, tmp_path / "m.safetensors")
    _, header = read_safetensors(path)
    assert len(header[SAFETENSORS_KEY]) == 64
    loaded = effnet.load_model(path)
    assert _same_state(loaded.state_dict(), tiny.state_dict())


def test_checkpoint_carries_checksum(tmp_path, tiny):
    path = save_checkpoint(_checkpoint(tiny), tmp_path / "checkpoint_last.pt")
    raw = torch.load(path, weights_only=True)
    assert len(raw[CHECKPOINT_KEY]) == 64
    state, meta = read_model_file(path)
    assert _same_state(state, tiny.state_dict())
    assert meta["build_args"] == tiny.build_args


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_bit_flips_never_load_different_content(tmp_path, tiny, suffix, figures):
    """A single flipped bit anywhere: refused with a one-line error, or (when it hit bytes that
    carry no content, such as zip bookkeeping) the content loads bit-identical."""
    src = tmp_path / f"orig{suffix}"
    if suffix == ".pt":
        save_checkpoint(_checkpoint(tiny), src)
    else:
        effnet.save_model(tiny, src)
    ref_state, _ = read_model_file(src)
    size = src.stat().st_size
    rng = random.Random(0)
    # Positions spread over the whole file, plus a dense sample of the first 4 KiB (headers).
    positions = sorted({*rng.sample(range(size), 60), *rng.sample(range(min(size, 4096)), 40)})
    refused = 0
    for pos in positions:
        bad = tmp_path / f"bad{suffix}"
        bad.write_bytes(src.read_bytes())
        _flip(bad, pos, 1 << rng.randrange(8))
        try:
            state, _ = read_model_file(bad)
        except ValueError as e:
            assert "\n" not in str(e)
            assert str(bad) in str(e)
            refused += 1
            continue
        assert _same_state(state, ref_state), f"flip at byte {pos} of {size} loaded silently"
    figures("fault", f"bit flip ({suffix})", count=len(positions))
    figures("bad_input", f"bit-flipped {suffix} files", count=len(positions))
    assert refused >= len(positions) // 2  # most bytes of a model file are content


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_flip_in_tensor_data_is_a_checksum_error_on_every_path(tmp_path, tiny, suffix, figures):
    path = tmp_path / f"m{suffix}"
    if suffix == ".pt":
        save_checkpoint(_checkpoint(tiny), path)
    else:
        effnet.save_model(tiny, path)
    # The middle of the file is tensor bytes in both formats; neither format notices by itself.
    _flip(path, path.stat().st_size // 2)
    for name, load in _loaders(path).items():
        with pytest.raises(IntegrityError, match="checksum mismatch") as e:
            load()
        assert "\n" not in str(e.value), name
        figures("bad_input", f"bit-flipped {suffix} via {name}")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_files_are_refused(tmp_path, tiny, suffix, keep, figures):
    path = tmp_path / f"m{suffix}"
    if suffix == ".pt":
        save_checkpoint(_checkpoint(tiny), path)
    else:
        effnet.save_model(tiny, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    for name, load in _loaders(path).items():
        with pytest.raises(ValueError) as e:
            load()
        assert "\n" not in str(e.value) and str(path) in str(e.value), name
    figures("fault", f"truncated {suffix}")
    figures("bad_input", f"truncated {suffix} ({keep:.1%} kept)", count=len(_loaders(path)))


def test_damaged_checksum_key_cannot_switch_the_check_off(tmp_path, tiny):
    path = effnet.save_model(tiny, tmp_path / "m.safetensors")
    data = path.read_bytes()
    at = data.index(SAFETENSORS_KEY.encode())
    path.write_bytes(data[:at] + b"X" + data[at + 1 :])  # same length: header still parses
    with pytest.raises(IntegrityError, match="checksum is missing"):
        effnet.load_model(path)


def test_foreign_files_without_checksum_still_load(tmp_path, tiny):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    save_file(state, tmp_path / "plain.safetensors")
    torch.save(state, tmp_path / "plain.pth")
    for name in ("plain.safetensors", "plain.pth"):
        weights = read_pretrained(str(tmp_path / name), "efficientnet_b0")
        assert _same_state({k: weights.state_dict[k] for k in state}, state), name
