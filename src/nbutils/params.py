"""Notebook parameters: declared once, in the cell tagged ``parameters``.

The ``parameters`` cell is the one declaration of a notebook's parameters: one
annotated assignment per parameter, ``name: type = default  # help``::

    from typing import Literal

    seed: int = 0  # random seed of the run
    reg: Literal["affine", "syn"] = "affine"  # registration of the main batch
    max_minutes: float | None = 5.0  # wall-clock cap; None for none

A parameter typed with a dataclass is a *settings group* shared by several
notebooks (``classifier: ClassifierSettings = {}``): its value is a mapping of
overrides, checked field by field against the dataclass, and ``P.classifier``
is the dataclass instance. papermill injects overrides right after the cell as
plain assignments. The next cell
calls ``P = validate_parameters(globals())``, which derives a frozen dataclass
from the annotations the declaration left in the namespace and checks every
value against it. The runner reads the same cell without a kernel
(:func:`read_parameters_cell`) to check profiles before anything runs. An
unknown name, a missing name or a value of the wrong type stops the run with one
message that lists the allowed parameters and their types.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Optional, Union, get_args, get_origin

__all__ = [
    "Declared",
    "ParameterError",
    "check_parameters",
    "describe_parameters",
    "parameter_spec",
    "read_parameters_cell",
    "spec_from_cell",
    "validate_parameters",
]

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


def parameter_spec(annotations: Mapping[str, Any], name: str = "Params") -> type:
    """A frozen dataclass with one typed field per declared parameter.

    Parameters
    ----------
    annotations : mapping
        Parameter name to type, in declaration order (the ``__annotations__``
        of a notebook namespace, or :func:`read_parameters_cell`'s types).
    name : str
        Name of the generated class.
    """
    public = [(k, tp) for k, tp in annotations.items() if not k.startswith("_")]
    if not public:
        raise ParameterError(
            "the parameters cell declares no typed parameters; write one "
            "'name: type = default  # help' line per parameter"
        )
    return dataclasses.make_dataclass(name, public, frozen=True)


def check_parameters(spec: type, values: Mapping[str, Any], require_all: bool = True) -> dict[str, Any]:
    """Check ``values`` against ``spec``; return them coerced (ints given for floats become floats).

    Parameters
    ----------
    spec : dataclass type
        From :func:`parameter_spec`.
    values : mapping
        Parameter names and values; names that are not plain values (modules,
        functions, arrays) are ignored, see :func:`validate_parameters`.
    require_all : bool
        Report declared parameters missing from ``values`` (True inside a
        notebook; False for a profile, which only overrides).

    Raises
    ------
    ParameterError
        Listing every unknown, missing or mistyped parameter, followed by the
        allowed parameters and their types.
    """
    hints = typing.get_type_hints(spec)
    fields = [f.name for f in dataclasses.fields(spec)]
    problems: list[str] = []
    unknown = sorted(_user_names(values) - set(fields))
    if unknown:
        problems.append("unknown parameter(s): " + ", ".join(unknown))
    coerced_values: dict[str, Any] = {}
    for name in sorted(fields):
        if name not in values:
            if require_all:
                problems.append(f"missing parameter: {name}")
            continue
        if _is_group(hints[name]) and isinstance(values[name], Mapping | hints[name]):
            try:
                coerced_values[name] = _group(hints[name], values[name])
            except ParameterError as exc:
                problems.append(f"parameter {name!r} ({hints[name].__name__}): {exc}")
            continue
        ok, coerced = _check(values[name], hints[name])
        if not ok:
            problems.append(
                f"parameter {name!r} must be {_type_name(hints[name])}, "
                f"got {values[name]!r} ({type(values[name]).__name__})"
            )
        coerced_values[name] = coerced
    if problems:
        raise ParameterError(
            "Invalid notebook parameters: "
            + "; ".join(problems)
            + f".\nAllowed parameters of {spec.__name__}:\n"
            + describe_parameters(spec)
        )
    return coerced_values


def _is_group(tp: Any) -> bool:
    """A parameter whose type is a dataclass groups settings that several notebooks share."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _group(tp: type, value: Any) -> Any:
    """A settings group from its overrides (a mapping; the dataclass defaults fill the rest)."""
    if isinstance(value, tp):
        return value
    return tp(**check_parameters(tp, dict(value), require_all=False))


def validate_parameters(namespace: Mapping[str, Any]) -> Any:
    """Check a notebook's parameters against its ``parameters`` cell; return them typed.

    Parameters
    ----------
    namespace : mapping
        ``globals()`` of the notebook, evaluated right after the parameters
        cell (and papermill's injected cell). Its ``__annotations__`` are the
        declaration; every public plain value in it must be a declared
        parameter.

    Returns
    -------
    A frozen dataclass instance (class ``Params``), one attribute per parameter.

    Raises
    ------
    ParameterError
        Listing every unknown, missing or mistyped parameter, followed by the
        allowed parameters and their types.
    """
    spec = parameter_spec(namespace.get("__annotations__", {}))
    return spec(**check_parameters(spec, namespace))


@dataclasses.dataclass(frozen=True)
class Declared:
    """One parameter as written in a ``parameters`` cell."""

    name: str
    annotation: str
    default: Any
    help: str


#: Names an annotation in a parameters cell may use besides the builtins.
_ANNOTATION_NAMES = {"Literal": Literal, "Optional": Optional, "Any": Any}


def read_parameters_cell(source: str, where: str = "parameters cell") -> dict[str, Declared]:
    """Read a ``parameters`` cell without running it.

    Parameters
    ----------
    source : str
        The cell's source.
    where : str
        Named in error messages (e.g. the notebook's path).

    Returns
    -------
    dict
        Parameter name to :class:`Declared`, in declaration order.

    Raises
    ------
    ParameterError
        If a statement is neither an import nor an annotated assignment of a
        literal value (``name: type = value``).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(f"{where}: not valid Python ({exc})") from exc
    lines = source.splitlines()
    declared: dict[str, Declared] = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        line = lines[node.lineno - 1].strip()
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value):
            raise ParameterError(
                f"{where}, line {node.lineno}: {line!r} is not a typed declaration "
                "'name: type = default  # help'"
            )
        try:
            default = ast.literal_eval(node.value)
        except ValueError as exc:
            raise ParameterError(f"{where}, line {node.lineno}: the default of {node.target.id!r} "
                                 "must be a literal value") from exc
        comment = lines[node.end_lineno - 1].partition("#")[2].strip() if node.end_lineno else ""
        declared[node.target.id] = Declared(node.target.id, ast.unparse(node.annotation), default, comment)
    return declared


def spec_from_cell(source: str, where: str = "parameters cell") -> type:
    """The dataclass of :func:`parameter_spec` built from a cell's source (no kernel needed).

    The cell's import statements are run first, so an annotation may name an
    imported settings group (a dataclass, e.g.
    :class:`nbutils.classify.settings.ClassifierSettings`).
    """
    declared = read_parameters_cell(source, where)
    namespace = dict(_ANNOTATION_NAMES)
    imports = [node for node in ast.parse(source).body if isinstance(node, ast.Import | ast.ImportFrom)]
    exec(compile(ast.Module(imports, type_ignores=[]), where, "exec"), namespace)  # noqa: S102
    types_ = {}
    for d in declared.values():
        try:
            types_[d.name] = eval(d.annotation, {"__builtins__": __builtins__}, namespace)  # noqa: S307
        except Exception as exc:  # noqa: BLE001 - any failure is a bad declaration
            raise ParameterError(f"{where}: cannot read the type {d.annotation!r} of {d.name!r}") from exc
    return parameter_spec(types_)
