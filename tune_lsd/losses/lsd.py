"""Listwise Self-Distillation (LSD, arXiv 2206.08880), as the official code computes it.

The student's and the teacher's embeddings of the SAME augmented batch give two B x B cosine
matrices S and T (diagonal kept). Row i of each, divided by the temperature tau, is a
softmax distribution over the batch; LSD is the forward KL from teacher to student rows:

    L_LSD = tau^2 * mean_i KL( softmax(T_i / tau) || softmax(S_i / tau) )

and the training loss is ``L_DML + w(e) * alpha * L_LSD`` (see :func:`lsd_weight`).

The teacher is either an exponential moving average of the student (``ema``, updated after
every optimiser step) or a frozen copy of the student at the end of the previous epoch
(``epoch``, paper-faithful). It runs with the student's BatchNorm behaviour: batch
statistics in training, running statistics never updated (docs/method.md says why).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn

from tune_lsd.config import LSDConfig


def listwise_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``tau^2 * mean_i KL(softmax(T_i/tau) || softmax(S_i/tau))`` for L2-normalised (B, D) inputs.

    The teacher is the target and gets no gradient.
    """
    if student.shape != teacher.shape or student.ndim != 2:
        raise ValueError(
            f"student and teacher must both be (B, D), got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    teacher = teacher.detach().float()
    student = student.float()
    log_p_student = F.log_softmax(student @ student.T / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher @ teacher.T / temperature, dim=1)
    # kl_div(input=log q, target=log p, log_target=True) sums p * (log p - log q); batchmean divides by B.
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def lsd_weight(config: LSDConfig, epoch: int, total_epochs: int) -> float:
    """Effective weight ``w(e) * alpha`` of the LSD term in (0-based) ``epoch``."""
    if not config.enabled or epoch < config.start_epoch or config.ramp == "none":
        return 0.0
    if config.ramp == "linear":
        return config.weight * epoch / total_epochs
    return config.weight


def ema_horizon_warning(momentum: float, total_steps: int) -> str | None:
    """A warning when the EMA's horizon 1/(1-m) exceeds half the run's optimiser steps.

    Such a teacher stays close to its random initialisation for the whole run (measured on
    glyphs: m = 0.999 over 220 steps kept ~80 % of the init and hurt the student).
    """
    horizon = 1.0 / (1.0 - momentum)
    if horizon > total_steps / 2:
        return (
            f"lsd.ema_momentum={momentum} averages over ~{horizon:.0f} steps but the run has only "
            f"{total_steps}: the teacher will stay close to its initialisation (lower the momentum)"
        )
    return None


def _batch_statistics_only(model: nn.Module) -> nn.Module:
    """BatchNorm uses batch statistics in train mode and never updates its running stats."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
    return model


class Teacher:
    """Interface of both teachers: ``embed`` a batch; hooks after each step and epoch."""

    module: nn.Module  # the teacher's network

    def embed(self, images: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def after_step(self, student: nn.Module) -> None:
        pass

    def after_epoch(self, student: nn.Module) -> None:
        pass

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def compile(self) -> None:
        """``torch.compile`` the teacher's network in place (its state dict keys stay the same)."""
        self.module.compile()


class EmaTeacher(Teacher):
    """theta_T <- m * theta_T + (1 - m) * theta_S after every optimiser step (timm's ModelEmaV3)."""

    def __init__(self, student: nn.Module, momentum: float, warmup: bool = False) -> None:
        self.ema = ModelEmaV3(student, decay=momentum, use_warmup=warmup)
        self.module = _batch_statistics_only(self.ema.module)  # the averaged copy timm updates in place
        self.warmup = warmup
        self.steps = 0

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.module.train()
        return self.module(images)

    def after_step(self, student: nn.Module) -> None:
        self.steps += 1
        # Without warm-up the decay is the constant m; with it, timm ramps it up by step count.
        self.ema.update(student, step=self.steps if self.warmup else None)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = state["steps"]


class EpochTeacher(Teacher):
    """A frozen copy of the student as it was at the end of the previous epoch (none in epoch 0).

    The copy is allocated once, when the teacher is built, and refreshed in place at every
    epoch end: no new device memory per epoch, and a compiled teacher stays compiled.
    """

    def __init__(self, student: nn.Module) -> None:
        self.module = _batch_statistics_only(copy.deepcopy(student)).requires_grad_(False)
        self.ready = False  # no snapshot before the first epoch ends

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor | None:
        if not self.ready:
            return None
        self.module.train()
        return self.module(images)

    @torch.no_grad()
    def after_epoch(self, student: nn.Module) -> None:
        for mine, theirs in zip(self.module.state_dict().values(), student.state_dict().values()):
            mine.copy_(theirs)
        self.ready = True

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict() if self.ready else None}

    def load_state_dict(self, state: dict) -> None:
        self.ready = state["module"] is not None
        if self.ready:
            self.module.load_state_dict(state["module"])


def build_teacher(config: LSDConfig, student: nn.Module) -> Teacher | None:
    """The configured teacher, or None when LSD is off."""
    if not config.enabled:
        return None
    if config.teacher == "ema":
        return EmaTeacher(student, config.ema_momentum, config.ema_warmup)
    return EpochTeacher(student)
