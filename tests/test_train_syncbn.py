"""effnet's SyncBatchNorm2d: plain BatchNorm in one process, BatchNorm of the concatenated batch
across processes (values, input and parameter gradients, running statistics)."""

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from effnet.training.syncbn import SyncBatchNorm2d, convert_sync_batchnorm

C = 5


def _bn(momentum=0.1, affine=True, track=True):
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(C, eps=1e-3, momentum=momentum, affine=affine, track_running_stats=track)
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    if track:
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn


def _step(bn, x, proj, steps=2):
    """Two training forwards (running statistics move twice); grads of a fixed projection."""
    bn.train()
    x = x.clone().requires_grad_(True)
    for _ in range(steps - 1):
        bn(x.detach())
    y = bn(x)
    (y * proj).sum().backward()
    return y.detach(), x.grad


def _grads(bn):
    return [p.grad for p in bn.parameters()]


def _state(bn):
    return {k: v.clone() for k, v in bn.state_dict().items()}


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_conversion_keeps_tensors_and_keys():
    model = nn.Sequential(nn.Conv2d(3, C, 3), _bn(), nn.SiLU(), nn.Sequential(_bn()))
    params = [id(p) for p in model.parameters()]
    buffers = [id(b) for b in model.buffers()]
    keys = list(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert convert_sync_batchnorm(model) is model
    assert [type(m) for m in (model[1], model[3][0])] == [SyncBatchNorm2d] * 2
    assert [id(p) for p in model.parameters()] == params
    assert [id(b) for b in model.buffers()] == buffers
    assert list(model.state_dict()) == keys
    assert opt.param_groups[0]["params"][2] is model[1].weight
    with pytest.raises(ValueError, match=r"nn\.Module"):
        convert_sync_batchnorm("model")


@pytest.mark.parametrize("momentum", [0.1, None])
def test_without_process_group_is_plain_batchnorm(momentum):
    ref = _bn(momentum)
    sync = convert_sync_batchnorm(copy.deepcopy(ref))
    x, proj = torch.randn(6, C, 4, 3), torch.randn(6, C, 4, 3)
    y0, g0 = _step(ref, x, proj)
    y1, g1 = _step(sync, x, proj)
    torch.testing.assert_close(y1, y0, rtol=0, atol=0)
    torch.testing.assert_close(g1, g0, rtol=0, atol=0)


@pytest.mark.parametrize(
    "momentum,affine,track", [(0.1, True, True), (None, True, True), (0.3, False, False)]
)
def test_global_batch_norm_equals_batchnorm(one_process_group, momentum, affine, track):
    """The synchronised code path itself, run in a one-process gloo group."""
    ref = _bn(momentum, affine, track)
    sync = convert_sync_batchnorm(copy.deepcopy(ref))
    x, proj = torch.randn(7, C, 5, 3) * 3 + 1, torch.randn(7, C, 5, 3)
    y0, g0 = _step(ref, x, proj)
    sync.train()
    sync.forward = sync.global_batch_norm  # one process: forward alone would step aside
    y1, g1 = _step(sync, x, proj)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(g1, g0)
    for a, b in zip(_grads(sync), _grads(ref), strict=True):
        torch.testing.assert_close(a, b)
    for k, v in _state(ref).items():
        torch.testing.assert_close(_state(sync)[k], v, msg=k)
    # bf16 input (autocast): float32 statistics, bf16 output
    yb = sync.global_batch_norm(x.bfloat16())
    assert yb.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        sync.global_batch_norm(torch.randn(1, C, 1, 1))


def test_eval_uses_running_statistics(one_process_group):
    ref = _bn().eval()
    sync = convert_sync_batchnorm(copy.deepcopy(ref)).eval()
    x = torch.randn(4, C, 3, 3)
    torch.testing.assert_close(sync(x), ref(x), rtol=0, atol=0)


def _worker(rank, world, store, data, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        bn = convert_sync_batchnorm(copy.deepcopy(data["bn"]))
        x, proj = data["x"].chunk(world)[rank], data["proj"].chunk(world)[rank]
        y, g = _step(bn, x, proj)
        grads = _grads(bn)
        for p in grads:
            dist.all_reduce(p)  # what DDP does with parameter gradients (up to its 1/world)
        torch.save({"y": y, "x_grad": g, "grads": grads, "state": _state(bn)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("momentum", [0.1, None])
def test_two_processes_equal_one_process_on_the_global_batch(tmp_path, momentum):
    world = 2
    x, proj = torch.randn(8, C, 3, 4) * 2 - 1, torch.randn(8, C, 3, 4)
    data = {"bn": _bn(momentum), "x": x, "proj": proj}
    ref = copy.deepcopy(data["bn"])
    y0, g0 = _step(ref, data["x"], data["proj"])
    out = tmp_path / "result"
    # spawn: a fresh interpreter per rank, given this process's sys.path (this checkout)
    mp.spawn(_worker, args=(world, tmp_path / "store", data, out), nprocs=world, join=True)
    got = [torch.load(f"{out}.{r}", weights_only=True) for r in range(world)]
    torch.testing.assert_close(torch.cat([g["y"] for g in got]), y0)
    torch.testing.assert_close(torch.cat([g["x_grad"] for g in got]), g0)
    for r in range(world):
        for a, b in zip(got[r]["grads"], _grads(ref), strict=True):
            torch.testing.assert_close(a, b)
        for k, v in _state(ref).items():
            # identical across processes, and what one process computes on all the images
            torch.testing.assert_close(got[r]["state"][k], got[0]["state"][k], rtol=0, atol=0)
            torch.testing.assert_close(got[r]["state"][k], v, msg=k)
