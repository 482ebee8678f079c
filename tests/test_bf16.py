"""Issue 18: CPU bf16 autocast is a first-class training path for effnet's fast modules.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the fused BN+SiLU unit must run (not step
aside) and give the plain model's numbers under the same autocast: the same bf16 activations,
fp32 batch statistics and running statistics, fp32 master weights, and gradients that match to
bf16 rounding. The reference is the same accelerated model under ``plain_ops()``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import effnet
from effnet.fused import bn_silu, bn_silu_eligible, plain_ops

BF16 = torch.bfloat16
SIZE = 64


def _autocast():
    return torch.autocast("cpu", dtype=BF16)


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| relative to the largest |want| (bf16 error is relative to scale)."""
    want = want.double()
    return ((got.double() - want).abs().max() / want.abs().max().clamp(min=1e-6)).item()


def _grad_fns(t: torch.Tensor) -> set[str]:
    """Names of every autograd node behind ``t``."""
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo += [nxt for nxt, _ in fn.next_functions]
    return names


def _unit(channels_last: bool = True):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(4, 8, 10, 10) * 2 + 1).contiguous(memory_format=fmt)
    return conv.to(memory_format=fmt), bn, x


def _run_unit(conv, bn, x, fused: bool):
    x = x.clone().requires_grad_(True)
    with _autocast():
        y = conv(x)
        assert y.dtype == BF16
        out = bn_silu(y, bn) if fused else torch.nn.functional.silu(bn(y))
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(BF16)
    out.backward(g)
    return out, x.grad, conv.weight.grad, bn.weight.grad, bn.bias.grad


