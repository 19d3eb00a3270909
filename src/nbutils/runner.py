"""Run the suite's notebooks with papermill, under a named profile, as a dependency graph.

A profile is a YAML file beside the notebooks (``notebooks/profiles/<name>.yaml``)
with a ``_common`` section (values given to every notebook that declares the
parameter) and one section per notebook stem (values that notebook must
declare). Command-line overrides (``-p NAME VALUE``) go to every notebook that
declares ``NAME``.

Each notebook declares in its metadata which notebooks' outputs it reads:
``{"nbutils": {"needs": ["00"]}}`` (number prefixes of stems; in the paired
``.py`` file, ``nbutils: {needs: [...]}`` under ``jupyter:`` in the YAML
header). In a run a need names a notebook of the same run; a need outside the
run is taken as already satisfied (``nbutils run 03`` relies on the outputs of
an earlier run of 02). A need that matches no notebook at all, or a cycle, stops
the run before anything executes.

``jobs=1`` runs the notebooks one after the other in order (a notebook named
before one it needs moves after it), with per-cell progress bars. ``jobs > 1``
runs up to ``jobs`` notebooks at once, each in its own process, starting each
as soon as the notebooks it needs have finished
(the ready notebook heading the longest chain first, timed by the previous
run's ``summary.json`` or the metadata hint ``nbutils.minutes``);
each kernel gets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = CPUs // jobs
(unless already set), and one line is printed per start and finish. A failed
notebook's dependents are skipped. A notebook's own worker pool (its
:data:`POOL_PARAMETER`, e.g. for generating subjects) is capped at CPUs // jobs
too, unless the notebook runs alone (nothing else runs, and everything still
waiting needs it) or the value came from the command line. Every kernel, in
either mode, also gets the glibc malloc settings of :data:`MALLOC_SETTINGS`
(unless already set).

Each notebook's executed copy and an HTML rendering land in ``reports/``; the
notebook itself writes ``reports/metrics/<stem>.json``; the runner writes
``reports/summary.json`` (after every notebook) and prints a summary table.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
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
    "critical_paths",
    "dependency_graph",
    "discover_notebooks",
    "load_profile",
    "notebook_minutes",
    "notebook_needs",
    "notebook_parameters",
    "parse_override",
    "resolve_notebook",
    "resolve_parameters",
    "run_notebooks",
]

KERNEL_NAME = "nbutils"
COMMON = "_common"
#: Thread pools of the numerical libraries, limited in each kernel of a parallel run.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: The parameter a notebook sizes its own process pool with. Pool sizes change how fast a notebook runs, never its
#: results (each subject or scan is seeded by itself), so a parallel run may cap them. On 2026-12-02, beside a
#: one-thread training process, generating 12 tumour subjects took 13-20 s with one worker process or two,
#: while the training took 5-9 s longer beside two (``benchmarks/bench_pool_beside_training.py``).
POOL_PARAMETER = "jobs"
#: glibc malloc settings of every kernel (unless already set): freed memory stays in the heap instead of
#: going back to the system and being faulted in again. PyTorch's CPU training frees and reallocates its
#: large buffers at every step. On 2026-12-02 a one-thread PIF training run took 10.3 s instead of 12.7 s
#: (system time 0.5 s instead of 2.3 s) at 5 % more peak memory (``benchmarks/bench_malloc.py``).
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30)}


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


def _nbutils_metadata(notebook: str | os.PathLike) -> Any:
    """The notebook's metadata ``nbutils`` (``{}`` if absent; checked by its readers)."""
    import nbformat

    return nbformat.read(notebook, as_version=4).metadata.get("nbutils", {})


