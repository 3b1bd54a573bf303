"""The model registry: backbones selected by name (``model.name``), built by ``create_model``.

A new backbone is one file in this package that decorates its class with
``@register_model("name")`` plus one YAML in ``conf/model/``; the package's modules are
discovered the first time a model is listed or created, so nothing else needs editing.

Nothing here imports torch until a model is built: checking a ``model:`` node's keys
(``config_signature``) reads the backbones' signatures from their source, so a mistyped key answers
before the seconds-long import.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmnist_lightning.config.signatures import forwards_kwargs, source_signature
from fmnist_lightning.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

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


def _registered(name: Any) -> Callable[..., nn.Module]:
    _discover()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


@lru_cache(maxsize=1)
def _registered_in_source() -> dict[str, str]:
    """``name -> dotted class`` for every ``@register_model("name")`` class in this package's source."""
    found = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            for decorator in getattr(node, "decorator_list", []):
                if (
                    isinstance(node, ast.ClassDef)
                    and isinstance(decorator, ast.Call)
                    and getattr(decorator.func, "id", None) == "register_model"
                    and decorator.args
                    and isinstance(decorator.args[0], ast.Constant)
                ):
                    found[str(decorator.args[0].value)] = f"{__package__}.{path.stem}.{node.name}"
    return found


def config_signature(node: Mapping[str, Any]) -> inspect.Signature:
    """What a ``model:`` node may set: ``create_model``'s own arguments and those of the backbone it names."""
    own = [p for p in inspect.signature(create_model).parameters.values() if p.kind is not p.VAR_KEYWORD]
    name = node.get("name")
    dotted = _registered_in_source().get(str(name))
    backbone = (source_signature(dotted) if dotted else None) or inspect.signature(_registered(name))
    names = {p.name for p in own}
    extra = [
        p.replace(kind=p.KEYWORD_ONLY)
        for p in backbone.parameters.values()
        if p.name not in names and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    # A backbone that takes **kwargs takes any key, as the check reads a VAR_KEYWORD parameter.
    anything = [p for p in backbone.parameters.values() if p.kind is p.VAR_KEYWORD][:1]
    return inspect.Signature([*own, *extra, *anything])


@forwards_kwargs(config_signature)
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
    import torch
    from torch import nn

    try:
        model = _registered(name)(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} cannot be built from these options: {exc}") from exc
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
