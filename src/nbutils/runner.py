"""Run the suite's notebooks in order with papermill, under a named profile.

A profile is a YAML file beside the notebooks (``notebooks/profiles/<name>.yaml``)
with a ``_common`` section (values given to every notebook that declares the
parameter) and one section per notebook stem (values that notebook must
declare). Command-line overrides (``-p NAME VALUE``) go to every notebook that
declares ``NAME``.

Each notebook's executed copy and an HTML rendering land in ``reports/``; the
notebook itself writes ``reports/metrics/<stem>.json``; the runner writes
``reports/summary.json`` and prints a summary table.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nbutils.io import atomic_path, write_json, write_text
from nbutils.params import ParameterError, check_parameters, read_parameters_cell, spec_from_cell
from nbutils.reporting import build_index, metrics_path

__all__ = [
    "NotebookResult",
    "check_notebook_parameters",
    "discover_notebooks",
    "load_profile",
    "notebook_parameters",
    "parse_override",
    "resolve_notebook",
    "resolve_parameters",
    "run_notebooks",
]

KERNEL_NAME = "nbutils"
COMMON = "_common"


@dataclass
class NotebookResult:
    """Outcome of one notebook run."""

    notebook: str
    status: str  # "ok", "failed" or "skipped"
    seconds: float = 0.0
    executed: str | None = None
    html: str | None = None
    metrics_file: str | None = None
    error: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def discover_notebooks(notebooks_dir: str | os.PathLike = "notebooks") -> list[Path]:
    """The suite's notebooks, ``NN_name.ipynb``, in order."""
    found = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {notebooks_dir}")
    return found


def resolve_notebook(name: str | os.PathLike, notebooks_dir: str | os.PathLike = "notebooks") -> Path:
    """A notebook given by path, or by name in ``notebooks_dir``: ``03``, ``03_deviation_maps`` or its file name."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".ipynb")
    found = sorted(Path(notebooks_dir).glob(f"{stem}*.ipynb")) if stem else []
    exact = [p for p in found if p.stem == stem]
    if exact or len(found) == 1:
        return (exact or found)[0]
    names = [p.stem for p in discover_notebooks(notebooks_dir)] if Path(notebooks_dir).is_dir() else []
    what = f"{len(found)} match" if found else "no match"
    raise FileNotFoundError(f"notebook not found: {name} ({what} in {notebooks_dir}; available: {names})")


def load_profile(profile: str | os.PathLike, notebooks_dir: str | os.PathLike = "notebooks") -> dict:
    """Load a profile by name (``notebooks/profiles/<name>.yaml``) or by path."""
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(notebooks_dir) / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (Path(notebooks_dir) / "profiles").glob("*.yaml"))
        raise FileNotFoundError(f"profile {str(profile)!r} not found at {path}; available: {available}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict | None) for v in data.values()):
        raise ValueError(f"{path}: a profile maps notebook stems (and '_common') to parameter mappings")
    return {k: dict(v or {}) for k, v in data.items()}


def parameters_cell(notebook: str | os.PathLike) -> str:
    """The source of a notebook's one cell tagged ``parameters``."""
    import nbformat

    cells = [c for c in nbformat.read(notebook, as_version=4).cells
             if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook}: expected one cell tagged 'parameters', found {len(cells)}")
    return cells[0].source


def notebook_parameters(notebook: str | os.PathLike) -> dict[str, Any]:
    """Names and default values declared in a notebook's ``parameters`` cell."""
    declared = read_parameters_cell(parameters_cell(notebook), where=str(notebook))
    return {name: d.default for name, d in declared.items()}


def check_notebook_parameters(notebook: str | os.PathLike, values: Mapping[str, Any]) -> None:
    """Check values meant for a notebook against its ``parameters`` cell, without a kernel.

    Raises
    ------
    nbutils.params.ParameterError
        Naming the notebook, every unknown or mistyped parameter, and the
        allowed parameters with their types.
    """
    spec = spec_from_cell(parameters_cell(notebook), where=str(notebook))
    try:
        check_parameters(spec, values, require_all=False)
    except ParameterError as exc:
        raise ParameterError(f"{Path(notebook).name}: {exc}") from None


def parse_override(name: str, value: str) -> tuple[str, Any]:
    """Turn a command-line ``-p NAME VALUE`` into a typed pair (YAML rules: 3, 0.5, true, [1, 2])."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return name, parsed


def resolve_parameters(
    stem: str,
    declared: Iterable[str],
    profile: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Parameters for one notebook.

    Order of precedence (last wins): ``_common`` values the notebook declares,
    ``fixed`` values it declares (paths chosen by the runner), its own profile
    section (passed whole, so an undeclared name fails the notebook's
    validation loudly), then command-line ``overrides`` it declares.
    """
    declared = set(declared)
    params = {k: v for k, v in profile.get(COMMON, {}).items() if k in declared}
    params.update({k: v for k, v in (fixed or {}).items() if k in declared})
    params.update(profile.get(stem, {}))
    params.update({k: v for k, v in (overrides or {}).items() if k in declared})
    return params


