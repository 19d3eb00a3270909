"""Where notebooks put their results: headline metrics and figures under ``reports/``."""

from __future__ import annotations

import io as _io
import json
import os
from pathlib import Path
from typing import Any

from nbutils.io import write_bytes, write_json, write_text

__all__ = [
    "build_index",
    "kernel_seconds",
    "metrics_path",
    "package_versions",
    "print_config",
    "read_metrics",
    "save_figure",
    "write_metrics",
]

#: Packages whose versions a notebook prints near its top (as MONAI's ``print_config``).
KEY_PACKAGES = (
    "nbutils", "torch", "pytorch-lightning", "monai", "numpy", "scipy", "pandas", "scikit-learn",
    "nibabel", "nilearn", "matplotlib", "papermill", "jupytext",
)


def package_versions(packages: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (``"not installed"`` when absent), plus Python's."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def kernel_seconds() -> float:
    """Wall-clock seconds since this process (a notebook's kernel) started, to 0.1 s.

    A notebook reports its own run time with it, without a timer cell of its own.
    """
    import time

    import psutil

    return round(time.time() - psutil.Process().create_time(), 1)


def print_config(packages: tuple[str, ...] = KEY_PACKAGES) -> None:
    """Print the versions of the suite's key packages and the CPU threads torch uses."""
    versions = package_versions(packages)
    try:
        import torch

        versions["torch threads"] = str(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    width = max(len(k) for k in versions)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in versions.items()))


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


def _metric_rows(reports: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    for path in sorted((reports / "metrics").glob("*.json")):
        data = json.loads(path.read_text())
        source = str(data.get("data_source", ""))
        for key, value in data.items():
            if key in ("notebook", "data_source"):
                continue
            if isinstance(value, float):
                shown = f"{value:.4g}"
            elif isinstance(value, int | str | bool) or value is None:
                shown = str(value)
            else:
                shown = json.dumps(value)[:200]
            rows.append((path.stem, key, shown, source))
    return rows


def build_index(reports_dir: str | os.PathLike) -> Path:
    """Write ``reports/index.html``: every executed notebook, subject report and headline metric.

    Reads ``summary.json`` (status and seconds per notebook), ``metrics/*.json``
    and any ``subjects/**/*.html`` single-subject reports, so a whole run can be
    browsed without Jupyter.
    """
    from html import escape

    reports = Path(reports_dir)
    summary_file = reports / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {"notebooks": []}
    nb_rows = []
    for nb in summary.get("notebooks", []):
        name = escape(nb["notebook"])
        link = f'<a href="{name}.html">{name}</a>' if (reports / f"{nb['notebook']}.html").exists() else name
        status = escape(nb["status"])
        error = escape(nb.get("error") or "")
        nb_rows.append(
            f'<tr class="{status}"><td>{link}</td><td>{status}</td>'
            f'<td style="text-align:right">{nb.get("seconds", 0):.1f}</td><td>{error}</td></tr>'
        )
    subject_links = [
        f'<li><a href="{escape(p.relative_to(reports).as_posix())}">{escape(p.stem)}</a></li>'
        for p in sorted((reports / "subjects").glob("**/*.html"))
    ]
    metric_rows = [
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in _metric_rows(reports)
    ]
    figures = sorted((reports / "figures").glob("*/*.png"))
    figure_links = [
        f'<li><a href="{escape(p.relative_to(reports).as_posix())}">{escape(p.parent.name)}/{escape(p.name)}</a></li>'
        for p in figures
    ]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nbutils run: {escape(str(summary.get("profile", "")))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; }}
td, th {{ border: 1px solid #ccc; padding: .25rem .6rem; font-size: .9rem; vertical-align: top; }}
th {{ background: #f2f2f2; }} tr.failed td {{ background: #fde2e2; }} tr.skipped td {{ color: #888; }}
</style></head><body>
<h1>Notebook suite run &mdash; profile <code>{escape(str(summary.get("profile", "?")))}</code></h1>
<p>Executed notebooks, single-subject reports and headline metrics of one run.
Each metric names the data it came from.</p>
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>seconds</th><th>error</th></tr>
{"".join(nb_rows) or '<tr><td colspan="4">no notebooks run yet</td></tr>'}
</table>
<h2>Single-subject reports</h2>
<ul>{"".join(subject_links) or "<li>none in this run</li>"}</ul>
<h2>Headline metrics</h2>
<table><tr><th>notebook</th><th>metric</th><th>value</th><th>data source</th></tr>
{"".join(metric_rows)}
</table>
<h2>Figures</h2>
<ul>{"".join(figure_links) or "<li>none</li>"}</ul>
</body></html>
"""
    return write_text(reports / "index.html", page)
