"""``nbutils run``: execute the notebooks with papermill, as a dependency graph.

See :func:`nbutils.runner.run_notebooks`.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from nbutils.runner import format_summary, parse_override, run_notebooks

    overrides = dict(parse_override(name, value) for name, value in args.param)
    try:
        results = run_notebooks(
            args.notebooks or None,
            profile=args.profile,
            overrides=overrides,
            reports_dir=args.reports,
            data_dir=args.data,
            notebooks_dir=args.notebooks_dir,
            keep_going=args.keep_going,
            progress=not args.no_progress,
            jobs=args.jobs,
        )
    except ValueError as exc:  # bad parameters, jobs, needs or a cycle: found before anything ran
        print(f"nothing was run: {exc}")
        return 2
    print()
    print(format_summary(results))
    failed = [r.notebook for r in results if r.status == "failed"]
    if failed:
        print(f"\nFAILED: {', '.join(failed)} (executed copies with the error are in {args.reports}/)")
        return 1
    print(f"\nAll {len(results)} notebook(s) ran; summary in {args.reports}/summary.json")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` command to the ``nbutils`` parser."""
    p = subparsers.add_parser(
        "run",
        help="execute notebooks with papermill under a profile, as a dependency graph",
        description="Execute notebooks with papermill and the 'nbutils' kernel, writing executed "
        "copies, HTML renderings, metrics and summary.json under --reports. Notebooks run as a "
        "dependency graph from their 'nbutils.needs' metadata (the notebooks whose outputs each "
        "reads); a need outside the notebooks named is taken as already run.",
    )
    p.add_argument("notebooks", nargs="*", help="notebooks to run (default: all NN_*.ipynb in order)")
    p.add_argument("--profile", default="quick", help="smoke | quick | full, or a YAML path (default quick)")
    p.add_argument(
        "-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="override a parameter in every notebook that declares it (value parsed as YAML)",
    )
    p.add_argument("--reports", default="reports", help="output folder (default reports/)")
    p.add_argument("--data", default="data", help="data folder passed as data_dir (default data/)")
    p.add_argument("--notebooks-dir", default="notebooks", help="where notebooks and profiles live")
    p.add_argument("--keep-going", action="store_true", help="run the rest after a failure")
    p.add_argument("--no-progress", action="store_true", help="no per-cell progress bars")
    p.add_argument(
        "--jobs", type=_positive_int, default=1, metavar="N",
        help="run up to N notebooks at once, each started when the notebooks it needs (its nbutils.needs "
        "metadata) have finished, with CPUs/N threads per kernel (and a notebook's own 'jobs' pool capped at "
        "CPUs/N unless it runs alone or you set -p jobs) and one line per start and finish "
        "instead of progress bars (default 1: one after the other, in order)",
    )
    p.set_defaults(func=_run)
