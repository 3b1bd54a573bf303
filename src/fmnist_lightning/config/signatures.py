"""The signature of a config node's ``_target_``, found without importing it where that is possible.

Checking a config's keys must answer in a second or two, before the run imports anything heavy: on the
project's 2-core machine ``import lightning`` alone takes about 6 s and ``import torch`` 2 s. So a target
whose module is not imported yet has its signature read from its source with ``ast``: the class's (or a
base class's) ``__init__``, or the function, followed through ``from ... import`` re-exports as Python
would. What the source does not settle (a dataclass, a metaclass, a base class from a compiled module)
is imported and asked with ``inspect.signature``, as is every target whose module is already imported.
tests/test_config_checks.py holds both answers equal for every target in ``conf/``.

A callable whose ``**kwargs`` go on to another callable (``models.registry.create_model`` passes them to
the backbone named by ``name``) says so with ``forwards_kwargs``: the check then sees the keys the other
callable takes.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
CONFIG_SIGNATURE = "__config_signature__"
OWN_PACKAGES = ("fmnist_lightning.", "hydra_plugins.")
_KINDS = {
    "posonlyargs": inspect.Parameter.POSITIONAL_ONLY,
    "args": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "kwonlyargs": inspect.Parameter.KEYWORD_ONLY,
}


def forwards_kwargs(signature_of: Callable[[Mapping[str, Any]], inspect.Signature]) -> Callable[[F], F]:
    """Mark a callable whose ``**kwargs`` go to another: ``signature_of(node)`` is the signature the config
    node is checked against (the callable's own parameters and the other's)."""

    def mark(func: F) -> F:
        setattr(func, CONFIG_SIGNATURE, signature_of)
        return func

    return mark


# Third-party callables whose ``**kwargs`` go on to another, as their documentation says: where each is
# defined, the callable its keywords reach, and the names it passes that callable itself (a second one fails).
FORWARDED_KWARGS: dict[str, tuple[str, frozenset[str]]] = {
    "lightning.pytorch.loggers.tensorboard.TensorBoardLogger": (
        "torch.utils.tensorboard.writer.SummaryWriter",
        frozenset({"log_dir"}),
    ),
    "lightning.pytorch.loggers.wandb.WandbLogger": ("wandb.sdk.wandb_init.init", frozenset()),
}


@dataclass(frozen=True)
class Found:
    """What a ``_target_`` names: where it is defined (``module.name``, past any re-export) and its signature
    (None when it was not asked for, or Python cannot tell one)."""

    defined_at: str
    signature: inspect.Signature | None


def locate(path: str) -> Any:
    """The object a dotted ``_target_`` names, imported. A name that does not exist is one LookupError line,
    with the nearest name its module has (Hydra's own lookup logs and raises several lines)."""
    parts = path.split(".")
    obj: Any = None
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(name)
            break
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(f"{exc.name}.")):
                raise  # a module that exists failed to import one of its own dependencies
    if obj is None:
        raise LookupError(f"there is no module {parts[0]}")
    for attr in parts[cut:]:
        if not hasattr(obj, attr):
            owner = getattr(obj, "__name__", "?")
            nearest = difflib.get_close_matches(attr, [n for n in dir(obj) if not n.startswith("_")], n=1)
            hint = f"; did you mean {owner}.{nearest[0]}?" if nearest else ""
            raise LookupError(f"{owner} has no {attr}{hint}")
        obj = getattr(obj, attr)
    return obj


def lookup(target: str, node: Mapping[str, Any], signature: bool = True) -> Found:
    """Where ``target`` is defined and (with ``signature``) the parameters it takes for ``node``."""
    obj = _imported(target)
    if obj is None:
        found = _resolve_target(target)
        if found is not None:
            where, definition = found
            defined_at = f"{where}.{definition.name}"
            if not signature:
                return Found(defined_at, None)
            read = _definition_signature(where, definition)
            # **kwargs of the project's own callables may be forwarded (forwards_kwargs): only importing tells.
            if read is not None and not (takes_any_keyword(read) and target.startswith(OWN_PACKAGES)):
                return Found(defined_at, read)
        obj = locate(target)
    defined_at = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    forwarded = getattr(obj, CONFIG_SIGNATURE, None)
    if not signature:
        return Found(defined_at, None)
    if forwarded is not None:
        return Found(defined_at, forwarded(node))
    try:
        return Found(defined_at, inspect.signature(obj))
    except (TypeError, ValueError):
        return Found(defined_at, None)


