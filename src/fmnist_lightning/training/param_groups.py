"""The optimizer's parameter groups (``module.param_groups``): by what a parameter is, never by backbone.

Two knobs from the speedrun literature (airbench), off unless set:

- ``norm_bias_weight_decay``: the weight decay of normalisation layers' scales and of every bias
  (usually 0: decaying a BatchNorm scale or a bias regularises nothing the next layer cannot undo);
  ``null`` keeps the optimizer's own.
- ``norm_bias_lr_scale``: a learning-rate multiplier for normalisation layers' biases (airbench trains
  BatchNorm biases at a much higher rate than the weights).

Every parameter lands in exactly one group; a group carries ``lr_scale`` so that schedulers that set
the learning rate themselves (OneCycleLR's ``max_lr``) keep the ratio.
"""

from __future__ import annotations

from typing import Any

from torch import nn

# Normalisation layers whose affine parameters are scales and shifts, not features.
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def split_parameters(module: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by kind: ``weights`` (convolution and linear weights: decayed as usual),
    ``norm_scales_and_biases`` (normalisation scales and every other bias), ``norm_biases``."""
    kinds: dict[str, list[nn.Parameter]] = {"weights": [], "norm_scales_and_biases": [], "norm_biases": []}
    seen: set[int] = set()
    for layer in module.modules():
        for name, param in layer.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))  # a shared (tied) parameter belongs to its first layer only
            if isinstance(layer, NORM_LAYERS) and name == "bias":
                kinds["norm_biases"].append(param)
            elif isinstance(layer, NORM_LAYERS) or name == "bias":
                kinds["norm_scales_and_biases"].append(param)
            else:
                kinds["weights"].append(param)
    return kinds


def splits_groups(norm_bias_weight_decay: float | None = None, norm_bias_lr_scale: float = 1.0) -> bool:
    """Whether the knobs ask for groups at all."""
    return norm_bias_weight_decay is not None or norm_bias_lr_scale != 1.0


def param_groups(
    module: nn.Module, norm_bias_weight_decay: float | None = None, norm_bias_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """The groups to hand the optimizer; with both knobs at their defaults, one group of everything."""
    if norm_bias_lr_scale <= 0:
        raise ValueError(f"module.param_groups.norm_bias_lr_scale must be > 0, got {norm_bias_lr_scale}")
    kinds = split_parameters(module)
    special: dict[str, Any] = {} if norm_bias_weight_decay is None else {"weight_decay": norm_bias_weight_decay}
    groups = [
        {"params": kinds["weights"], "lr_scale": 1.0, "name": "weights"},
        {"params": kinds["norm_scales_and_biases"], "lr_scale": 1.0, "name": "norm_scales_and_biases", **special},
        {"params": kinds["norm_biases"], "lr_scale": norm_bias_lr_scale, "name": "norm_biases", **special},
    ]
    return [group for group in groups if group["params"]]


def apply_lr_scales(optimizer: Any) -> None:
    """Multiply each group's learning rate by its ``lr_scale`` (once, when the optimizer is made)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)


def group_max_lr(max_lr: float | list[float], optimizer: Any, base_lr: float | None) -> float | list[float]:
    """OneCycleLR's ``max_lr``: where the groups' rates differ (an ``lr_scale``, optim=muon's two optimizers),
    one per group, keeping their ratios to the optimizer's ``lr`` (``base_lr``); else as given."""
    if isinstance(max_lr, (list, tuple)) or not base_lr:
        return max_lr
    rates = [group["lr"] for group in optimizer.param_groups]
    if all(rate == base_lr for rate in rates):
        return max_lr
    return [max_lr * rate / base_lr for rate in rates]
