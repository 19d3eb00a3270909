"""Where notebooks put their results: headline metrics and figures under ``reports/``."""

from __future__ import annotations

import datetime as _dt
import io as _io
import json
import os
from pathlib import Path
from typing import Any

from nbutils.io import write_bytes, write_json

__all__ = ["metrics_path", "read_metrics", "save_figure", "write_metrics"]


def metrics_path(reports_dir: str | os.PathLike, stem: str) -> Path:
    """``<reports_dir>/metrics/<stem>.json``."""
    return Path(reports_dir) / "metrics" / f"{stem}.json"


def write_metrics(
    reports_dir: str | os.PathLike, stem: str, metrics: dict[str, Any], data_source: str
) -> Path:
    """Write a notebook's headline numbers to ``reports/metrics/<stem>.json``.

    Parameters
    ----------
    reports_dir : path-like
        The run's reports folder.
    stem : str
        Notebook file name without ``.ipynb``.
    metrics : dict
        JSON-serialisable numbers (numpy scalars are fine).
    data_source : str
        Which data the numbers come from, e.g. ``"synthetic cohort (quick)"``.
        Required: every number says where it came from.

    Returns
    -------
    pathlib.Path
    """
    if not data_source or not data_source.strip():
        raise ValueError("data_source must say which data the metrics come from")
    if "data_source" in metrics or "notebook" in metrics:
        raise ValueError("'data_source' and 'notebook' are reserved metric names")
    payload = {
        "notebook": stem,
        "data_source": data_source,
        "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **metrics,
    }
    return write_json(metrics_path(reports_dir, stem), payload)


def read_metrics(reports_dir: str | os.PathLike, stem: str) -> dict[str, Any]:
    """Read back what :func:`write_metrics` wrote."""
    return json.loads(metrics_path(reports_dir, stem).read_text())


def save_figure(fig: Any, reports_dir: str | os.PathLike, stem: str, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``reports/figures/<stem>/<name>.png`` atomically."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return write_bytes(Path(reports_dir) / "figures" / stem / f"{name}.png", buf.getvalue())
