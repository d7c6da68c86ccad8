"""The LR schedule matches upstream GPT-NeoX's AnnealingLR (facts §7.1)."""

from __future__ import annotations

import math

import pytest
import torch

from neox.errors import CheckpointError
from neox.train.lr import AnnealingLR, annealing_lr


def _sched(style="cosine", lr=1.0, warmup=10.0, total=100, min_lr=0.1, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    return opt, AnnealingLR(opt, start_lr=lr, warmup_iter=warmup, total_iters=total, decay_style=style, min_lr=min_lr, **kw)


def test_warmup_starts_at_one_step_not_zero():
    # max(1, n): step 0 trains at lr_max / W, not at 0.
    opt, s = _sched(warmup=10.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    "style,n,expected",
    [
        # W = 10, T = 100, E = 90, lr_max 1, min_lr 0.1
        ("cosine", 10, 1.0),  # n <= W is still warmup: 1.0 * 10/10
        ("cosine", 55, 0.1 + 0.9 / 2 * (1 + math.cos(math.pi * 45 / 90))),
        ("cosine", 100, 0.1),
        ("cosine", 145, 0.1 + 0.9 / 2 * (1 + math.cos(math.pi * 135 / 90))),  # not clamped past T
        ("linear", 55, 1.0 * (90 - 45) / 90),
        ("linear", 99, max(0.1, (90 - 89) / 90)),  # decays toward 0, clipped by min_lr
        ("exponential", 55, math.exp(-0.693 * 45 / 90)),
        ("constant", 77, 1.0),
    ],
)
def test_decay_styles(style, n, expected):
    got = annealing_lr(n, lr_max=1.0, warmup=10.0, total=100, style=style, min_lr=0.1)
    assert got == pytest.approx(expected, rel=1e-12)


def test_no_warmup_and_fractional_warmup():
    assert annealing_lr(0, lr_max=2.0, warmup=0.0, total=10, style="linear", min_lr=0.0) == 2.0
    # W = 0.05 * 300 = 15.000000000000002 (float): n = 15 is still warmup
    w = 0.05 * 300
    assert annealing_lr(15, lr_max=3e-3, warmup=w, total=300, style="cosine", min_lr=3e-4) == pytest.approx(3e-3 * 15 / w)


def test_state_dict_has_upstream_keys_and_round_trips():
    opt, s = _sched()
    for _ in range(37):
        s.step()
    sd = s.state_dict()
    assert set(sd) == {"start_lr", "warmup_iter", "num_iters", "decay_style", "end_iter", "min_lr"}
    assert sd["num_iters"] == 37
    opt2, s2 = _sched()
    s2.load_state_dict(sd)
    assert s2.num_iters == 37 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_mismatched_schedule_is_an_error_unless_asked():
    _, s = _sched(total=100)
    sd = s.state_dict()
    _, other = _sched(total=200)
    with pytest.raises(CheckpointError, match="lr_decay_iters 100 in the checkpoint vs 200 in the config.*use_checkpoint_lr_scheduler"):
        other.load_state_dict(sd)
    _, take = _sched(total=200, use_checkpoint_lr_scheduler=True)
    take.load_state_dict(sd)
    assert take.end_iter == 100
    _, keep = _sched(total=200, override_lr_scheduler=True)
    keep.load_state_dict(sd)
    assert keep.end_iter == 200
