"""``optim=muon``: torch.optim.Muon on the convolution filters, another optimizer (SGD, AdamW) on the rest;
``optim=lookahead``: pytorch-optimizer's Lookahead around another optimizer.

torch's Muon orthogonalises the update of 2-D parameters only. A convolution filter bank
``[out, in, kh, kw]`` is a matrix too, one row per output filter (as in airbench and Keller
Jordan's Muon): ``FilterMuon`` hands torch's own update a 2-D view of each filter bank, its
gradient and its momentum, so the update is torch's and the weights change in place. Biases,
normalisation layers and the linear head go to ``rest``. ``MuonFilters`` is one optimizer over
both, so Lightning's automatic optimisation, schedulers and checkpoints work as with any other.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer

from fmnist_lightning.errors import ConfigError
from fmnist_lightning.training.precision import BF16_CPU_FLAGS
from fmnist_lightning.training.precision import cpu_flags as read_cpu_flags


def _matrix(t: Tensor) -> Tensor:
    """A 2-D view ``[out, rest]`` of a filter bank, whatever its memory format (columns in memory order:
    the orthogonalisation does not depend on the order of the columns)."""
    if t.is_contiguous():
        return t.view(t.shape[0], -1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).view(t.shape[0], -1)
    raise ValueError(f"a filter bank of shape {tuple(t.shape)} has no 2-D view; make it contiguous")


def _muon_class() -> type[Optimizer]:
    muon = getattr(torch.optim, "Muon", None)
    if muon is None:
        raise ConfigError(f"optim=muon needs torch.optim.Muon (torch >= 2.9); this torch is {torch.__version__}")
    return muon


# The dtype of Muon's orthogonalisation (optim.ns_dtype). torch's computes in bfloat16, which a CPU without bf16
# units (AVX2-only, e.g. AMD Zen 3) emulates in software: there it took 15-84% of a step (docs/benchmarks.md#roofline).
NS_DTYPES = ("bfloat16", "float32", "auto")


def ns_dtype_for(setting: str, device: torch.device, cpu_flags: frozenset[str] | None = None) -> torch.dtype:
    """``auto``: bfloat16 on an accelerator or a CPU with bf16 units, float32 on any other CPU."""
    if setting != "auto":
        return getattr(torch, setting)
    if device.type != "cpu":
        return torch.bfloat16
    flags = read_cpu_flags() if cpu_flags is None else cpu_flags
    return torch.bfloat16 if flags & BF16_CPU_FLAGS else torch.float32


def newton_schulz(
    grad: Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float, dtype: torch.dtype
) -> Tensor:
    """torch.optim.Muon's orthogonalisation (``torch.optim._muon._zeropower_via_newtonschulz``: the same quintic
    iteration, coefficients and normalisation) computed in ``dtype``; torch's always computes in bfloat16.
    ``tests/test_optimizers.py`` checks that in bfloat16 it equals torch's exactly."""
    a, b, c = ns_coefficients
    x = grad.to(dtype)
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def _muon_module() -> Any:
    import torch.optim._muon as muon_module

    if not hasattr(muon_module, "_zeropower_via_newtonschulz"):
        raise ConfigError(
            f"optim.ns_dtype other than bfloat16 needs torch.optim._muon._zeropower_via_newtonschulz, which torch "
            f"{torch.__version__} does not have; use optim.ns_dtype=bfloat16"
        )
    return muon_module


class FilterMuon(Optimizer):
    """torch.optim.Muon's update on filter banks (and matrices), through 2-D views of them; its orthogonalisation
    in ``ns_dtype`` (``bfloat16``: torch's own step, untouched)."""

    def __init__(self, params: Iterable[Any], ns_dtype: str = "bfloat16", **options: Any) -> None:
        if ns_dtype not in NS_DTYPES:
            raise ConfigError(f"unknown optim.ns_dtype={ns_dtype!r}; choose one of: {', '.join(NS_DTYPES)}")
        self.ns_dtype = ns_dtype
        if ns_dtype != "bfloat16":
            _muon_module()  # refused now, not at the first step
        muon = _muon_class()
        defaults = {
            name: p.default
            for name, p in inspect.signature(muon.__init__).parameters.items()
            if name not in ("self", "params")
        }
        defaults.update(options)
        # Optimizer's own constructor: torch's Muon refuses anything but 2-D parameters before step() is reached.
        super().__init__(params, defaults)
        self._muon = muon

    def _init_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], bufs: list[Tensor]) -> bool:
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(_matrix(p))
            grad = p.grad if p.grad.stride() == p.stride() else p.grad.contiguous(memory_format=_format(p))
            grads.append(_matrix(grad))
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(params[-1])
            bufs.append(state["momentum_buffer"])
        return False

    def _resolved_ns_dtype(self) -> torch.dtype:
        """``ns_dtype`` for the parameters' device, resolved once per device (``auto`` reads /proc/cpuinfo)."""
        if self.ns_dtype == "bfloat16":
            return torch.bfloat16  # torch's own step: nothing to resolve
        params = [p for g in self.param_groups for p in g["params"]]
        if not params:
            return torch.bfloat16
        resolved: dict[torch.device, torch.dtype] = self.__dict__.setdefault("_ns_dtypes", {})
        device = params[0].device
        if device not in resolved:
            resolved[device] = ns_dtype_for(self.ns_dtype, device)
        return resolved[device]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        # torch's step, with this class's _init_group (2-D views) in place of its own.
        dtype = self._resolved_ns_dtype()
        if dtype == torch.bfloat16:
            return self._muon.step(self, closure)
        # torch's step looks its orthogonalisation up by name at each call: for this step only, the same
        # iteration in ``dtype`` stands in for it (restored even if the step fails).
        module = _muon_module()
        original = module._zeropower_via_newtonschulz
        module._zeropower_via_newtonschulz = functools.partial(newton_schulz, dtype=dtype)
        try:
            return self._muon.step(self, closure)
        finally:
            module._zeropower_via_newtonschulz = original


