"""effnet's own model files: exact round trip, run folders, clear errors."""

import pytest
import torch

import effnet
from effnet.weights.serialize import read_model_file


def _small():
    return effnet.create_model(
        "efficientnet_b0", num_classes=5, width_mult=0.25, depth_mult=0.25, image_size=32
    )


def test_save_load_round_trip_is_exact(tmp_path):
    model = _small().eval()
    model.class_names = ["a", "b", "c", "d", "e"]
    path = effnet.save_model(model, tmp_path / "m.safetensors")
    loaded = effnet.load_model(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.class_names == model.class_names
    assert loaded.build_args == model.build_args
    assert effnet.data_config(loaded)["input_size"] == (3, 32, 32)
    assert not loaded.training
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_run_folder_prefers_best(tmp_path):
    best, last = _small(), _small()
    effnet.save_model(best, tmp_path / "model_best.safetensors")
    effnet.save_model(last, tmp_path / "model_last.safetensors")
    state, _ = read_model_file(tmp_path)
    ref = best.state_dict()
    assert all(torch.equal(state[k], ref[k]) for k in ref)


def test_training_checkpoint_loads(tmp_path):
    model = _small()
    torch.save(
        {"model": model.state_dict(), "build_args": model.build_args, "epoch": 3},
        tmp_path / "checkpoint_last.pt",
    )
    loaded = effnet.load_model(tmp_path)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_wrong_architecture_names_the_key(tmp_path):
    model = _small()
    state = model.state_dict()
    state.pop(next(iter(state)))
    torch.save({"model": state, "build_args": model.build_args}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="missing key"):
        effnet.load_model(tmp_path / "c.pt")


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_corrupt_files_are_one_line_errors(tmp_path, content):
    for name in ("x.safetensors", "x.pt"):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError) as e:
            effnet.load_model(tmp_path / name)
        assert "\n" not in str(e.value)


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        effnet.load_model(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="no model file"):
        effnet.load_model(tmp_path)
