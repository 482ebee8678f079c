"""CPU inference runs the high-resolution prefix a few images at a time (effnet/fast.py).

The chunks must give the unchunked values, and must step aside wherever a sample's output could
depend on the other samples of its batch (a BN on batch statistics, a module effnet does not
know, a replaced forward) or where a hook would see the prefix modules run once per chunk.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_perf import SIZE, TOL, _calibrated, _err, _plain
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import effnet
import effnet.fast
from effnet.fast import _prefix_split
from effnet.fused import plain_ops


class _ConvBatches(TorchDispatchMode):
    """Records the batch size of every convolution input."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "convolution" in func.overloadpacket.__name__:
            self.batches.append(args[0].shape[0])
        return func(*args, **(kwargs or {}))


def _conv_batches(model: nn.Module, x: torch.Tensor) -> list[int]:
    mode = _ConvBatches()
    with torch.no_grad(), mode:
        model(x)
    return mode.batches


def _unchunked(model: nn.Module, x: torch.Tensor, monkeypatch) -> torch.Tensor:
    with monkeypatch.context() as m, torch.no_grad():
        m.setattr(effnet.fast, "_PREFIX_STRIDE", 0)
        assert _prefix_split(model, x) is None
        return model(x)


@pytest.fixture
def small_chunks(monkeypatch):
    """One image per chunk at the fast suite's small sizes."""
    monkeypatch.setattr(effnet.fast, "_CHUNK_BYTES", 2)
    monkeypatch.setattr(effnet.fast, "_MMAP_BYTES", 2)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("efficientnet_b0", {}),
        ("efficientnet_lite0", {"padding": "same"}),
        ("efficientnetv2_b0", {"shortcut": "projection"}),
    ],
)
def test_chunked_prefix_gives_the_unchunked_and_plain_values(name, kw, small_chunks, monkeypatch):
    model = _calibrated(name, **kw)
    x = torch.randn(3, 3, SIZE + 3, SIZE)  # odd size: dynamic SAME padding in every chunk
    with torch.no_grad():
        split = _prefix_split(model, x)
        got = model(x)
        features = model.forward_features(x)
    assert split is not None and split[1] == 3
    batches = _conv_batches(model, x)
    assert 1 in batches and 3 in batches  # the prefix per image, the rest at the full batch
    # oneDNN may pick another kernel for another batch size: float rounding only
    assert _err(got, _unchunked(model, x, monkeypatch)) < 2e-5
    assert _err(got, _plain(model, x)) < TOL
    with plain_ops(), torch.no_grad():
        assert _err(features, model.forward_features(x)) < TOL


def test_chunk_size_follows_activation_bytes_at_real_sizes():
    """No patched budget: B0 at 224 px (4.6 MiB per image in its largest prefix map) chunks a
    batch of 8 (two of 4) but not one of 4 (18 MiB, under the mmap threshold), nor 64 px
    images."""
    model = effnet.accelerate(effnet.create_model("efficientnet_b0").eval())
    x = torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        assert _prefix_split(model, x) == (2, 2)
        assert _prefix_split(model, x[:4]) is None
        assert _prefix_split(model, torch.randn(8, 3, 64, 64)) is None
        got = model(x)
    assert _err(got, _plain(model, x)) < TOL


def test_chunks_only_in_cpu_inference_without_gradients(small_chunks):
    model = _calibrated("efficientnet_b0")
    x = torch.randn(2, 3, SIZE, SIZE)
    assert _prefix_split(model, x) is None  # gradients recorded
    with torch.no_grad():
        assert _prefix_split(model, x) is not None
        with plain_ops():
            assert _prefix_split(model, x) is None
        model.train()
        assert _prefix_split(model, x) is None  # BN on batch statistics, drop path
        model.eval()
        model.stages[1][0].dw.bn.train()  # one BN back on batch statistics
        assert _prefix_split(model, x) is None
        model.stages[1][0].dw.bn.eval()
        model.stages[1][1].drop_path.train()  # drop path draws per sample in training
        assert _prefix_split(model, x) is None
        model.stages[1][1].drop_path.eval()
        model.stages[0][0].se.train()  # the same computation in either mode
        assert _prefix_split(model, x) is not None


