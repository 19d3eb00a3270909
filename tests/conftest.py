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
    """A small native whole-head synthetic cohort and its ``nbutils prep`` output folder."""

    raw: Path
    prep: Path


def _mirror(raw: Path, source: str, target: str) -> None:
    """A new healthy scan from a generated one: left-right mirrored anatomy, stored in another voxel order.

    The mirrored brain is a different (if related) anatomy; storing it in a permuted voxel order adds
    orientations the prep pipeline must undo. Demographics are copied.
    """
    import pandas as pd

    img = nib.load(raw / source / "anat" / f"{source}_T1w.nii.gz")
    data = np.asarray(img.dataobj)
    axis = int(np.argmax(np.abs(img.affine[0, :3])))  # the voxel axis along world x (left-right)
    mirrored = nib.Nifti1Image(np.flip(data, axis=axis).copy(), img.affine)
    ornt = nib.orientations.io_orientation(img.affine)
    other = nib.orientations.ornt_transform(ornt, ornt[[1, 2, 0]])  # rotate the voxel axes
    out = raw / target / "anat" / f"{target}_T1w.nii.gz"
    out.parent.mkdir(parents=True)
    nib.save(mirrored.as_reoriented(other), out)
    table = pd.read_csv(raw / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    row = table[table["participant_id"] == source].assign(participant_id=target)
    pd.concat([table, row]).to_csv(raw / "participants.tsv", sep="\t", index=False)


@pytest.fixture(scope="session")
def native_prep(tmp_path_factory) -> NativePrep:
    """Native whole-head scans of several sites and orientations, preprocessed by ``nbutils prep``.

    Four generated subjects (three healthy, one glioma) plus three mirrored healthy scans in
    other voxel orders: six healthy scans are the fewest with which notebook 02 can hold out three
    reference scans (the scan guard's leave-one-out minimum), train on two and test on one.
    Prep runs on the 4 mm grid of the smoke profile, through the command line.
    """
    import subprocess
    import sys

    from nbutils.synth import ensure_cohort

    root = tmp_path_factory.mktemp("native_prep")
    raw = ensure_cohort(root / "raw", space="native", n_healthy=3, n_mci=0, n_ad=0, n_tumour=1, seed=0,
                        jobs=2, progress=False)
    import pandas as pd

    healthy = pd.read_csv(raw / "participants.tsv", sep="\t").query("diagnosis == 'CN'")["participant_id"]
    for k, pid in enumerate(healthy):
        _mirror(raw, pid, f"sub-m{k + 1:03d}")
    prep = root / "prep"
    cmd = [sys.executable, "-m", "nbutils.cli", "prep", "--bids", str(raw), "--out", str(prep),
           "--resolution", "4", "--jobs", "2", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, f"nbutils prep failed:\n{done.stdout}\n{done.stderr}"
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