def _export_html(executed: Path, html: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    write_text(html, body)


def _error_summary(exc: BaseException) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    return f"{ename}: {evalue}".strip()


class _DeclaredByAnnotation(logging.Filter):
    """Drop papermill's "Passed unknown parameter" warning.

    papermill's own reader of the parameters cell does not understand every
    annotation (``float | None``, ``Literal[...]``), so it would call declared
    parameters unknown; the runner has already checked every value against the
    cell with :func:`check_notebook_parameters`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


logging.getLogger("papermill").addFilter(_DeclaredByAnnotation())


def run_notebook(
    notebook: Path,
    parameters: Mapping[str, Any],
    reports_dir: Path,
    kernel_name: str = KERNEL_NAME,
    progress: bool = True,
) -> NotebookResult:
    """Execute one notebook with papermill; keep the executed copy even when it fails."""
    import papermill

    stem = notebook.stem
    executed = reports_dir / f"{stem}.ipynb"
    html = reports_dir / f"{stem}.html"
    result = NotebookResult(notebook=stem, status="ok", parameters=dict(parameters))
    metrics = metrics_path(reports_dir, stem)
    metrics.unlink(missing_ok=True)  # what is there afterwards comes from this run
    start = time.perf_counter()
    with atomic_path(executed) as tmp:
        try:
            papermill.execute_notebook(
                str(notebook),
                str(tmp),
                parameters=dict(parameters),
                kernel_name=kernel_name,
                cwd=str(notebook.parent),
                progress_bar=progress,
                request_save_on_cell_execute=True,
            )
        except Exception as exc:  # noqa: BLE001 - any failure is recorded, the copy kept
            result.status = "failed"
            result.error = _error_summary(exc)
    result.seconds = round(time.perf_counter() - start, 2)
    if executed.exists():
        result.executed = str(executed)
        _export_html(executed, html)
        result.html = str(html)
    if metrics.exists():
        result.metrics_file = str(metrics)
    return result


def run_notebooks(
    notebooks: Sequence[str | os.PathLike] | None = None,
    profile: str | os.PathLike = "quick",
    overrides: Mapping[str, Any] | None = None,
    reports_dir: str | os.PathLike = "reports",
    data_dir: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike = "notebooks",
    kernel_name: str = KERNEL_NAME,
    keep_going: bool = False,
    progress: bool = True,
) -> list[NotebookResult]:
    """Run notebooks in order and write ``reports/summary.json``.

    Parameters
    ----------
    notebooks : sequence of paths, optional
        Notebooks to run (in the given order); all ``NN_*.ipynb`` in
        ``notebooks_dir`` by default.
    profile : str or path
        Profile name (``smoke``, ``quick``, ``full``) or YAML path.
    overrides : mapping, optional
        Values given to every notebook that declares them.
    reports_dir, data_dir : path-like
        Where outputs go and where data are read/generated; passed to
        notebooks as ``reports_dir`` / ``data_dir`` (absolute paths).
    keep_going : bool
        Run the remaining notebooks after a failure (default: skip them,
        since later notebooks build on earlier ones).

    Returns
    -------
    list of NotebookResult
    """
    if notebooks:
        notebooks = [resolve_notebook(n, notebooks_dir) for n in notebooks]
    else:
        notebooks = discover_notebooks(notebooks_dir)
    prof = load_profile(profile, notebooks_dir if notebooks_dir else notebooks[0].parent)
    reports = Path(reports_dir).resolve()
    reports.mkdir(parents=True, exist_ok=True)
    fixed = {"reports_dir": str(reports)}
    if data_dir is not None:
        fixed["data_dir"] = str(Path(data_dir).resolve())
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    unused = set(overrides or {}) - set().union(*(set(d) for d in declared.values()))
    if unused:
        raise ValueError(
            f"parameter(s) {sorted(unused)} are not declared by any of the notebooks "
            f"{[nb.stem for nb in notebooks]}"
        )
    resolved = {nb: resolve_parameters(nb.stem, declared[nb], prof, overrides, fixed) for nb in notebooks}
    for nb, params in resolved.items():  # a typo in the last notebook's section stops the run now
        check_notebook_parameters(nb, params)
    results: list[NotebookResult] = []
    failed = False
    for nb in notebooks:
        params = resolved[nb]
        if failed and not keep_going:
            results.append(NotebookResult(notebook=nb.stem, status="skipped", parameters=params))
            continue
        print(f">> {nb.stem} (profile {prof.get(COMMON, {}).get('profile', profile)})", flush=True)
        result = run_notebook(nb, params, reports, kernel_name=kernel_name, progress=progress)
        results.append(result)
        failed = failed or result.status == "failed"
        _write_summary(reports, profile, results)
    _write_summary(reports, profile, results)
    build_index(reports)
    return results


def _write_summary(reports: Path, profile: str | os.PathLike, results: list[NotebookResult]) -> None:
    write_json(
        reports / "summary.json",
        {"profile": str(profile), "notebooks": [asdict(r) for r in results]},
    )


def _headline(metrics_file: str | None, limit: int = 3) -> str:
    import json

    if not metrics_file:
        return ""
    data = json.loads(Path(metrics_file).read_text())
    nums = [
        f"{k}={v:.3g}" for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    return ", ".join(nums[:limit])


def format_summary(results: Sequence[NotebookResult]) -> str:
    """A plain-text table: notebook, status, seconds, a few headline metrics."""
    rows = [("notebook", "status", "seconds", "headline metrics")]
    for r in results:
        extra = r.error if r.status == "failed" else _headline(r.metrics_file)
        rows.append((r.notebook, r.status, f"{r.seconds:.1f}", (extra or "")[:110]))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