def test_optimize_for_inference_copies_chunk_too():
    """The folded copy (BN replaced by Identity) chunks at real sizes and keeps the values."""
    model = effnet.create_model("efficientnet_b0").eval()
    folded = effnet.optimize_for_inference(model)
    x = torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        assert _prefix_split(folded, x) == (2, 2)
        assert _err(folded(x), model(x)) < TOL


def test_a_prefix_bn_on_batch_statistics_sees_the_whole_batch(small_chunks):
    model = _calibrated("efficientnet_b0")
    model.stages[0][0].dw.bn.train()
    twin = copy.deepcopy(model)
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        got = model(x)
    want = _plain(twin, x)
    assert _err(got, want) < TOL
    bn, twin_bn = model.stages[0][0].dw.bn, twin.stages[0][0].dw.bn
    assert torch.allclose(bn.running_mean, twin_bn.running_mean)


class _BatchCentre(nn.Module):
    """A module whose per-sample output depends on the rest of the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(0, keepdim=True)


def test_swapped_or_wrapped_prefix_module_steps_aside(small_chunks):
    model = _calibrated("efficientnet_b0")
    x = torch.randn(3, 3, SIZE, SIZE)
    model.stages[1][0].se = _BatchCentre()
    with torch.no_grad():
        assert _prefix_split(model, x) is None
        got = model(x)
        alone = model(x[:1])  # what a chunk of one image would have computed
    assert _err(got, _plain(model, x)) < 1e-3  # no SE gates: logits near 150 amplify rounding
    assert _err(got[:1], alone) > 1e-2

    model = _calibrated("efficientnet_b0")
    dw = model.stages[0][0].dw
    dw.forward = lambda t: _BatchCentre()(type(dw).forward(dw, t))
    with torch.no_grad():
        assert _prefix_split(model, x) is None
        got = model(x)
    want = _plain(model, x)
    assert _err(got, want) < TOL
    del dw.forward
    with torch.no_grad():
        assert _prefix_split(model, x) is not None
        assert _err(model(x), want) > 1e-3  # the wrapper did change the values


@pytest.mark.parametrize("where", ["stem", "stage", "head", "model", "global"])
def test_a_hook_anywhere_runs_once_per_forward(where, small_chunks):
    model = _calibrated("efficientnet_b0")
    x = torch.randn(3, 3, SIZE, SIZE)
    calls = []
    hook = lambda m, i, o: calls.append(o.shape[0])  # noqa: E731
    target = {"stem": model.stem, "stage": model.stages[1], "head": model.head, "model": model}
    if where == "global":
        handle = nn.modules.module.register_module_forward_hook(hook)
    else:
        handle = target[where].register_forward_hook(hook)
    try:
        with torch.no_grad():
            assert _prefix_split(model, x) is None
            got = model(x)
    finally:
        handle.remove()
    if where == "global":
        assert calls and all(n == 3 for n in calls)
    else:
        assert calls == [3]
    assert _err(got, _plain(model, x)) < TOL


def test_bf16_autocast_inference_chunks_and_agrees(small_chunks, monkeypatch):
    model = _calibrated("efficientnet_b0")
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            assert _prefix_split(model, x) is not None
            got = model(x)
        want = _unchunked(model, x, monkeypatch)
    assert got.dtype == want.dtype == torch.bfloat16
    assert _err(got.float(), want.float()) < 0.05


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4), (1,), (0, 5)])
def test_features_only_backbone_slices_and_keeps_every_map(out_indices, small_chunks, monkeypatch):
    feats = _calibrated("efficientnet_b0", features_only=True, out_indices=out_indices)
    x = torch.randn(3, 3, SIZE + 3, SIZE)
    with torch.no_grad():
        assert _prefix_split(feats, x) is not None
        got = feats(x)
        with plain_ops():
            want = feats(x)
    assert 1 in _conv_batches(feats, x)
    with monkeypatch.context() as m, torch.no_grad():
        m.setattr(effnet.fast, "_PREFIX_STRIDE", 0)
        unsliced = feats(x)
    assert len(got) == len(want) == len(unsliced) == len(out_indices)
    for g, w, u in zip(got, want, unsliced, strict=True):
        assert g.shape == u.shape and g.stride() == u.stride()  # the input's layout
        assert _err(g, w) < TOL and _err(g, u) < 2e-5
    calls = []
    feats.stages[0].register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    with torch.no_grad():
        feats(x)
    assert calls == [3]