def notebook_needs(notebook: str | os.PathLike) -> list[str]:
    """The notebooks whose outputs a notebook reads: its metadata ``nbutils.needs``.

    Parameters
    ----------
    notebook : path
        An ``.ipynb`` file.

    Returns
    -------
    list of str
        Stem prefixes such as ``["00"]``; empty when the notebook declares none.

    Raises
    ------
    ValueError
        When ``nbutils`` is not a mapping or ``needs`` not a list of non-empty strings.
    """
    meta = _nbutils_metadata(notebook)
    needs = meta.get("needs", []) if isinstance(meta, dict) else None
    if not isinstance(needs, list) or not all(isinstance(n, str) and n for n in needs):
        raise ValueError(
            f"{notebook}: metadata 'nbutils' must be a mapping with 'needs' a list of notebook stem "
            f"prefixes such as ['00'], got {meta!r}"
        )
    return list(needs)


def notebook_minutes(notebook: str | os.PathLike) -> float | None:
    """A notebook's rough run time in minutes, from its metadata ``nbutils.minutes`` (``None`` if absent).

    Only the order in which a parallel run starts ready notebooks uses it (see
    :func:`critical_paths`); the times of an earlier run replace it.
    """
    meta = _nbutils_metadata(notebook)
    minutes = meta.get("minutes") if isinstance(meta, dict) else None
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes < 0):
        raise ValueError(f"{notebook}: metadata 'nbutils.minutes' must be a number >= 0, got {minutes!r}")
    return None if minutes is None else float(minutes)


def critical_paths(graph: Mapping[Path, list[Path]], minutes: Mapping[Path, float]) -> dict[Path, float]:
    """Each notebook's minutes plus the longest chain of notebooks of the run that need it.

    Starting the ready notebook with the longest such path first keeps the
    longest chain from becoming the run's tail (longest-path-first list
    scheduling). ``graph`` is :func:`dependency_graph`'s; it has no cycle.
    """
    dependents = {nb: [other for other, needs in graph.items() if nb in needs] for nb in graph}
    paths: dict[Path, float] = {}

    def path(nb: Path) -> float:
        if nb not in paths:
            paths[nb] = minutes[nb] + max((path(d) for d in dependents[nb]), default=0.0)
        return paths[nb]

    return {nb: path(nb) for nb in graph}


def _run_minutes(notebooks: Sequence[Path], reports: Path) -> dict[Path, float]:
    """Minutes per notebook: from the last run's ``summary.json`` where it ran ok, else the metadata hint, else 1."""
    import json

    previous: dict[str, float] = {}
    summary = reports / "summary.json"
    if summary.is_file():
        try:
            rows = json.loads(summary.read_text()).get("notebooks", [])
            previous = {r["notebook"]: r["seconds"] / 60 for r in rows if r.get("status") == "ok"}
        except (ValueError, KeyError, TypeError, AttributeError):
            previous = {}  # an unreadable old summary only loses the ordering hint
    hint = {nb: notebook_minutes(nb) for nb in notebooks}
    return {nb: previous.get(nb.stem, hint[nb] if hint[nb] is not None else 1.0) for nb in notebooks}


def _is_need(stem: str, need: str) -> bool:
    """Whether a notebook stem is what a need names: ``00`` names ``00_synthetic_cohort``."""
    return stem == need or stem.startswith(f"{need}_")


def dependency_graph(
    notebooks: Sequence[Path], notebooks_dir: str | os.PathLike = "notebooks"
) -> dict[Path, list[Path]]:
    """Each notebook of a run mapped to the notebooks of the same run it needs.

    A need naming a notebook outside the run is left out (taken as satisfied
    by an earlier run).

    Raises
    ------
    ValueError
        When a need matches no notebook of the run nor of ``notebooks_dir``, or
        when the needs form a cycle; both name the notebooks.
    """
    in_dir = Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb") if notebooks_dir else []
    known = {p.stem for p in in_dir} | {nb.stem for nb in notebooks}
    graph = {}
    for nb in notebooks:
        needs = notebook_needs(nb)
        unknown = [n for n in needs if not any(_is_need(stem, n) for stem in known)]
        if unknown:
            raise ValueError(
                f"{nb.name} needs {unknown}, which match no notebook in {notebooks_dir} "
                f"(available: {sorted(known)})"
            )
        graph[nb] = [other for other in notebooks if any(_is_need(other.stem, n) for n in needs)]
    cycle = _find_cycle(graph)
    if cycle:
        raise ValueError(f"the notebooks' needs form a cycle: {' needs '.join(nb.stem for nb in cycle)}")
    return graph


