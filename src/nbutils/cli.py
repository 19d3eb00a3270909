"""The ``nbutils`` command: ``run`` (papermill), ``synth``, ``prep``, ``report``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

# Command modules exposing ``register(subparsers)``; imported lazily so that
# ``nbutils --help`` stays fast and a missing optional stack fails only its command.
COMMAND_MODULES = ("nbutils.synth.cli", "nbutils.prep.cli", "nbutils.normative.report")


def _run(args: argparse.Namespace) -> int:
    from nbutils.params import ParameterError
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
        )
    except ParameterError as exc:
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


def _register_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="execute notebooks in order with papermill under a profile",
        description="Execute notebooks with papermill and the 'nbutils' kernel, writing executed "
        "copies, HTML renderings, metrics and summary.json under --reports.",
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
    p.set_defaults(func=_run)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every available command registered."""
    parser = argparse.ArgumentParser(
        prog="nbutils", description="Normative 3D-CNN modelling of structural brain MRI: notebook suite tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _register_run(sub)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # command not built (yet)
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbutils`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
