"""The ``nbutils`` command: ``run`` (papermill), ``synth``, ``prep``, ``report``, ``train``.

Every command lives in its own module exposing ``register(subparsers)``, which
adds the sub-command and sets ``func`` (called with the parsed arguments,
returning the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

# Command modules exposing ``register(subparsers)``; imported lazily so that
# ``nbutils --help`` stays fast and a missing optional stack fails only its command.
COMMAND_MODULES = (
    "nbutils.run_cli",
    "nbutils.synth.cli",
    "nbutils.prep.cli",
    "nbutils.normative.report",
    "nbutils.normative.train",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every available command registered."""
    parser = argparse.ArgumentParser(
        prog="nbutils", description="Normative 3D-CNN modelling of structural brain MRI: notebook suite tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)
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
