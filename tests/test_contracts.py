"""The nn.Module contract: a model from ``effnet.create_model`` is an ordinary nn.Module.

Every child module runs when its parent runs and replacing a child changes the behaviour;
parameters and buffers are the truth (no stale caches); outputs keep the input's memory format;
and the standard PyTorch tooling works on it: FX, torchvision's feature extractor, TorchScript,
torch.export, torch.compile, torch.func, double backward, forward-mode AD, inference mode and the
meta device. The intent follows timm's and torchvision's model test suites.

Each check runs over every registered model built small (``contract_models.tiny_kwargs``: a
quarter of the width, about a third of the depth, every stage, block kind, SE, activation and
identity-skip block of the family kept), over B0 / Lite0 / V2-B0 at native size, and over
controls that must pass: torchvision's own EfficientNet (B0 tiny via its builder, B0 and V2-S
native) and timm's efficientnet_b0 (tiny and native). The default run covers one model per family
(B0, Lite0, V2-B0, V2-S) and the tiny controls, every model for the cheapest checks, and a few
models for compile / export / TorchScript / torch.func; everything else is marked slow. The last
section runs the checks that apply to ``effnet.accelerate(model)``.

All models get random BN affine terms and BN statistics measured on random images, then
perturbed, so that BN matters in eval mode (``randomize_norm_stats``). Train-mode comparisons
use 64 px inputs (at 32 px the last maps are 1x1 and batch-2 BN is ill-conditioned).

Instruments count calls by wrapping ``forward`` on the instance (``count_calls``), so a fast path
that steps aside only when hooks are present cannot hide a skipped module; the hook-based
variants are checked as well.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from contract_models import (
    ACCELERATE,
    ACCELERATED,
    ACT_TYPES,
    CONTROLS,
    FAMILIES,
    NATIVE,
    NUM_CLASSES,
    Subject,
    assert_close,
    assert_differs,
    batchnorms,
    called_modules,
    ceil_div,
    count_calls,
    effnet_subjects,
    feature_specs,
    hook_calls,
    images,
    is_activation,
    is_batchnorm,
    is_drop_path,
    labels,
    missing_calls,
    record_outputs,
    swap_modules,
    tiny_kwargs,
)
from torch import nn
from torch.autograd import forward_ad as fwAD
from torch.func import functional_call, grad, jvp, vmap

import effnet
from effnet.registry import resolve
from effnet.scaling import plan

slow = pytest.mark.slow

TINY = effnet_subjects() + [s for s in CONTROLS if s.tiny]
NATIVE_SUBJECTS = effnet_subjects(tiny=False, names=NATIVE) + [s for s in CONTROLS if not s.tiny]
# Default run: one tiny model per effnet family and the tiny controls; the other registered
# models (tiny) and the native sizes run as slow. The cheapest checks run every model by default.
CHEAP = {*FAMILIES, *(s.id for s in CONTROLS if s.tiny)}
EVERYTHING = {s.id for s in TINY}
# The compile / export / script / torch.func checks run these by default, the rest as slow.
HEAVY_FAST = {"efficientnet_b0", "efficientnetv2_b0", "tv_efficientnet_b0-tiny"}
MODES = ("train", "eval")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models here are tiny: intra-op threads buy nothing and, on a shared machine, their
    spin-waits made each forward up to 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cases(subjects: list[Subject], fast: set[str] = CHEAP) -> list:
    out = []
    for s in subjects:
        marks = [] if s.id in fast else [slow]
        out.append(pytest.param(s, id=s.id, marks=marks))
    return out


ALL = cases(TINY)
ALL_HEAVY = cases(TINY, HEAVY_FAST)
NATIVE_CASES = cases(NATIVE_SUBJECTS, set())
ACCEL_CASES = cases(ACCELERATED, {s.id for s in ACCELERATED})
CORE = ALL + NATIVE_CASES  # every model, small and (slow) native
CORE_EVERY = cases(TINY, EVERYTHING) + NATIVE_CASES
CORE_ACCEL = CORE + ACCEL_CASES
HEAVY_ACCEL = ALL_HEAVY + ACCEL_CASES  # the accelerated models pass the same checks


def run(model: nn.Module, x: torch.Tensor, mode: str, fn=None, seed: int = 3):
    """One forward: train mode with autograd, or eval mode under no_grad (the inference path);
    seeded, so dropout / drop-path masks repeat."""
    model.train(mode == "train")
    torch.manual_seed(seed)
    with torch.no_grad() if mode == "eval" else nullcontext():
        return fn(model, x) if fn is not None else model(x)


def loss_of(out: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    return F.cross_entropy(out, labels(out.shape[0]) if y is None else y)


def train_step(model: nn.Module, x: torch.Tensor, seed: int = 3):
    """Seeded train-mode forward + backward; (output, {name: grad}). Comparisons of two
    train-mode runs use 64 px inputs: at 32 px the last maps are 1x1 and a batch-2 BN normalises
    two values, which amplifies float rounding without bound."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(x)
    loss_of(out).backward()
    grads = {
        n.removeprefix("_orig_mod."): p.grad.clone()  # torch.compile's wrapper adds the prefix
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    return out.detach(), grads


def assert_grads_close(got: dict, ref: dict, tol: float = 1e-4, what: str = "gradients"):
    assert got.keys() == ref.keys(), f"{what}: different parameters got gradients"
    flat_got = torch.cat([got[k].flatten() for k in ref])
    flat_ref = torch.cat([ref[k].flatten() for k in ref])
    assert_close(flat_got, flat_ref, tol, what)


def assert_all_ran(model: nn.Module, modules: list[nn.Module], x, modes=MODES, what="modules"):
    """Each of ``modules`` runs in a forward of ``model``: counted without hooks, then with
    forward pre-hooks."""
    assert modules, f"no {what} to check"
    named = [(f"{what}[{i}]", m) for i, m in enumerate(modules)]
    for counter in (count_calls, lambda ms: hook_calls(ms, pre=True)):
        for mode in modes:
            with counter(modules) as counts:
                run(model, x, mode)
            missing = missing_calls(named, counts)
            assert not missing, f"{mode}: {len(missing)}/{len(modules)} {what} never ran"


# ------------------------------------------------------------------ 0. the tiny builds are fair


@pytest.mark.parametrize("name", effnet.list_models())
def test_tiny_build_keeps_family_structure(name):
    """The small builds used below keep what differs between families: stages, block kinds,
    SE, activation, and blocks with an identity skip (the residual paths)."""
    variant, width, depth, _ = resolve(name)
    tiny_kw = tiny_kwargs(name)
    tiny = plan(variant.family, tiny_kw["width_mult"], tiny_kw["depth_mult"])
    native = plan(variant.family, width, depth)
    assert tiny.num_stages == native.num_stages
    assert {b.kind for b in tiny.blocks} == {b.kind for b in native.blocks}
    assert any(b.se_ch for b in tiny.blocks) == any(b.se_ch for b in native.blocks)
    assert tiny.act == native.act
    assert any(b.has_identity for b in tiny.blocks)


@pytest.mark.parametrize("subject", ALL)
def test_outputs_depend_on_input_and_mode(subject):
    """Test setup: with the calibrated BN statistics every model's eval output depends on its
    input, and differs from training mode, so the comparisons below can fail."""
    model = subject.build()
    x, x2 = images(2, 64), images(2, 64, seed=5)
    out = run(model, x, "eval")
    assert torch.isfinite(out).all()
    assert_differs(run(model, x2, "eval"), out, "another input", tol=1e-2)
    assert_differs(run(model, x, "train"), out, "train mode", tol=1e-2)


# ---------------------------------------------------------------------- 1. forward / backward


@pytest.mark.parametrize("subject", CORE_EVERY)
def test_forward_backward(subject):
    model = subject.build().train()
    out = model(images(2))
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    loss_of(out).backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params
    no_grad = [n for n, p in params if p.grad is None]
    assert not no_grad, f"{len(no_grad)} parameters got no gradient: {no_grad[:6]}"
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:6]}"
    assert any(p.grad.abs().sum() > 0 for _, p in params)


