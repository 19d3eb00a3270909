"""Validation of notebook parameters, shared by every notebook.

Each notebook has one cell tagged ``parameters`` holding plain assignments
(papermill injects overrides right after it). The next cell declares a frozen
dataclass with one typed field per parameter and calls::

    P = validate_parameters(Params, globals())

An unknown name, a missing name or a value of the wrong type stops the run
with one message that lists the allowed parameters and their types.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

__all__ = ["ParameterError", "describe_parameters", "validate_parameters"]

T = TypeVar("T")

# Names IPython puts in a fresh namespace that are not parameters.
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


class ParameterError(ValueError):
    """Raised when notebook parameters are unknown, missing or of the wrong type."""


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def describe_parameters(spec: type) -> str:
    """One line per field of ``spec``: ``name: type``."""
    hints = typing.get_type_hints(spec)
    return "\n".join(f"  {f.name}: {_type_name(hints[f.name])}" for f in dataclasses.fields(spec))


def _check(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, coerced value) for ``value`` against the annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return True, value
    if origin is Literal:
        return value in get_args(tp), value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            ok, coerced = _check(value, arg)
            if ok:
                return True, coerced
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False, value
            pairs = list(zip(value, args, strict=True))
        else:
            pairs = [(v, args[0] if args else Any) for v in value]
        checked = [_check(v, a) for v, a in pairs]
        if not all(ok for ok, _ in checked):
            return False, value
        items = [c for _, c in checked]
        return True, (tuple(items) if origin is tuple else items)
    if origin is dict:
        if not isinstance(value, Mapping):
            return False, value
        kt, vt = get_args(tp) or (Any, Any)
        out = {}
        for k, v in value.items():
            ok_k, ck = _check(k, kt)
            ok_v, cv = _check(v, vt)
            if not (ok_k and ok_v):
                return False, value
            out[ck] = cv
        return True, out
    if isinstance(tp, type):
        return isinstance(value, tp), value
    raise TypeError(f"unsupported parameter annotation {tp!r}")


_PARAMETER_TYPES = (bool, int, float, str, list, tuple, dict, type(None))


def _user_names(namespace: Mapping[str, Any]) -> set[str]:
    """Public names holding parameter-like values (not IPython's, not private).

    Only plain values (numbers, strings, lists, dicts, None) can be papermill
    parameters, so modules, functions, classes, arrays and data frames that
    later cells define do not count when a cell is re-run interactively.
    """
    hidden: set[str] = set()
    try:  # inside IPython, names present at kernel start are recorded here
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and namespace is shell.user_ns:
            hidden = set(shell.user_ns_hidden)
    except ImportError:  # pragma: no cover - IPython is a dependency
        pass
    names = set()
    for name, value in namespace.items():
        if name.startswith("_") or name in hidden or name in _IPYTHON_NAMES:
            continue
        if isinstance(value, _PARAMETER_TYPES):
            names.add(name)
    return names


def validate_parameters(spec: type[T], namespace: Mapping[str, Any]) -> T:
    """Check a notebook's parameters against ``spec`` and return them as an instance.

    Parameters
    ----------
    spec : dataclass type
        One field per parameter, each with a type annotation (``int``, ``float``,
        ``str``, ``bool``, ``list[...]``, ``tuple[...]``, ``dict[...]``,
        ``Literal[...]``, ``X | None``). ``float`` fields accept ints.
    namespace : mapping
        Usually ``globals()`` of the notebook, evaluated right after the
        parameters cell (and papermill's injected cell). Every public,
        non-callable name in it must be a field of ``spec``.

    Returns
    -------
    instance of ``spec``

    Raises
    ------
    ParameterError
        Listing every unknown, missing or mistyped parameter, followed by the
        allowed parameters and their types.
    """
    if not dataclasses.is_dataclass(spec):
        raise TypeError(f"{spec!r} is not a dataclass")
    hints = typing.get_type_hints(spec)
    fields = {f.name for f in dataclasses.fields(spec)}
    problems: list[str] = []
    unknown = sorted(_user_names(namespace) - fields)
    if unknown:
        problems.append("unknown parameter(s): " + ", ".join(unknown))
    values: dict[str, Any] = {}
    for name in sorted(fields):
        if name not in namespace:
            problems.append(f"missing parameter: {name}")
            continue
        ok, coerced = _check(namespace[name], hints[name])
        if not ok:
            problems.append(
                f"parameter {name!r} must be {_type_name(hints[name])}, "
                f"got {namespace[name]!r} ({type(namespace[name]).__name__})"
            )
        values[name] = coerced
    if problems:
        raise ParameterError(
            "Invalid notebook parameters: "
            + "; ".join(problems)
            + f".\nAllowed parameters of {spec.__name__}:\n"
            + describe_parameters(spec)
        )
    return spec(**values)
