"""The model registry: backbones selected by name (``model.name``), built by ``create_model``.

A new backbone is one file in this package that decorates its class with
``@register_model("name")`` plus one YAML in ``conf/model/``; the package's modules are
discovered the first time a model is listed or created, so nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

import torch
from torch import nn

from fmnist_lightning.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_models() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def create_model(
    name: str,
    *,
    max_params: int | None = None,
    channels_last: bool = False,
    compile: bool = False,
    bn_momentum: float | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build a registered backbone; ``kwargs`` are its own knobs (widths, depth, dropout, ...).
    ``bn_momentum`` sets every BatchNorm layer's running-statistics momentum (PyTorch's default: 0.1)."""
    _discover()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    try:
        model = _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not take these options: {exc}") from exc
    n_params = count_parameters(model)
    if max_params is not None and n_params > max_params:
        raise ConfigError(
            f"model {name!r} has {n_params:,} parameters, over the budget model.max_params={max_params:,}; "
            "shrink its widths or raise the budget"
        )
    if bn_momentum is not None:
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            raise ConfigError(f"model {name!r} has no BatchNorm layer for model.bn_momentum; leave it null")
        if not 0 < bn_momentum <= 1:
            raise ConfigError(f"model.bn_momentum must be in (0, 1], got {bn_momentum}")
        for norm in norms:
            # A short run (or an EMA of the weights) wants statistics that follow the weights quickly.
            norm.momentum = bn_momentum
    if channels_last:
        # Weights in NHWC make the CPU (oneDNN) and tensor-core convs pick their fast kernels;
        # inputs follow the weights' layout, so nothing else has to change.
        model = model.to(memory_format=torch.channels_last)
    if compile:
        # In-place compile keeps state_dict keys unchanged, so checkpoints stay portable.
        model.compile()
    return model


def _discover() -> None:
    """Import every module of the package once, so each backbone's ``@register_model`` has run."""
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{info.name}")