def _format(p: Tensor) -> torch.memory_format:
    return torch.channels_last if p.dim() == 4 and not p.is_contiguous() else torch.contiguous_format


def split_filters(params: Iterable[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Parameter groups split in two: filter banks (4-D) and everything else; each group's options kept."""
    groups = list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    filters, rest = [], []
    for group in groups:
        options = {k: v for k, v in group.items() if k != "params"}
        tensors = [p for p in group["params"] if p.requires_grad]
        banks = [p for p in tensors if p.dim() == 4]
        others = [p for p in tensors if p.dim() != 4]
        if banks:
            # Its own name: the learning-rate monitor refuses two groups of one name.
            named = {"name": f"muon/{options['name']}"} if "name" in options else {}
            filters.append({**options, **named, "params": banks})
        if others:
            rest.append({**options, "params": others})
    return filters, rest


class _PartStates(MutableMapping):
    """The parts' states as one mapping; a write goes to the part that owns the parameter (Lightning moves
    each state to the device by writing it back)."""

    def __init__(self, parts: list[Optimizer]) -> None:
        self.parts = parts

    def _part(self, param: Tensor) -> Optimizer:
        for part in self.parts:
            if any(q is param for group in part.param_groups for q in group["params"]):
                return part
        raise KeyError("not a parameter of this optimizer")

    def __getitem__(self, param: Tensor) -> Any:
        return self._part(param).state[param]

    def __setitem__(self, param: Tensor, value: Any) -> None:
        self._part(param).state[param] = value

    def __delitem__(self, param: Tensor) -> None:
        del self._part(param).state[param]

    def __iter__(self) -> Iterator[Tensor]:
        for part in self.parts:
            yield from part.state

    def __len__(self) -> int:
        return sum(len(part.state) for part in self.parts)


class MuonFilters(Optimizer):
    """One optimizer over two: ``FilterMuon`` on the convolution filters, ``rest`` on every other parameter.

    ``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``ns_steps`` and ``adjust_lr_fn`` are Muon's; ``ns_dtype``
    the dtype of its orthogonalisation (``FilterMuon``);
    ``rest`` is an optimizer factory with its own learning rate (``optim.rest.lr``). A group option
    from ``module.param_groups`` (its weight decay, its ``lr_scale``) holds in both."""

    def __init__(
        self,
        params: Iterable[Any],
        rest: Callable[..., Optimizer],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        # Written out (torch's own annotation is str): FilterMuon skips torch.optim.Muon's check of the name, and
        # torch applies an unknown one as no scaling at all, so the config check must hold the list.
        adjust_lr_fn: Literal["original", "match_rms_adamw", "spectral_unclamped"] | None = "original",
        ns_dtype: str = "bfloat16",
    ) -> None:
        filter_groups, rest_groups = split_filters(params)
        if not filter_groups:
            raise ConfigError("optim=muon: the model has no convolution filters; use optim=sgd or optim=adamw")
        self.filters = FilterMuon(
            filter_groups,
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            ns_dtype=ns_dtype,
        )
        self.rest = rest(params=rest_groups) if rest_groups else None
        parts = [self.filters] + ([self.rest] if self.rest is not None else [])
        # Optimizer's constructor sets up its hooks; its groups and state are then the parts' own, so
        # schedulers (which set group["lr"]) and Lightning (which moves the state) reach the real ones.
        super().__init__(
            [{"params": [p for part in parts for g in part.param_groups for p in g["params"]]}],
            {"lr": lr, "momentum": momentum},
        )
        self.parts = parts
        self.param_groups = [g for part in parts for g in part.param_groups]

    @property
    def state(self) -> Any:
        return _PartStates(getattr(self, "parts", []))

    @state.setter
    def state(self, value: Any) -> None:
        pass  # Optimizer's constructor sets an empty one; the parts hold the real state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("parts")
        if saved is None or len(saved) != len(self.parts):
            raise ValueError("this optimizer state is not from optim=muon with the same model")
        for part, state in zip(self.parts, saved, strict=True):
            part.load_state_dict(state)
        # Optimizer.load_state_dict gives each part new group dicts: schedulers must reach those.
        self.param_groups = [g for part in self.parts for g in part.param_groups]


def lookahead(
    params: Iterable[Any],
    base: Callable[..., Optimizer],
    lr: float,
    weight_decay: float = 0.0,
    k: int = 5,
    alpha: float = 0.5,
) -> Optimizer:
    """Lookahead (Zhang et al. 2019; pytorch-optimizer's, a maintained implementation) around ``base``: every
    ``k`` steps the weights move ``alpha`` of the way from their slow copy to the fast ones, and the fast
    ones restart there. ``base`` carries its own options (momentum, betas, ...); ``lr`` and ``weight_decay``,
    which every torch optimizer takes, are given at the top level so that schedules, checks and searches read
    ``optim.lr`` and ``optim.weight_decay`` as for any optimizer."""
    from pytorch_optimizer import Lookahead

    return Lookahead(base(params=params, lr=lr, weight_decay=weight_decay), k=k, alpha=alpha)