# ------------------------------------------------------------------------- 2. norm-layer swaps


@pytest.mark.parametrize("subject", CORE_ACCEL)
def test_syncbn_conversion_runs(subject):
    """convert_sync_batchnorm: every BN becomes a SyncBatchNorm that really runs (on CPU without
    a process group it computes as BatchNorm), gives the same outputs, and its stats are used."""
    model = subject.build()
    n_bn = len(batchnorms(model))
    synced = subject.convert_sync_bn(copy.deepcopy(model))
    syncs = [m for m in synced.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert n_bn > 0
    assert len(syncs) == n_bn
    assert all(isinstance(m, nn.SyncBatchNorm) for m in batchnorms(synced))
    x = images(2, 64)
    for mode in MODES:
        assert_close(run(synced, x, mode), run(model, x, mode), what=f"SyncBN model, {mode}")
    assert_all_ran(synced, syncs, x, what="SyncBatchNorm modules")
    before = run(synced, x, "eval")
    with torch.no_grad():
        for m in syncs:
            m.running_var.mul_(4.0)
    assert_differs(run(synced, x, "eval"), before, "SyncBN running_var x4")


@pytest.mark.parametrize("subject", CORE_ACCEL)
def test_frozen_bn_swap_runs(subject):
    """torchvision.ops.FrozenBatchNorm2d in place of every BN (timm: its own freeze helper):
    same eval outputs with the stats copied; the frozen modules run; their stats are used."""
    model = subject.build()
    n_bn = len(batchnorms(model))
    x = images(2)
    ref = run(model, x, "eval")
    frozen_model, frozen = subject.freeze_bn(copy.deepcopy(model))
    assert n_bn > 0
    assert len(frozen) == n_bn
    assert not batchnorms(frozen_model)
    got = run(frozen_model, x, "eval")
    assert_close(got, ref, what="FrozenBatchNorm2d model, eval")
    assert_all_ran(frozen_model, frozen, x, what="FrozenBatchNorm2d modules")
    with torch.no_grad():
        for f in frozen:
            f.running_var.mul_(4.0)
            f.running_mean.add_(0.5)
    assert_differs(run(frozen_model, x, "eval"), got, "frozen stats perturbed")


def _group_norm(bn: nn.Module) -> nn.Module:
    return nn.GroupNorm(math.gcd(bn.num_features, 4), bn.num_features, eps=bn.eps)


@pytest.mark.parametrize("subject", CORE_ACCEL)
def test_groupnorm_swap_runs(subject):
    """Every BN replaced by GroupNorm: outputs change, every GroupNorm runs and every GroupNorm
    weight and bias gets a finite, nonzero gradient in a train step."""
    model = subject.build()
    x = images(2, 64)
    gn_model = copy.deepcopy(model)
    gns = swap_modules(gn_model, is_batchnorm, _group_norm)
    assert len(gns) == len(batchnorms(model)) > 0
    for mode in MODES:
        assert_differs(run(gn_model, x, mode), run(model, x, mode), f"GroupNorm swap, {mode}")
    assert_all_ran(gn_model, gns, x, what="GroupNorm modules")
    train_step(gn_model, x)
    bad = [
        i
        for i, g in enumerate(gns)
        for p in (g.weight, g.bias)
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert not bad, f"{len(set(bad))}/{len(gns)} GroupNorms got no (finite, nonzero) gradient"


@pytest.mark.parametrize("subject", CORE)
def test_activation_swap_changes_output(subject):
    """Replacing every activation module (by nn.Identity, by nn.Tanh) changes the outputs in
    train and eval, and every replacement runs."""
    model = subject.build()
    x = images(2)
    assert any(is_activation(m) for m in model.modules()), "no activation modules found"
    ref = {mode: run(model, x, mode) for mode in MODES}
    for make in (nn.Identity, nn.Tanh):
        swapped = copy.deepcopy(model)
        new = swap_modules(swapped, is_activation, lambda _m, make=make: make())
        for mode in MODES:
            assert_differs(run(swapped, x, mode), ref[mode], f"activations -> {make.__name__}")
        assert_all_ran(swapped, new, x, what=f"{make.__name__} replacements")


@pytest.mark.parametrize("subject", ALL)
def test_activations_are_torch_nn_modules(subject):
    """Activations are the standard torch.nn classes (nn.SiLU, nn.ReLU6 ...), which fusers,
    quantizers and model-surgery tools look for."""
    model = subject.build()
    odd = {type(m).__name__ for m in model.modules() if is_activation(m)} - {
        t.__name__ for t in ACT_TYPES
    }
    assert not odd, f"activation modules of non-torch.nn classes: {sorted(odd)}"


class _KillBranch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


@pytest.mark.parametrize("subject", CORE)
def test_drop_path_replacement_changes_output(subject):
    """Drop-path modules are ordinary children: replacing each by a module that zeroes the
    residual branch changes the outputs (train and eval), and the replacements run."""
    model = subject.build(**({"drop_path_rate": 0.2} if subject.kind == "timm" else {}))
    x = images(2)
    assert any(is_drop_path(m) for m in model.modules()), "no drop-path modules found"
    ref = {mode: run(model, x, mode) for mode in MODES}
    new = swap_modules(model, is_drop_path, lambda _m: _KillBranch())
    for mode in MODES:
        assert_differs(run(model, x, mode), ref[mode], f"drop path -> zero branch, {mode}")
    for mode in MODES:
        with count_calls(new) as counts:
            run(model, x, mode)
        assert any(counts.values()), f"{mode}: no drop-path replacement ran"


# ------------------------------------------------------------------------------------- 3. FX


@pytest.mark.parametrize("subject", CORE_ACCEL)
def test_fx_symbolic_trace(subject):
    """torch.fx.symbolic_trace: the traced module equals eager, in eval and in training
    (outputs and gradients)."""
    model = subject.build()
    x = images(2, 64)
    model.eval()
    traced = torch.fx.symbolic_trace(model)
    assert_close(run(traced, x, "eval"), run(model, x, "eval"), what="FX eval")
    model.train()
    traced = torch.fx.symbolic_trace(model)
    out, grads = train_step(model, x)
    out_fx, grads_fx = train_step(traced, x)
    assert_close(out_fx, out, what="FX train output")
    assert_grads_close(grads_fx, grads, what="FX train gradients")


@pytest.mark.parametrize("subject", CORE)
def test_create_feature_extractor(subject):
    """torchvision's create_feature_extractor on the feature taps returns the eager maps
    (values and, where the model lists them, channels and strides)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    model = subject.build().eval()
    taps = subject.taps(model)
    extractor = create_feature_extractor(model, return_nodes={t: t for t in taps})
    x = images(2, 64)
    for mode in MODES:
        got = run(extractor, x, mode)
        with record_outputs(model, taps) as seen:
            run(model, x, mode)
        assert list(got) == taps
        for t in taps:
            assert_close(got[t], seen[t], what=f"{mode} feature {t}")
    specs = feature_specs(model)
    if specs is not None:
        shapes = [tuple(got[t].shape) for t in taps]
        assert shapes == [(2, c, ceil_div(64, r), ceil_div(64, r)) for c, r in specs]


# ----------------------------------------------------------------------------- 4. TorchScript


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("subject", HEAVY_ACCEL)
def test_jit_script(subject):
    model = subject.build().eval()
    scripted = torch.jit.script(model)
    x = images(2)
    assert_close(run(scripted, x, "eval"), run(model, x, "eval"), what="scripted, no_grad")
    assert_close(scripted(x), model(x), what="scripted, grad enabled")


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("subject", HEAVY_ACCEL)
def test_jit_trace(subject):
    """A trace replays the model on a new input (nothing of the example input is baked in)."""
    model = subject.build().eval()
    traced = torch.jit.trace(model, images(2), check_trace=False)
    x = images(2, seed=5)
    assert_close(run(traced, x, "eval"), run(model, x, "eval"), what="traced, no_grad")
    assert_close(traced(x), model(x), what="traced, grad enabled")


# ------------------------------------------------------------------- 5. torch.export / compile


@pytest.mark.parametrize("subject", HEAVY_ACCEL)
def test_torch_export(subject):
    model = subject.build().eval()
    program = torch.export.export(model, (images(2),))
    x = images(2, seed=5)
    with torch.no_grad():  # an exported module has no train()/eval()
        got = program.module()(x)
    assert_close(got, run(model, x, "eval"), what="exported")


def _compile_matches_eager(subject: Subject, backend: str, train: bool) -> None:
    torch._dynamo.reset()
    model = subject.build()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = images(2, 64)
    if train:
        out, grads = train_step(model, x)
        out_c, grads_c = train_step(compiled, x)
        assert_close(out_c, out, what=f"{backend} train output")
        assert_grads_close(grads_c, grads, what=f"{backend} train gradients")
    else:
        assert_close(run(compiled, x, "eval"), run(model, x, "eval"), what=f"{backend} eval")
    torch._dynamo.reset()


@pytest.mark.parametrize("subject", cases(TINY, {"efficientnet_b0"}))
def test_compile_fullgraph_eval(subject):
    """torch.compile(fullgraph=True) (no graph break), dynamo only: eval output equals eager."""
    _compile_matches_eager(subject, "eager", train=False)


COMPILE_TRAIN = [s for s in TINY if s.id in CHEAP]


@slow
@pytest.mark.parametrize("subject", cases(COMPILE_TRAIN, set()))
def test_compile_fullgraph_train(subject):
    """torch.compile(fullgraph=True) with AOT autograd (aot_eager): a train step's output and
    gradients equal eager (one model per family and the controls)."""
    _compile_matches_eager(subject, "aot_eager", train=True)


INDUCTOR = [s for s in TINY if s.id in ("efficientnet_b0", "tv_efficientnet_b0-tiny")]


@slow
@pytest.mark.parametrize("subject", cases(INDUCTOR, set()))
def test_compile_inductor(subject):
    """A real inductor compile (C++ code generation): eval output equals eager."""
    _compile_matches_eager(subject, "inductor", train=False)


# -------------------------------------------------------------------------------- 6. torch.func


@pytest.mark.parametrize("subject", HEAVY_ACCEL)
def test_per_sample_gradients(subject):
    """vmap(grad(functional_call)) in eval mode equals a loop of per-sample backward passes."""
    model = subject.build().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    x, y = images(3), labels(3)

    def loss(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        loss_of(model(x[i : i + 1]), y[i : i + 1]).backward()
        ref = {
            n: p.grad if p.grad is not None else torch.zeros_like(p)
            for n, p in model.named_parameters()
        }
        assert_grads_close({n: g[i] for n, g in per_sample.items()}, ref, what=f"sample {i}")


def _float64(subject: Subject, mode: str) -> nn.Module:
    return subject.build().double().train(mode == "train")


def _perturbed(model: nn.Module, direction: dict, scale: float):
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(direction[n], alpha=scale)


FD_EPS = 1e-6  # central differences in float64: truncation error ~1e-9 relative here
DD_EPS = 1e-7  # along a random direction of all parameters the curvature is larger
FD_TOL = 1e-5
DD_TOL = 1e-4  # the penalty's difference quotient in the deepest nets (V2-L/XL) reads ~2e-5


def piecewise_linear(model: nn.Module) -> bool:
    """ReLU-family nets (Lite): derivatives jump where an activation pattern flips, so a finite
    difference (or a rounding-level change of input layout) can straddle a kink; for them the
    derivative checks assert finite values, not agreement with a difference quotient."""
    return any(isinstance(m, nn.ReLU | nn.ReLU6) for m in model.modules())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("subject", HEAVY_ACCEL)
def test_double_backward(subject, mode):
    """Gradient penalty: d/dtheta ||dL/dx||^2 by double backward (create_graph=True) is finite,
    nonzero and matches a central finite difference along a random direction (float64)."""
    model = _float64(subject, mode)
    x = images(2, 64).double().requires_grad_()

    def penalty() -> torch.Tensor:
        torch.manual_seed(3)
        (gx,) = torch.autograd.grad(loss_of(model(x)), x, create_graph=True)
        return gx.square().sum()

    model.zero_grad(set_to_none=True)
    penalty().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())
    if piecewise_linear(model):
        # The gradient penalty of a piecewise-linear net jumps where an activation pattern
        # flips, so a central difference straddles kinks (Lite0 read 2.7e5 vs -8.0e7). Finite
        # and nonzero is what can be asserted; the smooth (SiLU) models check the value.
        return
    gen = torch.Generator().manual_seed(4)
    v = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in model.named_parameters()}
    analytic = sum(float((g * v[n]).sum()) for n, g in grads.items())
    _perturbed(model, v, DD_EPS)
    plus = float(penalty().detach())
    _perturbed(model, v, -2 * DD_EPS)
    minus = float(penalty().detach())
    _perturbed(model, v, DD_EPS)
    numeric = (plus - minus) / (2 * DD_EPS)
    err = abs(numeric - analytic) / max(abs(analytic), abs(numeric), 1e-12)
    assert err < DD_TOL, f"{mode}: double backward {analytic:.8g}, finite difference {numeric:.8g}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("subject", HEAVY_ACCEL)
def test_forward_mode_ad(subject, mode):
    """JVPs w.r.t. the input (torch.func.jvp and autograd.forward_ad dual tensors) and w.r.t. the
    parameters (torch.func.jvp) match central finite differences (float64). In training the BN
    statistics go in as inputs with zero tangents (torch.func refuses to mutate a captured
    tensor, as a training BN does; in eval they must stay plain, BN has no derivative there)."""
    model = _float64(subject, mode)
    params = {k: v.detach() for k, v in model.named_parameters()}
    train = mode == "train"
    x = images(2, 64).double()
    v = images(2, 64, seed=7).double()

    def stats() -> dict[str, torch.Tensor]:
        return {k: b.clone() for k, b in model.named_buffers() if b.is_floating_point() and train}

    def f(inp, p, buffers):
        torch.manual_seed(3)
        rest = {k: b.clone() if train else b for k, b in model.named_buffers() if k not in buffers}
        return functional_call(model, (p, buffers, rest), (inp,))

    def jvp_with_stats(fn, primal, tangent):
        b = stats()
        zeros = {k: torch.zeros_like(t) for k, t in b.items()}
        return jvp(fn, (primal, b), (tangent, zeros))[1]

    with torch.no_grad():
        hi, lo = f(x + FD_EPS * v, params, stats()), f(x - FD_EPS * v, params, stats())
    fd_x = (hi - lo) / (2 * FD_EPS)
    t_func = jvp_with_stats(lambda inp, b: f(inp, params, b), x, v)
    if piecewise_linear(model):  # kinks: see piecewise_linear
        assert torch.isfinite(t_func).all() and t_func.abs().sum() > 0
        return
    assert_close(t_func, fd_x, FD_TOL, f"{mode}: torch.func.jvp (input)")
    with fwAD.dual_level():
        torch.manual_seed(3)
        tangent = fwAD.unpack_dual(model(fwAD.make_dual(x, v))).tangent
    assert tangent is not None, "forward_ad: the output carries no tangent"
    assert_close(tangent, fd_x, FD_TOL, f"{mode}: forward_ad dual tensors (input)")
    gen = torch.Generator().manual_seed(4)
    tp = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in params.items()}
    with torch.no_grad():
        hi = f(x, {n: p + DD_EPS * tp[n] for n, p in params.items()}, stats())
        lo = f(x, {n: p - DD_EPS * tp[n] for n, p in params.items()}, stats())
    t_params = jvp_with_stats(lambda p, b: f(x, p, b), params, tp)
    assert_close(t_params, (hi - lo) / (2 * DD_EPS), FD_TOL, f"{mode}: torch.func.jvp (params)")


# -------------------------------------------------------------- 7. parameters are the truth


def _fresh_eval(subject: Subject, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    fresh = subject.build()
    fresh.load_state_dict(model.state_dict())
    return run(fresh, x, "eval")


@pytest.mark.parametrize("subject", CORE_EVERY + ACCEL_CASES)
def test_inplace_param_edit_seen_in_eval(subject):
    """``p.data.mul_(0.9)`` on every parameter (no version bump) is seen by the next eval
    forward, which equals a fresh model loaded with the edited state dict."""
    model = subject.build()
    x = images(2)
    before = run(model, x, "eval")
    model(x)  # an eval forward with autograd on as well
    for p in model.parameters():
        p.data.mul_(0.9)
    after = run(model, x, "eval")
    assert_differs(after, before, "parameters x0.9")
    ref = _fresh_eval(subject, model, x)
    assert_close(after, ref, what="no_grad eval after the edit vs a fresh model")
    assert_close(model(x), ref, what="grad-enabled eval after the edit vs a fresh model")


@pytest.mark.parametrize("subject", CORE_ACCEL)
def test_inplace_bn_stats_edit_seen_in_eval(subject):
    model = subject.build()
    x = images(2)
    before = run(model, x, "eval")
    model(x)
    bns = batchnorms(model)
    assert bns
    for bn in bns:
        bn.running_mean.data.add_(0.3)
        bn.running_var.data.mul_(1.5)
    after = run(model, x, "eval")
    assert_differs(after, before, "running stats edited")
    ref = _fresh_eval(subject, model, x)
    assert_close(after, ref, what="no_grad eval after the edit vs a fresh model")
    assert_close(model(x), ref, what="grad-enabled eval after the edit vs a fresh model")


# ------------------------------------------------------------- 8. failed batch-1 train step


def _bn_inputs_in_order(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """(index in ``batchnorms(model)``, values per channel) in execution order, measured on a
    copy in eval mode with forward pre-hooks (the copy is only a shape probe)."""
    probe = copy.deepcopy(model).eval()
    bns = batchnorms(probe)
    order: list[tuple[int, int]] = []
    handles = [
        bn.register_forward_pre_hook(
            lambda _m, args, i=i: order.append((i, args[0].numel() // args[0].shape[1]))
        )
        for i, bn in enumerate(bns)
    ]
    probe(x)
    for h in handles:
        h.remove()
    return order


@pytest.mark.parametrize("size", [2, 32])
@pytest.mark.parametrize("subject", CORE_ACCEL)
def test_failed_batch1_step_keeps_bn_stats(subject, size):
    """Batch 1 in train mode: the first BN that sees one value per channel raises ValueError.
    At 2 px that is the stem's BN, so no statistic may change; at 32 px (last maps 1x1) the BNs
    from the failing one on must be unchanged. Every statistic stays finite, eval still works."""
    model = subject.build().train()
    bns = batchnorms(model)
    assert bns
    x = images(1, size)
    first_single = None
    if size == 32:
        order = _bn_inputs_in_order(model, x)
        singles = [k for k, (_, per_channel) in enumerate(order) if per_channel == 1]
        assert singles, "test setup: no BN sees a 1x1 map at 32 px"
        first_single = singles[0]
        must_keep = {i for i, _ in order[first_single:]}
    else:
        must_keep = set(range(len(bns)))
    saved = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    with pytest.raises(ValueError):
        model(x)
    nonfinite = [
        i
        for i, bn in enumerate(bns)
        if not (torch.isfinite(bn.running_mean).all() and torch.isfinite(bn.running_var).all())
    ]
    assert not nonfinite, f"{len(nonfinite)}/{len(bns)} BNs hold non-finite statistics"
    changed = [
        i
        for i in sorted(must_keep)
        if not (
            torch.equal(bns[i].running_mean, saved[i][0])
            and torch.equal(bns[i].running_var, saved[i][1])
        )
    ]
    assert not changed, f"{len(changed)}/{len(must_keep)} BNs changed by the failed step"
    out = run(model, images(2, 32), "eval")
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------- 9. memory format


def _assert_format_follows(t: torch.Tensor, channels_last_in: bool, what: str) -> None:
    assert t.dim() == 4, what
    if channels_last_in:
        ok = t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)
        assert ok, f"{what}: channels_last in, strides {t.stride()} out"
    else:
        assert t.is_contiguous(), f"{what}: NCHW in, strides {t.stride()} out (not NCHW)"
        t.view(t.shape[0], -1)


@pytest.mark.parametrize("subject", CORE_ACCEL)
def test_forward_features_memory_format(subject):
    """(64 px: at 32 px the last map is 1x1, where NCHW and channels_last strides coincide.)"""
    model = subject.build()
    x = images(2, 64)
    for mode in MODES:
        for cl in (False, True):
            inp = x.contiguous(memory_format=torch.channels_last) if cl else x
            f = run(model, inp, mode, subject.forward_features)
            _assert_format_follows(f, cl, f"forward_features, {mode}")


@pytest.mark.parametrize("subject", CORE_ACCEL)
def test_features_only_memory_format(subject):
    backbone = subject.features_only()
    x = images(2, 64)
    for mode in MODES:
        for cl in (False, True):
            inp = x.contiguous(memory_format=torch.channels_last) if cl else x
            maps = run(backbone, inp, mode)
            assert maps
            for i, f in enumerate(maps):
                _assert_format_follows(f, cl, f"features_only map {i}, {mode}")


# ------------------------------------------------------------- 10. inference mode, meta device


@pytest.mark.parametrize("subject", ALL)
def test_build_and_run_in_inference_mode(subject):
    """Built, and run for the first time (eval and train), inside torch.inference_mode."""
    x = images(2)
    with torch.inference_mode():
        model = subject.make()
        model.eval()
        first = model(x)
        model.train()
        trained = model(x)
        model.eval()
        after = model(x)
    assert first.shape == trained.shape == after.shape == (2, NUM_CLASSES)
    assert torch.isfinite(trained).all()
    ref = _fresh_eval(subject, model, x)
    assert_close(after.clone(), ref, what="inference-mode model vs the same state dict")


@pytest.mark.parametrize("subject", ALL)
def test_inference_mode_then_autograd(subject):
    """A model built normally runs inside inference_mode, and afterwards still runs and trains
    outside it (nothing created inside inference mode is kept)."""
    model = subject.build()
    x = images(2)
    ref = run(model, x, "eval")
    with torch.inference_mode():
        inside = model(x)
    assert_close(inside.clone(), ref, what="inference_mode vs no_grad")
    assert_close(run(model, x, "eval"), ref, what="no_grad after inference_mode")
    out = model(x)
    assert_close(out, ref, what="grad-enabled eval after inference_mode")
    loss_of(out).backward()
    _, grads = train_step(model, x)
    assert grads
    assert all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("subject", ALL)
def test_meta_device(subject):
    """Built on the meta device at its real size; train and eval forwards give the shapes."""
    model = subject.construct(device="meta")
    res = subject.resolution()
    x = torch.empty(2, 3, res, res, device="meta")
    for mode in MODES:
        out = run(model, x, mode)
        assert out.device.type == "meta"
        assert out.shape == (2, 1000)
        f = run(model, x, mode, subject.forward_features)
        side = ceil_div(res, 32)
        assert f.shape == (2, subject.num_features(model), side, side)


# ---------------------------------------------------------- 11. layout, shape and channels


@pytest.mark.parametrize("subject", CORE)
def test_channels_last_input(subject):
    """A channels_last input gives the NCHW input's outputs and gradients."""
    model = subject.build()
    x = images(2, 64)
    xcl = x.contiguous(memory_format=torch.channels_last)
    assert_close(run(model, xcl, "eval"), run(model, x, "eval"), what="channels_last eval")
    out, grads = train_step(model, x)
    out_cl, grads_cl = train_step(model, xcl)
    assert_close(out_cl, out, what="channels_last train output")
    if piecewise_linear(model):  # layout-level rounding flips ReLU6 clamps: see piecewise_linear
        assert all(torch.isfinite(g).all() for g in grads_cl.values())
        return
    # Train-mode gradients of deep random nets amplify float32 rounding (V2-XL: 1.2e-4).
    assert_grads_close(grads_cl, grads, 1e-3, what="channels_last gradients")


@pytest.mark.parametrize("subject", ALL)
def test_non_square_input(subject):
    model = subject.build()
    x = images(2, (64, 96))
    for mode in MODES:
        assert run(model, x, mode).shape == (2, NUM_CLASSES)
        f = run(model, x, mode, subject.forward_features)
        assert f.shape == (2, subject.num_features(model), 2, 3)
    if subject.kind == "torchvision":
        return
    backbone = subject.features_only()
    maps = run(backbone, x, "eval")
    specs = feature_specs(backbone)
    assert [tuple(m.shape) for m in maps] == [
        (2, c, ceil_div(64, r), ceil_div(96, r)) for c, r in specs
    ]


@pytest.mark.parametrize("chans", [1, 4])
@pytest.mark.parametrize("subject", ALL)
def test_in_chans(subject, chans):
    if not subject.has_in_chans:
        pytest.skip("torchvision's EfficientNet has no in_chans option")
    model = subject.build(in_chans=chans)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.shape[1] == chans
    x = images(2, chans=chans)
    out, grads = train_step(model, x)
    assert out.shape == (2, NUM_CLASSES)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert run(model, x, "eval").shape == (2, NUM_CLASSES)


# ------------------------------------------------------------------ 12. every module runs


def _assert_every_module_runs(model: nn.Module, x: torch.Tensor, counter) -> None:
    named = called_modules(model)
    for mode in MODES:
        with counter([m for _, m in named]) as counts:
            run(model, x, mode)
        missing = missing_calls(named, counts)
        assert not missing, f"{mode}: {len(missing)}/{len(named)} modules never ran: {missing[:8]}"


@pytest.mark.parametrize("subject", CORE)
def test_every_module_runs_forward_hooks(subject):
    """A forward hook on every module fires in a train and in an eval forward. Exempt: plain
    nn.Sequential / ModuleList / ModuleDict (a parent may iterate instead of calling them)."""
    _assert_every_module_runs(subject.build(), images(2), hook_calls)


@pytest.mark.parametrize("subject", CORE_EVERY)
def test_every_module_runs_without_hooks(subject):
    """The same, counted by instance-level forward wrappers, with no hook anywhere."""
    _assert_every_module_runs(subject.build(), images(2), count_calls)


@pytest.mark.parametrize("subject", CORE)
def test_features_only_every_module_runs(subject):
    if subject.kind == "torchvision":
        pytest.skip("torchvision has no features_only module (its extractor is an FX graph)")
    backbone = subject.features_only()
    _assert_every_module_runs(backbone, images(2, 64), count_calls)
    _assert_every_module_runs(backbone, images(2, 64), hook_calls)


# ------------------------------------------------------------------- effnet.accelerate(model)


@pytest.mark.parametrize("name", [s.name for s in ACCELERATED])
def test_accelerated_matches_plain(name):
    """Two models from one state dict, one accelerated in place: train outputs, gradients and BN
    statistics, and eval outputs, agree within 1e-4."""
    plain = Subject(name, "effnet", name).build()
    fast = Subject(name, "effnet", name).build()
    fast.load_state_dict(plain.state_dict())
    assert ACCELERATE(fast) is fast
    x = images(2, 64)
    out, grads = train_step(plain, x)
    out_f, grads_f = train_step(fast, x)
    assert_close(out_f, out, what="train output")
    assert_grads_close(grads_f, grads, what="train gradients")
    state, state_f = plain.state_dict(), fast.state_dict()
    assert state.keys() == state_f.keys()
    for k, v in state.items():
        if v.is_floating_point():
            assert_close(state_f[k], v, what=f"state after a train step: {k}")
    assert_close(run(fast, x, "eval"), run(plain, x, "eval"), what="eval output, no_grad")
    assert_close(fast(x), plain(x), what="eval output, grad enabled")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_scripting_an_accelerated_model_leaves_it_accelerated_and_shares_its_parameters():
    """``torch.jit.script`` compiles a plain twin (TorchScript cannot compile the fast forwards):
    the model keeps its fast classes and its own child modules, and the script reads the
    model's parameters, so an edit to one is seen by the other."""
    from effnet.fast import is_accelerated

    model = ACCELERATED[0].build().eval()
    children = list(model.modules())
    classes = [type(m) for m in children]
    scripted = torch.jit.script(model)
    assert [type(m) for m in model.modules()] == classes
    assert all(a is b for a, b in zip(model.modules(), children, strict=True))
    assert is_accelerated(model)
    x = images(2)
    assert_close(run(scripted, x, "eval"), run(model, x, "eval"), what="scripted")
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    assert_close(run(scripted, x, "eval"), run(model, x, "eval"), what="after an edit")


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("accelerated", [False, True], ids=["plain", "accelerated"])
def test_jit_script_features_only(accelerated):
    """A features_only backbone scripts too (its ``default_cfg`` stays Python-side) and its
    script returns the same feature maps."""
    model = effnet.create_model("efficientnet_b0", features_only=True, out_indices=(1, 3, 5))
    if accelerated:
        ACCELERATE(model)
    model.eval()
    scripted = torch.jit.script(model)
    x = images(2, 64)
    with torch.no_grad():
        want, got = model(x), scripted(x)
    assert len(got) == len(want) == 3
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close(g, w, what=f"feature map {i}")
