"""Shared fixtures: seeded rng, tiny notebooks for runner tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@dataclass
class SmokeRun:
    """The whole suite executed once with the smoke profile."""

    root: Path
    reports: Path
    data: Path
    results: dict


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> SmokeRun:
    """Execute every notebook in order with the smoke profile (once per test session).

    Set ``NBUTILS_REUSE_SMOKE=DIR`` to reuse an earlier ``nbutils run --profile smoke
    --reports DIR/reports --data DIR/data`` while iterating on tests.
    """
    import json

    from nbutils.runner import NotebookResult, discover_notebooks, run_notebooks

    reuse = os.environ.get("NBUTILS_REUSE_SMOKE")
    if reuse:
        root = Path(reuse)
        summary = json.loads((root / "reports" / "summary.json").read_text())
        results = [NotebookResult(**n) for n in summary["notebooks"]]
        return SmokeRun(root, root / "reports", root / "data", {r.notebook: r for r in results})
    root = tmp_path_factory.mktemp("smoke")
    notebooks = discover_notebooks(REPO / "notebooks")
    results = run_notebooks(notebooks, profile="smoke", reports_dir=root / "reports",
                            data_dir=root / "data", notebooks_dir=REPO / "notebooks",
                            keep_going=True, progress=False)
    return SmokeRun(root, root / "reports", root / "data", {r.notebook: r for r in results})


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def make_notebook(path: Path, params_src: str, spec_src: str, body_src: str) -> Path:
    """Write a small notebook shaped like the suite's: parameters, validation, body."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "nbutils", "display_name": "Python (nbutils)", "language": "python"}
    params = nbformat.v4.new_code_cell(params_src)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Tiny test notebook"),
        params,
        nbformat.v4.new_code_cell(spec_src),
        nbformat.v4.new_code_cell(body_src),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
