"""Files from the internet: a pickle built to run code runs nothing, on every path reading one."""

import pickle

import pytest
import torch
from reliability_helpers import cli_in_process, tiny_model

import effnet
from effnet.weights import read_pretrained
from effnet.weights.loading import read_state_file
from effnet.weights.serialize import model_metadata, read_model_file


class Payload:
    """Unpickling this calls exec(): it writes the marker file. Harmless, and easy to detect."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def _crafted(tmp_path, marker, layout):
    """Checkpoint files in the shapes real ones take, with the payload hidden inside."""
    model = tiny_model()
    state = dict(model.state_dict())
    evil = Payload(marker)
    path = tmp_path / layout
    if layout == "effnet_checkpoint.pt":
        obj = {"model": state, "build_args": model.build_args, "extra": evil}
    elif layout == "nested_state_dict.pth":
        obj = {"state_dict": {**state, "stem.conv.weight": evil}}
    elif layout == "bare_payload.pt":
        obj = evil
    elif layout == "raw_pickle.pth":  # not torch's zip format: a plain pickle stream
        path.write_bytes(pickle.dumps({"model": evil}))
        return path
    elif layout == "run/checkpoint_last.pt":
        path.parent.mkdir()
        obj = {"model": state, "build_args": model.build_args, "optimizer": evil}
    else:  # a pickle saved under a .safetensors name
        obj = {"model": evil}
    torch.save(obj, path)
    return path


LAYOUTS = [
    "effnet_checkpoint.pt",
    "nested_state_dict.pth",
    "bare_payload.pt",
    "raw_pickle.pth",
    "run/checkpoint_last.pt",
    "pickle_named.safetensors",
]


def _paths(path):
    """Every library entry point that opens a user-given weight file."""
    target = path.parent if path.parent.name == "run" else path
    return {
        "load_model": lambda: effnet.load_model(target),
        "read_model_file": lambda: read_model_file(target),
        "read_state_file": lambda: read_state_file(path),
        "read_pretrained": lambda: read_pretrained(str(target), "efficientnet_b0"),
        "create_model(pretrained=)": lambda: effnet.create_model(
            "efficientnet_b0",
            num_classes=4,
            width_mult=0.25,
            depth_mult=0.25,
            pretrained=str(target),
        ),
    }


def test_payload_is_live(tmp_path):
    """Control: the payload does run under a plain unpickler, so the tests below mean something."""
    marker = tmp_path / "marker"
    path = _crafted(tmp_path, marker, "effnet_checkpoint.pt")
    torch.load(path, weights_only=False)
    assert marker.read_text() == "payload ran"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_crafted_pickle_runs_nothing(tmp_path, layout, figures):
    marker = tmp_path / "marker"
    path = _crafted(tmp_path, marker, layout)
    for name, load in _paths(path).items():
        with pytest.raises(ValueError) as e:
            load()
        msg = str(e.value)
        assert "\n" not in msg, name
        assert not marker.exists(), f"{name} ran the payload of {layout}"
        figures("bad_input", f"code-running pickle ({layout}) via {name}")
    figures("fault", f"untrusted pickle: {layout}")


def test_refusal_names_the_danger(tmp_path):
    path = _crafted(tmp_path, tmp_path / "marker", "effnet_checkpoint.pt")
    with pytest.raises(ValueError, match=r"pickles \S*exec, which could run code"):
        effnet.load_model(path)


def _with_shape(tmp_path, key, shape, format_version=2):
    """A well-formed effnet file (valid checksum) whose tensor ``key`` has the wrong shape."""
    import json

    from safetensors.torch import save_file

    from effnet.weights.integrity import SAFETENSORS_KEY, safetensors_digest

    model = tiny_model()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state[key] = torch.zeros(shape)
    meta = json.dumps({**model_metadata(model), "format_version": format_version})
    path = tmp_path / "shaped.safetensors"
    header = {"effnet": meta, SAFETENSORS_KEY: safetensors_digest(state, meta)}
    save_file(state, path, metadata=header)
    return path


@pytest.mark.parametrize(
    "key,shape",
    [
        ("stem.conv.weight", (8, 3, 5, 5)),
        ("stem.conv.weight", (8, 3, 3)),
        ("stem.bn.running_mean", (9,)),
        ("classifier.bias", (4, 1)),
    ],
)
def test_safetensors_with_wrong_shapes_are_refused(tmp_path, key, shape, figures):
    path = _with_shape(tmp_path, key, shape)
    for name in ("load_model", "create_model(pretrained=)"):
        with pytest.raises(ValueError, match="shape") as e:
            _paths(path)[name]()
        assert "\n" not in str(e.value) and key in str(e.value)
    figures("bad_input", f"wrong shape {key} {shape}", count=2)


def _resumable_run(tmp_path, marker):
    """A run folder whose checkpoint has every key --resume needs, plus the payload."""
    model = tiny_model()
    run = tmp_path / "evil-run"
    run.mkdir()
    torch.save(
        {
            "format": 1,
            "model": model.state_dict(),
            "optimizer": {"state": {}, "param_groups": []},
            "config": {"data": "digits", "epochs": 2},
            "epoch": 1,
            "rng": Payload(marker),
            "build_args": model.build_args,
        },
        run / "checkpoint_last.pt",
    )
    return run


def test_cli_paths_run_no_payload(tmp_path, figures):
    from PIL import Image

    marker = tmp_path / "marker"
    image = tmp_path / "cat.png"
    Image.new("RGB", (40, 40), (120, 80, 40)).save(image)
    ckpt = _crafted(tmp_path, marker, "effnet_checkpoint.pt")
    run = _resumable_run(tmp_path, marker)
    out = tmp_path / "out"
    commands = {
        "predict FILE": ["predict", ckpt, image],
        "predict RUN": ["predict", run, image],
        "predict NAME --pretrained FILE": [
            "predict",
            "efficientnet_b0",
            "--pretrained",
            ckpt,
            image,
        ],
        "export FILE": ["export", ckpt, "--format", "onnx", "-o", out / "m.onnx"],
        "export RUN": ["export", run, "--format", "safetensors", "-o", out / "m.safetensors"],
        "train --resume RUN": ["train", "--resume", run],
        "train --pretrained FILE": [
            "train",
            "--pretrained",
            ckpt,
            "--out",
            out / "r",
            "--epochs",
            "2",
        ],
        "cam FILE": ["cam", ckpt, image, "--out", out / "cam"],
        "eval FILE": ["eval", ckpt, "--data", "digits", "--out", out / "eval"],
        "eval RUN": ["eval", run, "--data", "digits", "--out", out / "eval"],
    }
    for name, argv in commands.items():
        code, err = cli_in_process(argv)
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert "could run code" in err, (name, err)  # refused for the right reason
        assert not marker.exists(), f"{name} ran the payload"
        figures("bad_input", f"code-running pickle via effnet {name}")
    assert not (out / "m.onnx").exists() and not (out / "m.safetensors").exists()


def test_onnx_inputs_with_wrong_shapes_are_refused(tmp_path, figures):
    import numpy as np

    from effnet.deploy.export import export_model
    from effnet.deploy.export.onnx import load_onnx, run_onnx

    path = tmp_path / "m.onnx"
    export_model(tiny_model(), "onnx", path, image_size=32, verify=False)
    session = load_onnx(path)
    good = np.zeros((2, 3, 32, 32), np.float32)
    assert run_onnx(session, good).shape == (2, 4)
    bad_inputs = {
        "channels": np.zeros((1, 1, 32, 32), np.float32),
        "height": np.zeros((1, 3, 40, 32), np.float32),
        "width": np.zeros((1, 3, 32, 64), np.float32),
        "rank": np.zeros((3, 32, 32), np.float32),
        "dtype": np.zeros((1, 3, 32, 32), np.float64),
        "uint8": np.zeros((1, 3, 32, 32), np.uint8),
    }
    for what, array in bad_inputs.items():
        with pytest.raises(ValueError) as e:
            run_onnx(session, array)
        msg = str(e.value)
        assert "\n" not in msg and (str(array.shape) in msg or str(array.dtype) in msg), what
        figures("bad_input", f"ONNX input with wrong {what}")


def test_damaged_onnx_files_are_refused(tmp_path, figures):
    from effnet.deploy.export import export_model
    from effnet.deploy.export.onnx import load_onnx

    path = tmp_path / "m.onnx"
    export_model(tiny_model(), "onnx", path, image_size=32, verify=False)
    data = path.read_bytes()
    marker = tmp_path / "marker"
    cases = {
        "truncated": data[: len(data) // 3],
        "empty": b"",
        "a pickle": pickle.dumps(Payload(marker)),
    }
    for what, content in cases.items():
        bad = tmp_path / f"{what.replace(' ', '_')}.onnx"
        bad.write_bytes(content)
        with pytest.raises(ValueError) as e:
            load_onnx(bad)
        assert "\n" not in str(e.value) and str(bad) in str(e.value), what
        code, err = cli_in_process(["predict", bad, tmp_path])
        assert code == 2 and err.count("\n") == 1, (what, err)
        figures("bad_input", f"{what} ONNX file")
    assert not marker.exists()
