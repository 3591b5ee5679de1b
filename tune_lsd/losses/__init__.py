"""Base DML losses (pytorch-metric-learning) and Listwise Self-Distillation."""

from tune_lsd.losses.base import BASE_LOSSES, BaseLoss, LossConfigError, build_base_loss
from tune_lsd.losses.lsd import EmaTeacher, EpochTeacher, Teacher, build_teacher, listwise_kl, lsd_weight

__all__ = [
    "BASE_LOSSES",
    "BaseLoss",
    "EmaTeacher",
    "EpochTeacher",
    "LossConfigError",
    "Teacher",
    "build_base_loss",
    "build_teacher",
    "listwise_kl",
    "lsd_weight",
]
