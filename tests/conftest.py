"""Shared fixtures: small real data (the bundled glyphs) and quick configs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tune_lsd.config import Config  # noqa: E402


def quick_config(**overrides) -> Config:
    """A few-second config on a subset of the bundled glyph classes."""
    base = {
        "data.max_classes": 60,
        "data.max_test_classes": 40,
        "data.batch_size": 64,
        "schedule.epochs": 2,
        "schedule.steps_per_epoch": 4,
        "eval.nmi": False,
        "runtime.progress": False,
        "lsd.ema_momentum": 0.5,
    }
    base.update(overrides)
    return Config().with_overrides(base)


@pytest.fixture
def config_factory():
    return quick_config
