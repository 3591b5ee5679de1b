"""tune_lsd/losses/base.py with LSD: every base loss x LSD on/off trains the backbone."""

from __future__ import annotations

import pytest
import torch

from tune_lsd.config import Config, LossConfig
from tune_lsd.data.datasets import load_dataset
from tune_lsd.data.transforms import to_tensor
from tune_lsd.engine import Trainer
from tune_lsd.losses.base import BASE_LOSSES, LossConfigError, build_base_loss
from tune_lsd.losses.lsd import build_teacher, listwise_kl
from tune_lsd.models import build_model


@pytest.fixture(scope="module")
def glyph_batch():
    data = load_dataset("glyphs", None, 32).train
    keep = data.labels < 8
    images = to_tensor(data.images[keep][:64], torch.device("cpu"))
    return images, torch.from_numpy(data.labels[keep][:64])


@pytest.mark.parametrize("lsd_on", [False, True], ids=["base", "lsd"])
@pytest.mark.parametrize("loss_name", sorted(BASE_LOSSES))
def test_every_base_loss_with_and_without_lsd_reaches_the_backbone(loss_name, lsd_on, glyph_batch):
    torch.manual_seed(0)
    images, labels = glyph_batch
    config = Config().with_overrides({"loss.name": loss_name, "lsd.enabled": lsd_on, "model.embedding_dim": 32})
    model = build_model(config.model, in_chans=1).train()
    base_loss = build_base_loss(config.loss, num_classes=8, embedding_dim=32)
    teacher = build_teacher(config.lsd, model)
    if lsd_on:  # make the teacher differ from the student, as after some training
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    embeddings = model(images)
    loss = base_loss(embeddings, labels)
    if lsd_on:
        lsd = listwise_kl(embeddings, teacher.embed(images), temperature=0.5)
        assert lsd.item() > 0
        loss = loss + 10.0 * lsd
    assert torch.isfinite(loss)
    loss.backward()
    stem_grad = model.backbone.conv1[0].weight.grad
    assert stem_grad is not None and torch.isfinite(stem_grad).all() and stem_grad.abs().sum() > 0
    if loss_name.startswith("proxy") or loss_name == "normalized_softmax":
        assert base_loss.parameters() and base_loss.parameters()[0].grad is not None  # proxies learn too


def test_zero_lsd_weight_trains_exactly_like_the_base_loss(config_factory):
    off = Trainer(config_factory(**{"lsd.enabled": False}))
    zero = Trainer(config_factory(**{"lsd.enabled": True, "lsd.weight": 0.0, "lsd.ramp": "constant"}))
    for _ in range(2):
        off.train_epoch()
        zero.train_epoch()
    for name, value in off.model.state_dict().items():
        assert torch.equal(value, zero.model.state_dict()[name]), name


def test_loss_errors_name_the_parameter():
    with pytest.raises(LossConfigError, match="loss.params.gamma is not a parameter of multi_similarity"):
        build_base_loss(LossConfig(name="multi_similarity", params={"gamma": 1.0}), 10, 8)
    config = LossConfig(name="triplet", params={"margin": 0.3})
    assert build_base_loss(config, 10, 8).loss.margin == 0.3