def _find_cycle(graph: Mapping[Path, list[Path]]) -> list[Path] | None:
    """A path ``a, b, ..., a`` along needs, or ``None`` when the graph has no cycle."""
    finished: set[Path] = set()
    path: list[Path] = []

    def visit(nb: Path) -> list[Path] | None:
        path.append(nb)
        for need in graph[nb]:
            if need in path:
                return path[path.index(need):] + [need]
            if need not in finished and (cycle := visit(need)):
                return cycle
        path.pop()
        finished.add(nb)
        return None

    for nb in graph:
        if nb not in finished and (cycle := visit(nb)):
            return cycle
    return None


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


@contextmanager
def _kernel_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` where unset, for a kernel started inside the block; restore afterwards."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


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
    with atomic_path(executed) as tmp, _kernel_environment(MALLOC_SETTINGS):
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
    jobs: int = 1,
) -> list[NotebookResult]:
    """Run notebooks as a dependency graph and write ``reports/summary.json``.

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
        since later notebooks build on earlier ones). The notebooks that need
        a failed one are skipped either way.
    progress : bool
        Per-cell progress bars (``jobs=1`` only).
    jobs : int
        Notebooks run at once. 1: one after the other in the given order
        (a notebook named before one it needs is moved after it).
        More: each in its own process, started as soon as the notebooks it
        needs (:func:`notebook_needs`) have finished, longest chain first
        (:func:`critical_paths`).

    Returns
    -------
    list of NotebookResult
        In the order of ``notebooks``.

    Raises
    ------
    ValueError
        ``jobs < 1``, an override no notebook declares, a need that matches
        no notebook, or a cycle of needs; all before anything runs.
    nbutils.params.ParameterError
        A value a notebook does not declare or of the wrong type.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    notebooks = _select(notebooks, notebooks_dir)
    prof = load_profile(profile, notebooks_dir if notebooks_dir else notebooks[0].parent)
    reports = Path(reports_dir).resolve()
    reports.mkdir(parents=True, exist_ok=True)
    fixed = {"reports_dir": str(reports)}
    if data_dir is not None:
        fixed["data_dir"] = str(Path(data_dir).resolve())
    resolved = _resolve_all(notebooks, prof, overrides, fixed)
    graph = dependency_graph(notebooks, notebooks_dir)
    run = _Run(reports, str(profile), str(prof.get(COMMON, {}).get("profile", profile)), kernel_name, jobs,
               frozenset(overrides or {}))
    if jobs == 1:
        results = _run_serial(run, notebooks, resolved, graph, keep_going, progress)
    else:
        results = _run_parallel(run, notebooks, resolved, graph, keep_going)
    run.write_summary(results)
    build_index(reports)
    return results


def _select(notebooks: Sequence[str | os.PathLike] | None, notebooks_dir: str | os.PathLike) -> list[Path]:
    """The notebooks of a run: the ones named, or all of ``notebooks_dir``."""
    if notebooks:
        return [resolve_notebook(n, notebooks_dir) for n in notebooks]
    return discover_notebooks(notebooks_dir)


def _resolve_all(
    notebooks: Sequence[Path],
    prof: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Any] | None,
    fixed: Mapping[str, Any],
) -> dict[Path, dict[str, Any]]:
    """Every notebook's parameters, checked against its ``parameters`` cell before anything runs."""
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
    return resolved


@dataclass
class _Run:
    """What the notebooks of one run share: where they report, the profile, the kernel, the clock."""

    reports: Path
    profile: str
    label: str  # the profile's own name (its ``_common.profile``), printed per notebook
    kernel_name: str
    jobs: int
    overridden: frozenset[str] = frozenset()  # parameter names set on the command line
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.perf_counter() - self.start

    def write_summary(self, results: Iterable[NotebookResult]) -> None:
        """``summary.json``: the profile, ``jobs``, wall-clock seconds so far and each notebook's result."""
        write_json(
            self.reports / "summary.json",
            {"profile": self.profile, "jobs": self.jobs, "wall_seconds": round(self.elapsed(), 2),
             "notebooks": [asdict(r) for r in results]},
        )


def _run_serial(
    run: _Run,
    notebooks: Sequence[Path],
    resolved: Mapping[Path, dict[str, Any]],
    graph: Mapping[Path, list[Path]],
    keep_going: bool,
    progress: bool,
) -> list[NotebookResult]:
    """One notebook after the other, in the given order moved only as far as needs require.

    A notebook whose need failed or was skipped is skipped; after a failure
    every later notebook is skipped unless ``keep_going``.
    """
    done: dict[Path, NotebookResult] = {}
    failed = False
    for nb in _needs_first(notebooks, graph):
        why = _blocked(nb, graph, done) or ("not started after a failure" if failed and not keep_going else None)
        if why:
            done[nb] = _skipped(run, nb, resolved[nb], why)
            continue
        print(f">> {nb.stem} (profile {run.label})", flush=True)
        done[nb] = run_notebook(nb, resolved[nb], run.reports, kernel_name=run.kernel_name, progress=progress)
        failed = failed or done[nb].status == "failed"
        run.write_summary(done[n] for n in notebooks if n in done)
    return [done[nb] for nb in notebooks]


def _needs_first(notebooks: Sequence[Path], graph: Mapping[Path, list[Path]]) -> list[Path]:
    """``notebooks`` reordered so that each comes after the notebooks it needs (stable; the graph has no cycle)."""
    order: list[Path] = []
    waiting = list(notebooks)
    while waiting:
        nb = next(n for n in waiting if all(need in order for need in graph[n]))
        waiting.remove(nb)
        order.append(nb)
    return order


def _run_parallel(
    run: _Run,
    notebooks: Sequence[Path],
    resolved: Mapping[Path, dict[str, Any]],
    graph: Mapping[Path, list[Path]],
    keep_going: bool,
) -> list[NotebookResult]:
    """Up to ``run.jobs`` notebooks at once, each in a spawned process, started when ready.

    Ready notebooks start longest chain first (:func:`critical_paths`, with
    the times of the previous run in ``reports`` or the notebooks'
    ``nbutils.minutes`` hints), ties in needs-first notebook order.

    A notebook is ready when every notebook of the run it needs finished
    ``ok``; it is skipped when one of them failed or was skipped. After a
    failure without ``keep_going`` no notebook starts; the running ones finish.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    threads = max(1, (os.cpu_count() or 1) // run.jobs)
    paths = critical_paths(graph, _run_minutes(notebooks, run.reports))
    upstream = _upstream(graph)
    params = dict(resolved)  # what each notebook ran with (its pool capped unless it ran alone)
    done: dict[Path, NotebookResult] = {}
    waiting = _needs_first(notebooks, graph)
    running: dict[Future, Path] = {}
    stop = False
    with ProcessPoolExecutor(max_workers=run.jobs, mp_context=get_context("spawn")) as pool:
        while True:
            _skip_blocked(run, waiting, graph, done, resolved)
            ready = [] if stop else [nb for nb in waiting if all(need in done for need in graph[nb])]
            ready.sort(key=lambda nb: -paths[nb])  # longest chain first; stable: ties keep notebook order
            starting = ready[: run.jobs - len(running)]
            for nb in starting:
                waiting.remove(nb)
            for nb in starting:
                alone = len(starting) == 1 and not running and all(nb in upstream[w] for w in waiting)
                params[nb] = resolved[nb] if alone else _capped_pool(resolved[nb], threads, run.overridden)
                future = pool.submit(_run_in_worker, nb, params[nb], run.reports, run.kernel_name, threads)
                running[future] = nb
                print(f">> {nb.stem} started (profile {run.label}){_clock(run)}", flush=True)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                nb = running.pop(future)
                done[nb] = _outcome(future, nb, params[nb])
                print(f"<< {nb.stem} {done[nb].status} in {done[nb].seconds:.1f} s{_clock(run)}", flush=True)
                # a worker that died (e.g. killed for memory) breaks the pool: nothing more can start
                broken = isinstance(future.exception(), BrokenProcessPool)
                stop = stop or broken or (done[nb].status == "failed" and not keep_going)
            run.write_summary(done[nb] for nb in notebooks if nb in done)
    for nb in waiting:  # left after a failure without keep_going
        done[nb] = _skipped(run, nb, resolved[nb], "not started after a failure")
    return [done[nb] for nb in notebooks]


def _upstream(graph: Mapping[Path, list[Path]]) -> dict[Path, set[Path]]:
    """Every notebook mapped to all the notebooks it needs, directly or through others."""
    found: dict[Path, set[Path]] = {}

    def visit(nb: Path) -> set[Path]:
        if nb not in found:
            found[nb] = set(graph[nb]).union(*(visit(need) for need in graph[nb]))
        return found[nb]

    return {nb: visit(nb) for nb in graph}


def _capped_pool(params: Mapping[str, Any], limit: int, overridden: frozenset[str]) -> dict[str, Any]:
    """``params`` with the notebook's own pool (:data:`POOL_PARAMETER`) at most ``limit``, unless set by the user."""
    value = params.get(POOL_PARAMETER)
    if POOL_PARAMETER in overridden or not isinstance(value, int) or isinstance(value, bool) or value <= limit:
        return dict(params)
    return {**params, POOL_PARAMETER: limit}


def _run_in_worker(
    notebook: Path, parameters: Mapping[str, Any], reports_dir: Path, kernel_name: str, threads: int
) -> NotebookResult:
    """Run one notebook in a pool process, its kernel limited to ``threads`` threads.

    A limit the user already exported (``OMP_NUM_THREADS=4 nbutils run ...``) is kept.
    """
    with _kernel_environment(dict.fromkeys(THREAD_VARIABLES, str(threads))):
        return run_notebook(notebook, parameters, reports_dir, kernel_name=kernel_name, progress=False)


def _skip_blocked(
    run: _Run,
    waiting: list[Path],
    graph: Mapping[Path, list[Path]],
    done: dict[Path, NotebookResult],
    resolved: Mapping[Path, dict[str, Any]],
) -> None:
    """Mark as skipped (and take out of ``waiting``) every notebook a failed or skipped need blocks.

    ``waiting`` is in needs-first order, so one pass also skips what a skip blocks.
    """
    for nb in list(waiting):
        why = _blocked(nb, graph, done)
        if why:
            waiting.remove(nb)
            done[nb] = _skipped(run, nb, resolved[nb], why)


def _blocked(nb: Path, graph: Mapping[Path, list[Path]], done: Mapping[Path, NotebookResult]) -> str | None:
    """Why ``nb`` cannot run (a need that finished but not ``ok``), or ``None``."""
    bad = [need.stem for need in graph[nb] if need in done and done[need].status != "ok"]
    return f"needs {', '.join(bad)}, which did not run ok" if bad else None


def _skipped(run: _Run, nb: Path, params: Mapping[str, Any], why: str) -> NotebookResult:
    print(f"-- {nb.stem} skipped: {why}{_clock(run)}", flush=True)
    return NotebookResult(notebook=nb.stem, status="skipped", parameters=dict(params))


def _outcome(future: Future, nb: Path, params: Mapping[str, Any]) -> NotebookResult:
    """A finished notebook's result; a worker that died counts as a failure of its notebook."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - e.g. BrokenProcessPool: recorded in the summary
        return NotebookResult(notebook=nb.stem, status="failed", error=_error_summary(exc), parameters=dict(params))


def _clock(run: _Run) -> str:
    return f"  [+{run.elapsed():.1f} s since the start]"


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
