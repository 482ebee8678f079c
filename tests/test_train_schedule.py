"""Schedules, progressive stages, TF-style RMSProp, parameter groups and EMA."""

import itertools
import math

import pytest
import torch
from torch import nn

from effnet.training.optim import EMA, RMSpropTF, param_groups
from effnet.training.schedule import V2_PROGRESSIVE, lr_at, progressive_stages


def test_warmup_then_exponential_staircase():
    kw = dict(
        base_lr=0.016,
        total_steps=1000,
        steps_per_epoch=10,
        warmup_epochs=2,
        schedule="exponential",
        decay_rate=0.97,
        decay_epochs=2.4,
    )
    assert lr_at(0, **kw) == pytest.approx(0.016 / 20)
    assert lr_at(19, **kw) == pytest.approx(0.016)
    assert lr_at(20, **kw) == pytest.approx(0.016)
    assert lr_at(20 + 23, **kw) == pytest.approx(0.016)  # 2.4 epochs = 24 steps
    assert lr_at(20 + 24, **kw) == pytest.approx(0.016 * 0.97)
    assert lr_at(20 + 240, **kw) == pytest.approx(0.016 * 0.97**10)


def test_cosine_reaches_min_lr_at_last_step():
    kw = dict(
        base_lr=1.0,
        total_steps=101,
        steps_per_epoch=10,
        warmup_epochs=0,
        schedule="cosine",
        min_lr=0.1,
    )
    assert lr_at(0, **kw) == pytest.approx(1.0)
    assert lr_at(50, **kw) == pytest.approx(0.55)
    assert lr_at(100, **kw) == pytest.approx(0.1)
    vals = [lr_at(s, **kw) for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(vals))


def test_progressive_stages_follow_algorithm_1():
    p = V2_PROGRESSIVE["efficientnetv2_s"]
    st = progressive_stages(350, 4, p["image_size"], p["magnitude"], p["mixup"], p["dropout"])
    assert [s.image_size for s in st] == [128, 185, 243, 300]  # 128 + 172*i/3
    assert [s.magnitude for s in st] == [5, pytest.approx(8.3333), pytest.approx(11.6667), 15]
    assert [s.dropout for s in st] == [0.1, pytest.approx(0.1667), pytest.approx(0.2333), 0.3]
    assert st[0].first_epoch == 0 and st[-1].last_epoch == 350
    assert all(a.last_epoch == b.first_epoch for a, b in itertools.pairwise(st))
    with pytest.raises(ValueError, match="stages"):
        progressive_stages(3, 4, (32, 64), (0, 1), (0, 0), (0, 0))


def test_rmsprop_tf_matches_hand_computation():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([w], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.9)
    ms, mom, ref = torch.ones(2), torch.zeros(2), w.detach().clone()
    for g in ([0.5, -1.0], [0.2, 0.3]):
        w.grad = torch.tensor(g)
        opt.step()
        gt = torch.tensor(g)
        ms = 0.9 * ms + 0.1 * gt * gt
        mom = 0.9 * mom + 0.1 * gt / torch.sqrt(ms + 1e-3)  # epsilon inside the sqrt
        ref = ref - mom
    assert torch.allclose(w.detach(), ref, atol=1e-7)
    # torch's RMSprop (eps outside the sqrt, ms from 0) takes a different step
    w2 = nn.Parameter(torch.tensor([1.0, -2.0]))
    o2 = torch.optim.RMSprop([w2], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.9)
    w2.grad = torch.tensor([0.5, -1.0])
    o2.step()
    assert not math.isclose(float(w2.detach()[0]), float(ref[0]), rel_tol=1e-3)


def test_weight_decay_skips_bn_and_bias():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    m(torch.zeros(1, 3, 5, 5))
    decay, no_decay = param_groups(m, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(m[0].weight), id(m[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, bn weight, bn bias, linear bias


def test_ema_tracks_average_and_round_trips():
    m = nn.Linear(2, 1)
    ema = EMA(m, 0.5)
    with torch.no_grad():
        m.weight.fill_(1.0)
    before = ema.module.weight.clone()
    ema.update(m)  # decay warms up: min(0.5, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.module.weight, before * d + (1 - d))
    other = EMA(nn.Linear(2, 1), 0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.module.weight, ema.module.weight)
