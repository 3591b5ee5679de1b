"""Base DML losses from pytorch-metric-learning, chosen by name, with their miners.

Proxy-based losses (ProxyAnchor, ProxyNCA, normalised softmax) own parameters (one proxy
or weight vector per training class): the engine gives those to the optimiser, at
``loss.proxy_lr_multiplier`` times the backbone's learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pytorch_metric_learning import losses, miners
from torch import nn

from tune_lsd.config import LossConfig
from tune_lsd.errors import TuneLsdError

# name -> (loss class, its tunable keyword arguments, the miner used by `miner: auto`)
BASE_LOSSES: dict[str, tuple[type, tuple[str, ...], str]] = {
    "contrastive": (losses.ContrastiveLoss, ("pos_margin", "neg_margin"), "pair_margin"),
    "triplet": (losses.TripletMarginLoss, ("margin", "swap", "smooth_loss"), "triplet_semihard"),
    "margin": (losses.MarginLoss, ("margin", "nu", "beta", "learn_beta"), "distance_weighted"),
    "multi_similarity": (losses.MultiSimilarityLoss, ("alpha", "beta", "base"), "multi_similarity"),
    "proxy_anchor": (losses.ProxyAnchorLoss, ("margin", "alpha"), "none"),
    "proxy_nca": (losses.ProxyNCALoss, ("softmax_scale",), "none"),
    "normalized_softmax": (losses.NormalizedSoftmaxLoss, ("temperature",), "none"),
}

MINERS = {
    "multi_similarity": lambda: miners.MultiSimilarityMiner(epsilon=0.1),
    "triplet_semihard": lambda: miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
    "distance_weighted": lambda: miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4),
    "pair_margin": lambda: miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8),
}


class LossConfigError(TuneLsdError, ValueError):
    """Unknown loss or loss parameter (message is one line)."""


@dataclass
class BaseLoss:
    """A pytorch-metric-learning loss and its (optional) miner, called as ``loss(emb, labels)``."""

    loss: nn.Module
    miner: nn.Module | None

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, pairs)

    def parameters(self) -> list[nn.Parameter]:
        """Learnable loss parameters (proxies, class weights, margin's beta)."""
        return list(self.loss.parameters())


def build_base_loss(config: LossConfig, num_classes: int, embedding_dim: int) -> BaseLoss:
    """Instantiate ``config.name`` with ``config.params``; bad names/params fail with one line."""
    if config.name not in BASE_LOSSES:
        raise LossConfigError(f"unknown loss {config.name!r}; choose one of {', '.join(BASE_LOSSES)}")
    loss_class, tunable, default_miner = BASE_LOSSES[config.name]
    unknown = sorted(set(config.params) - set(tunable))
    if unknown:
        raise LossConfigError(
            f"loss.params.{unknown[0]} is not a parameter of {config.name}; allowed: {', '.join(tunable)}"
        )
    kwargs: dict[str, Any] = dict(config.params)
    if config.name in ("proxy_anchor", "proxy_nca", "normalized_softmax"):
        kwargs.update(num_classes=num_classes, embedding_size=embedding_dim)
    elif config.name == "margin" and kwargs.get("learn_beta"):
        kwargs.update(num_classes=num_classes)  # one learnable beta per class
    miner_name = default_miner if config.miner == "auto" else config.miner
    miner = MINERS[miner_name]() if miner_name != "none" else None
    return BaseLoss(loss=loss_class(**kwargs), miner=miner)
