"""Shared fixtures: seeded rng, tiny notebooks for runner tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
import nibabel as nib
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


@dataclass
class NativePrep:
    """A small native whole-head synthetic cohort and its ``nbutils prep`` output folder (+ mirrored scans)."""

    raw: Path
    prep: Path


def _mirror_preprocessed(prep: Path, raw: Path, sources: list[str]) -> None:
    """Add one healthy scan per source: its preprocessed image and mask mirrored left-right.

    A mirrored brain is a different (if related) anatomy; adding it after ``nbutils prep`` keeps the
    test's prep work to the generated scans. The new rows go into ``prep.tsv`` and the demographics
    (copied) into ``<prep>/participants.tsv``, which then takes precedence over the raw dataset's.
    """
    import pandas as pd

    table = pd.read_csv(prep / "prep.tsv", sep="\t")
    demo = pd.read_csv(raw / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    rows, people = [], []
    for k, pid in enumerate(sources):
        new = f"sub-m{k + 1:03d}"
        row = table[table["participant_id"] == pid].iloc[0].copy()
        for col in ("preproc_path", "mask_path"):
            img = nib.load(row[col])
            out = prep / new / "anat" / Path(row[col]).name.replace(pid, new)
            out.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine, img.header), out)
            row[col] = str(out)
        row["participant_id"] = row["scan_id"] = new
        rows.append(row)
        people.append(demo[demo["participant_id"] == pid].assign(participant_id=new))
    pd.concat([table, pd.DataFrame(rows)]).to_csv(prep / "prep.tsv", sep="\t", index=False)
    pd.concat([demo, *people]).to_csv(prep / "participants.tsv", sep="\t", index=False)


@pytest.fixture(scope="session")
def native_prep(tmp_path_factory) -> NativePrep:
    """Native whole-head scans of several sites and orientations, preprocessed by ``nbutils prep``.

    Four generated subjects (three healthy, one glioma) go through the command line on the 4 mm grid
    of the smoke profile; three mirrored copies of the healthy ones are added after prep, because six
    healthy scans are the fewest with which notebook 02 holds out three reference scans (the scan
    guard's leave-one-out minimum), trains on two and tests on one.
    """
    import subprocess
    import sys

    import pandas as pd

    from nbutils.synth import ensure_cohort

    root = tmp_path_factory.mktemp("native_prep")
    raw = ensure_cohort(root / "raw", space="native", n_healthy=3, n_mci=0, n_ad=0, n_tumour=1, seed=0,
                        jobs=2, progress=False)
    prep = root / "prep"
    cmd = [sys.executable, "-m", "nbutils.cli", "prep", "--bids", str(raw), "--out", str(prep),
           "--resolution", "4", "--jobs", "2", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, f"nbutils prep failed:\n{done.stdout}\n{done.stderr}"
    healthy = pd.read_csv(raw / "participants.tsv", sep="\t").query("diagnosis == 'CN'")["participant_id"]
    _mirror_preprocessed(prep, raw, list(healthy))
    return NativePrep(raw, prep)


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