@pytest.mark.parametrize("channels_last", [True, False])
def test_bn_silu_under_bf16_autocast_matches_plain_bn_then_silu(channels_last):
    conv, bn, x = _unit(channels_last)
    conv2, bn2 = copy.deepcopy(conv), copy.deepcopy(bn)
    with _autocast():
        assert bn_silu_eligible(bn, conv(x).detach())
    fused = _run_unit(conv, bn, x, fused=True)
    plain = _run_unit(conv2, bn2, x, fused=False)
    assert fused[0].dtype == BF16
    # Same ATen kernels on the same bf16 input: the forward is bit-identical.
    assert torch.equal(fused[0], plain[0])
    if channels_last:
        assert fused[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(fused[1:], plain[1:], strict=True):
        assert a.dtype == b.dtype
        # The kernels reduce in a different order (the incoming gradient is NCHW here): the
        # gradients agree to a few bf16 ulps of the tensor's scale (bf16 has 8 bits).
        assert _rel_err(a, b) < 2e-2
    # fp32 master weights and fp32 running statistics, updated as nn.BatchNorm2d does.
    assert bn.weight.grad.dtype == torch.float32 and bn.running_var.dtype == torch.float32
    torch.testing.assert_close(bn.running_mean, bn2.running_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(bn.running_var, bn2.running_var, rtol=1e-6, atol=1e-6)
    assert bn.num_batches_tracked == bn2.num_batches_tracked == 1


def test_bn_silu_bf16_gradients_track_a_float64_reference():
    """bf16 error, not a wrong formula: the fused and plain bf16 gradients are equally close to
    the float64 gradient of the same bf16 conv output."""
    conv, bn, x = _unit()
    with _autocast():
        y = conv(x).detach()
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(BF16)
    grads = []
    for mode in ("fused", "plain", "f64"):
        b = copy.deepcopy(bn)
        if mode == "f64":
            b = b.double()
        yi = (y.double() if mode == "f64" else y).clone().requires_grad_(True)
        out = bn_silu(yi, b) if mode == "fused" else torch.nn.functional.silu(b(yi))
        out.backward(g.to(out.dtype))
        grads.append((yi.grad.double(), b.weight.grad.double()))
    ref = grads[2]
    for got in grads[:2]:
        for a, r in zip(got, ref, strict=True):
            assert _rel_err(a, r) < 2e-2
    err_fused = (grads[0][0] - ref[0]).abs().max()
    err_plain = (grads[1][0] - ref[0]).abs().max()
    assert err_fused <= 1.5 * err_plain + 1e-6


def _model(name: str = "efficientnet_b0", **kw) -> nn.Module:
    torch.manual_seed(0)
    model = effnet.create_model(name, num_classes=10, drop_path_rate=0.0, drop_rate=0.0, **kw)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return effnet.accelerate(model).train()


def _step(model: nn.Module, x: torch.Tensor, plain: bool, amp: bool = True):
    model = copy.deepcopy(model)
    ctx = plain_ops() if plain else torch.enable_grad()
    with ctx, torch.autocast("cpu", dtype=BF16, enabled=amp):
        out = model(x)
        loss = out.float().logsumexp(-1).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    stats = {n: b.clone() for n, b in model.named_buffers()}
    return out, grads, stats, _grad_fns(out)


def _cos(a: dict, b: dict) -> float:
    fa = torch.cat([a[n].double().flatten() for n in b])
    fb = torch.cat([b[n].double().flatten() for n in b])
    return torch.nn.functional.cosine_similarity(fa, fb, dim=0).item()


@pytest.mark.parametrize("recompute", [False, True])
def test_accelerated_model_under_bf16_autocast_matches_plain_ops(recompute):
    """Gradients of a random B0 under bf16 are themselves far from fp32's (batch statistics of
    4 images at 64 px amplify rounding: cosine ~0.9 to fp32). The fast bf16 path trains the
    depthwise convs in fp32, so it does not reproduce the plain bf16 numbers; its output and
    gradients must be at least as close to fp32 as the plain bf16 ones (per parameter, the
    error ratios scatter both ways by bf16 noise: their median is the test)."""
    model = _model()
    model.set_activation_recompute(recompute)
    x = torch.randn(4, 3, SIZE, SIZE)
    out, grads, stats, fns = _step(model, x, plain=False)
    out_p, grads_p, stats_p, fns_p = _step(model, x, plain=True)
    out_ref, ref, _, _ = _step(model, x, plain=True, amp=False)
    assert "_BNSiLUFnBackward" in fns and "_BNSiLUFnBackward" not in fns_p
    assert "_ChannelScaleFnBackward" in fns
    assert out.dtype == BF16
    err, err_p = ((o.float() - out_ref).abs().max().item() for o in (out, out_p))
    assert err < 1.1 * err_p + 1e-3
    assert grads.keys() == grads_p.keys() == ref.keys()
    assert all(g.dtype == torch.float32 for g in grads.values())  # fp32 master weights
    ratios = sorted(
        (_rel_err(grads[n], ref[n]) + 1e-3) / (_rel_err(grads_p[n], ref[n]) + 1e-3) for n in ref
    )
    assert ratios[len(ratios) // 2] < 1.1
    assert _cos(grads, ref) > _cos(grads_p, ref) - 0.01
    assert _cos(grads, grads_p) > 0.8  # both near fp32, neither far from the other
    for name, s in stats.items():
        assert s.dtype == stats_p[name].dtype, name
        if s.is_floating_point():
            assert s.dtype == torch.float32, name
            torch.testing.assert_close(s, stats_p[name], rtol=1e-2, atol=1e-3)
        else:
            assert torch.equal(s, stats_p[name]), name


def _sgd_losses(model: nn.Module, x, y, plain: bool, amp: bool) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(4):
        ctx = plain_ops() if plain else torch.enable_grad()
        with ctx, torch.autocast("cpu", dtype=BF16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return losses


def test_bf16_autocast_sgd_steps_follow_plain_ops_and_keep_fp32_parameters():
    torch.manual_seed(0)
    model = effnet.create_model(
        "efficientnet_b0", num_classes=10, drop_rate=0.0, drop_path_rate=0.0
    )
    model = effnet.accelerate(model).train()
    x, y = torch.randn(8, 3, SIZE, SIZE), torch.randint(0, 10, (8,))
    runs = {
        (plain, amp): _sgd_losses(copy.deepcopy(model), x, y, plain, amp)
        for plain in (False, True)
        for amp in (False, True)
    }
    fast = runs[(False, True)]
    assert fast[-1] < fast[0]  # it learns the batch
    torch.testing.assert_close(runs[(False, False)], runs[(True, False)], rtol=1e-3, atol=0)
    # bf16 trajectories of a batch this small part after a few large steps (plain bf16 and
    # fast bf16 alike); the first loss agrees with plain bf16, the first two with fp32.
    plain_bf16, fp32 = runs[(True, True)], runs[(True, False)]
    assert abs(fast[0] - plain_bf16[0]) < 0.05 * max(1.0, abs(plain_bf16[0]))
    for a, c in zip(fast[:2], fp32[:2], strict=True):
        assert abs(a - c) < 0.3 * max(1.0, abs(c))


def test_bf16_fast_path_steps_aside_where_it_must():
    conv, bn, x = _unit()
    with _autocast():
        y = conv(x)
        assert bn_silu_eligible(bn, y)
        assert not bn_silu_eligible(bn, y.half())  # fp16 activations: plain ops decide
        with plain_ops():
            assert not bn_silu_eligible(bn, y)
    assert not bn_silu_eligible(bn.to(BF16), y.float())  # bf16 parameters, fp32 input


def test_bf16_autocast_double_backward_uses_the_plain_formula():
    conv, bn, x = _unit()
    with _autocast():
        y = conv(x).detach().requires_grad_(True)
        out = bn_silu(y, bn)
    (g,) = torch.autograd.grad(out.float().square().sum(), y, create_graph=True)
    g.float().sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad.float()).all()


def _conv_dtypes(model: nn.Module, x: torch.Tensor, train: bool) -> dict[str, set]:
    """Input dtypes of the depthwise and the other convolutions that one forward under bf16
    autocast runs, seen at the ATen level (a module hook would make the fast path step aside)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: dict[str, set] = {"depthwise": set(), "other": set()}

    class Convs(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution.default:
                x, w, groups = args[0], args[1], args[8]
                dw = groups > 1 and w.shape[1] == 1
                seen["depthwise" if dw else "other"].add(x.dtype)
            return func(*args, **(kwargs or {}))

    model.train(train)
    with torch.set_grad_enabled(train), _autocast(), Convs():
        model(x)
    return seen


def test_bf16_training_runs_the_depthwise_convs_in_fp32_and_the_rest_in_bf16():
    # oneDNN's bf16 depthwise backward is the slow one on this CPU (docs/performance.md), so
    # the fast path trains depthwise convs in fp32; inference under autocast stays bf16, and
    # plain_ops() gives autocast's own choice (bf16) everywhere.
    model, x = _model(), torch.randn(2, 3, SIZE, SIZE)
    assert _conv_dtypes(model, x, train=True) == {"depthwise": {torch.float32}, "other": {BF16}}
    assert _conv_dtypes(model, x, train=False) == {"depthwise": {BF16}, "other": {BF16}}
    with plain_ops():
        assert _conv_dtypes(model, x, train=True) == {"depthwise": {BF16}, "other": {BF16}}
    # a model whose parameters are bf16 already keeps autocast's choice (and does not break)
    half = copy.deepcopy(model).to(BF16)
    assert _conv_dtypes(half, x, train=True) == {"depthwise": {BF16}, "other": {BF16}}
    # the depthwise weight gradients are the fp32 ones, up to the bf16 error of what feeds them
    _, grads, _, _ = _step(model, x, plain=False)
    _, grads_p, _, _ = _step(model, x, plain=True)
    _, ref, _, _ = _step(model, x, plain=True, amp=False)
    dw = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dw
    fast_err = sorted(_rel_err(grads[f"{n}.weight"], ref[f"{n}.weight"]) for n in dw)
    plain_err = sorted(_rel_err(grads_p[f"{n}.weight"], ref[f"{n}.weight"]) for n in dw)
    assert fast_err[len(dw) // 2] <= plain_err[len(dw) // 2] * 1.1
