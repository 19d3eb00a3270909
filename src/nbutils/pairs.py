"""Jupytext pairs: each notebook is ``NN_name.ipynb`` + ``NN_name.py`` (``py:percent``).

The ``.ipynb`` is what JupyterLab opens and papermill executes; the ``.py`` is
what reviews, ruff and ``duplicates`` read. Edit either side, then re-sync
(``make sync``: ``jupytext --sync``, which keeps cell ids and tags); :func:`pair_difference` says whether a
pair has drifted apart and where.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PAIR_FORMAT", "pair_difference", "paired_text"]

PAIR_FORMAT = "py:percent"


def paired_text(ipynb: str | os.PathLike) -> Path:
    """The ``.py`` partner of a notebook."""
    return Path(ipynb).with_suffix(".py")


def _cell_key(cell) -> tuple[str, str, tuple[str, ...]]:
    return cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", []))


def _first_line(source: str) -> str:
    line = next((ln for ln in source.strip().splitlines() if ln.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


def pair_difference(ipynb: str | os.PathLike) -> str | None:
    """Where a notebook and its ``.py`` partner differ, or ``None`` when they are in sync.

    Cells are compared by type, source and tags, in order.

    Parameters
    ----------
    ipynb : path-like
        The ``.ipynb`` half of the pair.

    Returns
    -------
    str or None
        A message naming the notebook and the first differing cell.
    """
    import jupytext
    import nbformat

    ipynb = Path(ipynb)
    text = paired_text(ipynb)
    if not text.is_file():
        return f"{ipynb.name}: no paired {text.name} ({PAIR_FORMAT}); run `make sync`"
    a = nbformat.read(ipynb, as_version=4).cells
    b = jupytext.read(text, fmt=PAIR_FORMAT).cells
    for i, (ca, cb) in enumerate(zip(a, b, strict=False)):
        if _cell_key(ca) != _cell_key(cb):
            what = "tags" if ca.source.strip() == cb.source.strip() else "source"
            return (f"{ipynb.name}: cell {i} ({ca.cell_type}, {_first_line(ca.source)!r}) differs in "
                    f"{what} from {text.name} ({_first_line(cb.source)!r}); edit one side, then `make sync`")
    if len(a) != len(b):
        return (f"{ipynb.name}: {len(a)} cells but {text.name} has {len(b)}; first unmatched cell "
                f"{min(len(a), len(b))}; run `make sync`")
    return None
