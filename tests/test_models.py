"""tune_lsd/models.py: timm backbones, unit-length embeddings, frozen BN, offline ImageNet weights."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from tune_lsd.config import ModelConfig
from tune_lsd.models import ModelError, build_model, efficientnet_lite0_weights

ESPRESSO = 967  # ImageNet class index


def test_efficientnet_lite0_weights_classify_a_real_photo():
    """The mapped package weights make timm's model recognise scikit-image's coffee photo."""
    from skimage.data import coffee

    model = timm.create_model("efficientnet_lite0", num_classes=1000)
    model.load_state_dict(efficientnet_lite0_weights(model))
    model.eval()
    photo = np.asarray(Image.fromarray(coffee()).resize((224, 224), Image.Resampling.BILINEAR)).copy()
    x = (torch.from_numpy(photo).permute(2, 0, 1)[None].float() - 127.5) / 128.0
    with torch.no_grad():
        probabilities = model(x).softmax(-1)[0]
    assert probabilities.argmax().item() == ESPRESSO
    assert probabilities[ESPRESSO] > 0.5


def test_pretrained_embedding_model_for_grayscale_input():
    model = build_model(
        ModelConfig(backbone="efficientnet_lite0", pretrained="efficientnet_lite0", embedding_dim=32), in_chans=1
    )
    reference = timm.create_model("efficientnet_lite0", num_classes=0)
    reference.load_state_dict(efficientnet_lite0_weights(reference))
    # the grayscale stem is the RGB stem summed over colours (timm's adapt_input_conv)
    assert torch.allclose(model.backbone.conv_stem.weight, reference.conv_stem.weight.sum(1, keepdim=True), atol=1e-6)
    out = model(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_frozen_batchnorm_keeps_running_stats():
    model = build_model(ModelConfig(backbone="resnet10t", freeze_bn=True, embedding_dim=8), in_chans=1).train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(4, 1, 32, 32) * 3 + 1)
    assert not bn.training and torch.equal(bn.running_mean, before)
    unfrozen = build_model(ModelConfig(backbone="resnet10t", embedding_dim=8), in_chans=1).train()
    bn = next(m for m in unfrozen.modules() if isinstance(m, torch.nn.BatchNorm2d))
    unfrozen(torch.randn(4, 1, 32, 32) * 3 + 1)
    assert not torch.equal(bn.running_mean, before)


def test_small_input_stem_drops_maxpool():
    model = build_model(ModelConfig(backbone="resnet10t"), in_chans=1)
    assert isinstance(model.backbone.maxpool, torch.nn.Identity)


def test_weights_file_round_trip(tmp_path):
    source = build_model(ModelConfig(backbone="resnet10t", embedding_dim=8), in_chans=1)
    torch.save(source.backbone.state_dict(), tmp_path / "w.pt")
    loaded = build_model(
        ModelConfig(backbone="resnet10t", pretrained="file", weights_path=str(tmp_path / "w.pt")), in_chans=1
    )
    for name, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[name], value)


@pytest.mark.parametrize(
    "config, match",
    [
        (ModelConfig(backbone="no_such_net"), "no_such_net"),
        (ModelConfig(backbone="resnet10t", pretrained="efficientnet_lite0"), "needs model.backbone"),
        (ModelConfig(pretrained="file", weights_path="/nope.pt"), "not found"),
    ],
)
def test_model_errors_are_clear(config, match):
    with pytest.raises(ModelError, match=match):
        build_model(config, in_chans=1)
