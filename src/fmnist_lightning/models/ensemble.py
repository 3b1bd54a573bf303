"""A deep ensemble: several networks of one configuration, each from its own random start, trained side by side.

Lakshminarayanan et al. 2017: averaging the class probabilities of independently initialised networks beats one
network of their combined cost once a single network has stopped gaining from more epochs. The members share
each batch (and its augmentation) but nothing else: in training the forward returns every member's logits,
``[members, batch, classes]``, so the loss can be each member's own (``training.classifier`` sums them: each
member's gradient is the one it would get trained alone). In evaluation it returns the log of the members'
averaged probabilities, which every consumer of logits (softmax, argmax, cross-entropy, test-time
augmentation, export) reads as the ensemble's prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from fmnist_lightning.errors import ConfigError
from fmnist_lightning.models.registry import register_model


def average_log_probs(logits: Tensor) -> Tensor:
    """``[members, batch, classes]`` logits -> ``[batch, classes]``: the log of the members' mean probabilities."""
    return logits.log_softmax(dim=-1).logsumexp(dim=0) - math.log(logits.shape[0])


@register_model("ensemble")
class Ensemble(nn.Module):
    """``members`` networks, each built by calling ``member`` (a config node with ``_partial_: true``)."""

    def __init__(self, member: Callable[[], nn.Module], members: int = 3) -> None:
        super().__init__()
        if isinstance(member, nn.Module) or not callable(member):
            raise ConfigError(
                "model.member must build one network per call: add `_partial_: true` to the model.member node"
            )
        if members < 2:
            raise ConfigError(
                f"model.members={members}: an ensemble needs at least 2; for one network, choose its model"
            )
        # Each call draws its own initial weights from the global random state, so the members start apart.
        self.members = nn.ModuleList(member() for _ in range(members))

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.stack([net(x) for net in self.members])
        return logits if self.training else average_log_probs(logits)
