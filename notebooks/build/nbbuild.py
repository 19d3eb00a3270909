"""Tiny helpers to write the suite's notebooks with nbformat (no outputs)."""

from __future__ import annotations

from pathlib import Path

import nbformat


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str, tags: list[str] | None = None):
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def write(path: str | Path, cells: list) -> Path:
    path = Path(path)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "nbutils", "display_name": "Python (nbutils)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(cells):
        cell["id"] = f"{path.stem[:2]}-{i:02d}"  # stable ids keep rebuilds diff-free
    nb.cells = cells
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path
