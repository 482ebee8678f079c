"""A write failing part-way (disk full, I/O error) keeps the previous file intact and says so."""

import errno
import os

import pytest
import torch
from reliability_helpers import tiny_model

import effnet
from effnet.weights.serialize import WriteError, read_model_file, save_checkpoint


def _half_then(exc):
    """A writer that gets half the bytes onto disk, then fails like a full disk would."""

    def write(data: bytes, tmp):
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
        raise exc

    return write


def _assert_clean(folder, name):
    left = [p.name for p in folder.iterdir() if p.name.startswith(f".{name}.")]
    assert not left, f"temporary files left behind: {left}"


def _model_bytes(model, tmp_path):
    path = effnet.save_model(model, tmp_path / "scratch" / "m.safetensors")
    return path.read_bytes()


FAULTS = {
    "ENOSPC in write": ("write", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))),
    "EIO in write": ("write", OSError(errno.EIO, os.strerror(errno.EIO))),
    "ENOSPC from safetensors": ("write", RuntimeError("I/O error: No space left (os error 28)")),
    "ENOSPC in fsync": ("fsync", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))),
    "EIO in rename": ("replace", OSError(errno.EIO, os.strerror(errno.EIO))),
}


def _inject(monkeypatch, where, exc, kind):
    if where == "fsync":

        def fsync(fd):
            raise exc

        monkeypatch.setattr(os, "fsync", fsync)
    elif where == "replace":

        def replace(*a, **k):
            raise exc

        monkeypatch.setattr(os, "replace", replace)
    elif kind == "model":
        import safetensors.torch

        real_save = safetensors.torch.save

        def save_file(tensors, filename, metadata=None):
            _half_then(exc)(real_save(tensors, metadata=metadata), filename)

        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    else:

        def save(obj, f, *a, **k):
            import io

            buf = io.BytesIO()
            torch.serialization.save(obj, buf)
            _half_then(exc)(buf.getvalue(), f)

        monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("kind", ["model", "checkpoint"])
def test_failed_write_keeps_previous_file(tmp_path, monkeypatch, fault, kind, figures):
    old, new = tiny_model(), tiny_model()
    name = "model_last.safetensors" if kind == "model" else "checkpoint_last.pt"
    path = tmp_path / name

    def write(model):
        if kind == "model":
            return effnet.save_model(model, path)
        return save_checkpoint({"model": model.state_dict(), "build_args": model.build_args}, path)

    write(old)
    before = path.read_bytes()
    where, exc = FAULTS[fault]
    with monkeypatch.context() as m:
        _inject(m, where, exc, kind)
        with pytest.raises(WriteError) as e:
            write(new)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert f"the previous {name} is unchanged" in msg
    if "ENOSPC" in fault:
        assert "disk full" in msg
    assert path.read_bytes() == before
    state, _ = read_model_file(path)
    ref = old.state_dict()
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    _assert_clean(tmp_path, name)
    figures("fault", f"storage: {fault} ({kind})")
    figures("files_lost", f"storage: {fault} ({kind})", count=0)


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    _inject(monkeypatch, "write", OSError(errno.ENOSPC, "No space left on device"), "model")
    with pytest.raises(WriteError, match=r"no m\.safetensors was written"):
        effnet.save_model(tiny_model(), path)
    assert not path.exists()
    _assert_clean(tmp_path, "m.safetensors")


def test_interrupt_during_write_leaves_previous_file(tmp_path, monkeypatch):
    """Ctrl-C mid-write is not an I/O error: it propagates, and the old file stays."""
    path = effnet.save_model(tiny_model(), tmp_path / "m.safetensors")
    before = path.read_bytes()
    _inject(monkeypatch, "write", KeyboardInterrupt(), "model")
    with pytest.raises(KeyboardInterrupt):
        effnet.save_model(tiny_model(), path)
    assert path.read_bytes() == before
    _assert_clean(tmp_path, "m.safetensors")


def test_write_error_is_one_cli_line(capsys, monkeypatch):
    import argparse

    import effnet.cli as cli

    def func(args):
        raise WriteError(errno.ENOSPC, "/runs/a/checkpoint_last.pt: write failed: disk full")

    class Parser:
        def parse_args(self, argv):
            return argparse.Namespace(func=func, command="train", debug=False)

    monkeypatch.setattr(cli, "build_parser", Parser)
    monkeypatch.delenv("EFFNET_DEBUG", raising=False)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "effnet train: error:" in err and "disk full" in err
