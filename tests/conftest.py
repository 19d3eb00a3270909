"""Shared fixtures: seeded rng, tiny notebooks for runner tests."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


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
