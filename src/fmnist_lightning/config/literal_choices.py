"""The values a parameter annotated with ``Literal[...]`` takes, so a config's value can be checked before its
callable is built (``wandb.init``'s ``mode``, say, which otherwise fails only when the logger first starts).

An annotation arrives either as an object (a module imported without ``from __future__ import annotations``) or
as its source text (read with ``ast`` by ``config.signatures``, or postponed by that import); both are read here.
Only an annotation made of ``Literal[...]`` and ``None`` alone settles anything: one that also admits a ``str``
or a ``bool`` takes values this module cannot list, and is left alone.
"""

from __future__ import annotations

import ast
import inspect
import types
import typing
from typing import Any


def literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values ``annotation`` allows, when it is a union of ``Literal[...]`` and ``None`` only; else None."""
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        try:
            expr = ast.parse(annotation, mode="eval").body
        except SyntaxError:
            return None
        return _from_source(expr)
    return _from_object(annotation)


def _from_object(annotation: Any) -> tuple[Any, ...] | None:
    if annotation is None or annotation is type(None):
        return (None,)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _joined([_from_object(arg) for arg in typing.get_args(annotation)])
    return None


def _from_source(expr: ast.expr) -> tuple[Any, ...] | None:
    if isinstance(expr, ast.Constant) and expr.value is None:
        return (None,)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
        return _joined([_from_source(expr.left), _from_source(expr.right)])
    if not isinstance(expr, ast.Subscript):
        return None
    name = _last_name(expr.value)
    args = list(expr.slice.elts) if isinstance(expr.slice, ast.Tuple) else [expr.slice]
    if name == "Literal":
        if not all(isinstance(arg, ast.Constant) for arg in args):
            return None  # an enum member or a name: only importing tells its value
        return tuple(arg.value for arg in args if isinstance(arg, ast.Constant))
    if name == "Optional":
        return _joined([_from_source(args[0]), (None,)])
    if name == "Union":
        return _joined([_from_source(arg) for arg in args])
    return None


def _joined(parts: list[tuple[Any, ...] | None]) -> tuple[Any, ...] | None:
    """A union's choices: unknown when any member is not a Literal or None."""
    if any(part is None for part in parts):
        return None
    return tuple(dict.fromkeys(value for part in parts if part is not None for value in part))


def _last_name(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    return expr.attr if isinstance(expr, ast.Attribute) else None
