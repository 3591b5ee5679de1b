"""tune_lsd/losses/lsd.py: the listwise KL against a per-anchor reference, the teachers, the weight."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tune_lsd.config import LSDConfig
from tune_lsd.losses.lsd import EmaTeacher, EpochTeacher, ema_horizon_warning, listwise_kl, lsd_weight


def reference_lsd(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Independent per-anchor loop in float64: tau^2 * mean_i sum_j p_T(i,j) log(p_T(i,j) / p_S(i,j))."""
    total = torch.zeros((), dtype=torch.float64)
    for i in range(student.shape[0]):
        s_row = torch.stack([torch.dot(student[i], student[j]) for j in range(student.shape[0])]) / tau
        t_row = torch.stack([torch.dot(teacher[i], teacher[j]) for j in range(teacher.shape[0])]) / tau
        p_t = torch.exp(t_row - torch.logsumexp(t_row, 0))
        p_s = torch.exp(s_row - torch.logsumexp(s_row, 0))
        total = total + torch.sum(p_t * (torch.log(p_t) - torch.log(p_s)))
    return tau**2 * total / student.shape[0]


def unit_rows(batch: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5, 1.0, 2.0])
def test_listwise_kl_matches_per_anchor_reference_value_and_gradient(tau):
    student64 = unit_rows(12, 16, seed=1).requires_grad_(True)
    teacher64 = unit_rows(12, 16, seed=2)
    expected = reference_lsd(student64, teacher64, tau)
    expected.backward()

    student32 = student64.detach().float().requires_grad_(True)
    value = listwise_kl(student32, teacher64.float(), tau)
    value.backward()

    assert value.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-7)
    assert torch.allclose(student32.grad.double(), student64.grad, rtol=1e-3, atol=1e-6)


def test_listwise_kl_is_zero_for_identical_embeddings_and_gives_teacher_no_gradient():
    student = unit_rows(8, 4, seed=3).float().requires_grad_(True)
    teacher = student.detach().clone().requires_grad_(True)
    value = listwise_kl(student, teacher, 0.5)
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    listwise_kl(student, unit_rows(8, 4, seed=4).float().requires_grad_(True), 0.5).backward()
    assert teacher.grad is None


def test_listwise_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        listwise_kl(torch.zeros(4, 3), torch.zeros(5, 3), 1.0)


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))


def test_ema_teacher_follows_the_ema_formula_after_every_step():
    torch.manual_seed(0)
    student = _tiny_net()
    teacher = EmaTeacher(student, momentum=0.9)
    expected = {k: v.clone() for k, v in student.state_dict().items() if v.is_floating_point()}
    for _ in range(3):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        teacher.after_step(student)
        for name, value in student.state_dict().items():
            if name in expected:
                expected[name] = 0.9 * expected[name] + 0.1 * value
    for name, value in teacher.module.state_dict().items():
        if name in expected:
            assert torch.allclose(value, expected[name], atol=1e-6), name
    assert teacher.steps == 3


def test_teacher_uses_batch_statistics_and_leaves_running_stats_alone():
    torch.manual_seed(0)
    student = _tiny_net()
    teacher = EmaTeacher(student, momentum=0.9)
    bn = teacher.module[1]
    before = bn.running_mean.clone()
    x = torch.randn(16, 4) * 5 + 3
    out = teacher.embed(x)
    assert torch.equal(bn.running_mean, before)  # not updated by the teacher's forward
    manual = teacher.module[2](F.batch_norm(teacher.module[0](x), None, None, bn.weight, bn.bias, training=True))
    assert torch.allclose(out, manual, atol=1e-5)  # batch statistics were used


def test_epoch_teacher_is_the_previous_epochs_snapshot():
    torch.manual_seed(0)
    student = _tiny_net()
    teacher = EpochTeacher(student)
    x = torch.randn(8, 4)
    assert teacher.embed(x) is None  # no previous epoch yet
    teacher.after_epoch(student)
    snapshot = copy.deepcopy(student.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)  # the student trains on during the next epoch
    for name, value in teacher.module.state_dict().items():
        if name in snapshot and snapshot[name].is_floating_point():
            assert torch.equal(value, snapshot[name]), name
    assert not any(p.requires_grad for p in teacher.module.parameters())

    restored = EpochTeacher(student)
    restored.load_state_dict(teacher.state_dict())
    assert torch.allclose(restored.embed(x), teacher.embed(x))


@pytest.mark.parametrize(
    "ramp, epoch, expected", [("linear", 0, 0.0), ("linear", 5, 5.0), ("constant", 0, 10.0), ("none", 7, 0.0)]
)
def test_lsd_weight_ramps(ramp, epoch, expected):
    assert lsd_weight(LSDConfig(weight=10.0, ramp=ramp), epoch, total_epochs=10) == pytest.approx(expected)


def test_lsd_weight_is_zero_before_start_epoch_and_when_disabled():
    assert lsd_weight(LSDConfig(weight=10.0, ramp="constant", start_epoch=3), 2, 10) == 0.0
    assert lsd_weight(LSDConfig(weight=10.0, ramp="constant", start_epoch=3), 3, 10) == 10.0
    assert lsd_weight(LSDConfig(enabled=False, weight=10.0, ramp="constant"), 5, 10) == 0.0


def test_ema_horizon_warning_only_when_horizon_exceeds_half_the_run():
    assert ema_horizon_warning(0.999, total_steps=220) is not None
    assert ema_horizon_warning(0.9, total_steps=220) is None
    assert np.isclose(1 / (1 - 0.99), 100)
    assert ema_horizon_warning(0.99, total_steps=199) is not None