def with_forwarded(found: Found) -> inspect.Signature | None:
    """``found``'s signature with the keywords its ``**kwargs`` reach (FORWARDED_KWARGS) in their place;
    unchanged for a callable not in that table. Ask it only for a key the callable does not name itself:
    finding the other callable may import its package (wandb: half a second)."""
    signature = found.signature
    if signature is None or found.defined_at not in FORWARDED_KWARGS:
        return signature
    target, passed = FORWARDED_KWARGS[found.defined_at]
    try:
        other = lookup(target, {}).signature
    except (ImportError, LookupError):  # the other package is not installed: the keys cannot be checked here
        return signature
    if other is None:
        return signature
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in own} | passed
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    more = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=inspect.Parameter.empty)
        for p in other.parameters.values()
        if p.kind in keywords and p.name not in taken
    ]
    rest = [p for p in other.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    return signature.replace(parameters=[*own, *more, *rest])


def takes_any_keyword(signature: inspect.Signature) -> bool:
    """Whether ``signature`` has a ``**kwargs`` (then it takes any key)."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def _imported(target: str) -> Any:
    """The target itself when its module is imported already (then asking is free), else None."""
    module, _, name = target.rpartition(".")
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


# --- reading a signature from source -------------------------------------------------------------------


def _module_file(module: str) -> Path | None:
    """The source file of a dotted module name, found without importing any package on the way."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top) if top not in sys.modules else getattr(sys.modules[top], "__spec__", None)
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for root in roots:
        base = Path(root).joinpath(*rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


@cache
def _parsed(module: str) -> ast.Module | None:
    path = _module_file(module)
    if path is None:
        return None
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _is_package(module: str) -> bool:
    path = _module_file(module)
    return path is not None and path.name == "__init__.py"


def source_signature(target: str) -> inspect.Signature | None:
    """``target``'s signature read from its source (see the module docstring); None where only importing tells."""
    found = _resolve_target(target)
    return _definition_signature(*found) if found is not None else None


def _resolve_target(target: str) -> tuple[str, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef] | None:
    """The module and the ``def``/``class`` that ``target`` names, read from source; None if unsure."""
    module, _, name = target.rpartition(".")
    found = _resolve(module, name, 0)
    if found is None or isinstance(found, str):
        return None
    where, node = found
    return (where, node) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else None


def _definition_signature(where: str, node: ast.AST, depth: int = 0) -> inspect.Signature | None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return _from_arguments(node.args)
    return _class_signature(where, node, depth) if isinstance(node, ast.ClassDef) else None


Definition = tuple[str, ast.AST]


def _resolve(module: str, dotted: str, depth: int) -> Definition | str | None:
    """What ``dotted`` names inside ``module``: a definition (its module and ``def``/``class`` node), a
    module (its dotted name), or None when only importing could tell (a computed binding)."""
    head, _, rest = dotted.partition(".")
    found = _lookup(module, head, depth)
    if not rest or found is None:
        return found
    if isinstance(found, str):
        return _resolve(found, rest, depth + 1)
    return None  # an attribute of a class or function


def _lookup(module: str, name: str, depth: int) -> Definition | str | None:
    tree = _parsed(module)
    if tree is None or depth > 12:
        return None
    stars = []
    for stmt in reversed(tree.body):  # the last binding of a name wins, as at import time
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and stmt.name == name:
            return module, stmt
        if isinstance(stmt, ast.ImportFrom):
            source = _absolute(module, stmt)
            for alias in stmt.names:
                if alias.name == "*" and source:
                    stars.append(source)
                elif (alias.asname or alias.name) == name and source:
                    submodule = f"{source}.{alias.name}"
                    return submodule if _module_file(submodule) else _lookup(source, alias.name, depth + 1)
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname == name:
                    return alias.name
                if alias.asname is None and alias.name.partition(".")[0] == name:
                    return name
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.If, ast.Try, ast.With)) and _binds(
            stmt, name
        ):
            return None  # a computed or conditional binding: only importing tells
    for source in stars:
        found = _lookup(source, name, depth + 1)
        if found is not None:
            return found
    return None


def _binds(stmt: ast.stmt, name: str) -> bool:
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            (a.asname or a.name.partition(".")[0]) == name for a in node.names
        ):
            return True
    return False


def _absolute(module: str, stmt: ast.ImportFrom) -> str | None:
    if not stmt.level:
        return stmt.module
    package = module if _is_package(module) else module.rpartition(".")[0]
    parts = package.split(".")
    if stmt.level - 1 >= len(parts):
        return None
    anchor = ".".join(parts[: len(parts) - (stmt.level - 1)])
    return f"{anchor}.{stmt.module}" if stmt.module else anchor


def _class_signature(module: str, cls: ast.ClassDef, depth: int) -> inspect.Signature | None:
    if cls.keywords or any(_decorator_name(d) == "dataclass" for d in cls.decorator_list):
        return None  # a metaclass or a dataclass makes its own __init__
    for stmt in cls.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "__new__":
            return None
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "__init__":
            signature = _from_arguments(stmt.args)
            return signature.replace(parameters=list(signature.parameters.values())[1:])  # self
    bases = [b.value if isinstance(b, ast.Subscript) else b for b in cls.bases]
    names = [_dotted(b) for b in bases]
    names = [n for n in names if n not in ("object", "Generic", "Protocol", "ABC", "abc.ABC")]
    if not names:
        return inspect.Signature() if all(_dotted(b) for b in bases) else None
    if len(names) > 1 or names[0] is None:
        return None  # several bases: the MRO may reach an __init__ of a later one
    found = _resolve(module, names[0], depth + 1)
    if found is None or isinstance(found, str) or not isinstance(found[1], ast.ClassDef):
        return None
    loaded = getattr(sys.modules.get(found[0]), found[1].name, None)
    if isinstance(loaded, type):
        # A base from a module already imported (enum.Enum, say): asking it costs nothing and knows its metaclass.
        try:
            return inspect.signature(loaded)
        except (TypeError, ValueError):
            return None
    return _class_signature(found[0], found[1], depth + 1)


def _dotted(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        head = _dotted(expr.value)
        return f"{head}.{expr.attr}" if head else None
    return None


def _decorator_name(expr: ast.expr) -> str | None:
    target = expr.func if isinstance(expr, ast.Call) else expr
    dotted = _dotted(target)
    return dotted.rpartition(".")[2] if dotted else None


def _from_arguments(args: ast.arguments) -> inspect.Signature:
    """Parameter names, kinds and annotations as source text (defaults are not needed to check keys)."""
    params = []
    for field, kind in _KINDS.items():
        params += [inspect.Parameter(a.arg, kind, annotation=_annotation(a)) for a in getattr(args, field)]
        if field == "args" and args.vararg is not None:
            params.append(inspect.Parameter(args.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
    if args.kwarg is not None:
        params.append(inspect.Parameter(args.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def _annotation(arg: ast.arg) -> Any:
    return ast.unparse(arg.annotation) if arg.annotation is not None else inspect.Parameter.empty
