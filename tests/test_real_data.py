"""The real-data path end to end: native scans -> ``nbutils prep`` -> notebooks 02-04 -> ``nbutils report``.

Everything a run on IXI would do, on a small native whole-head synthetic cohort (several sites and
voxel orientations) so it runs here: the notebooks open the prep folder through the ``dataset``
parameter, name it in every metrics file, skip the lesion sections that need ground truth the folder
does not have, and fit and apply the scan guard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import pandas as pd
import pytest

from conftest import REPO
from nbutils.runs import open_prep_dataset, prep_label

NOTEBOOKS = ["02_train_normative_autoencoder", "03_deviation_maps", "04_regional_profiles"]


@pytest.mark.slow
@pytest.mark.timeout(1500)  # native cohort + prep + three smoke notebooks
def test_native_scans_to_prep_to_notebooks_to_report(native_prep, tmp_path):
    from nbutils.runner import run_notebooks

    orientations = {nib.aff2axcodes(nib.load(p).affine) for p in native_prep.raw.glob("sub-*/anat/*_T1w.nii.gz")}
    assert len(orientations) >= 2, orientations
    data = open_prep_dataset(native_prep.prep)
    assert data.kind == "prep" and data.resolution == 4.0 and len(data.table) == 7
    assert data.source == prep_label(native_prep.prep, 7) == "preprocessed dataset prep (7 scans, prep.tsv)"
    assert data.table["site"].nunique() >= 2 and not data.has_truth

    results = run_notebooks([REPO / "notebooks" / f"{n}.ipynb" for n in NOTEBOOKS], profile="smoke",
                            overrides={"dataset": str(native_prep.prep), "test_fraction": 0.17},
                            reports_dir=tmp_path / "reports", data_dir=tmp_path / "data",
                            notebooks_dir=REPO / "notebooks", progress=False)
    for r in results:
        assert r.status == "ok", f"{r.notebook} failed: {r.error} (see {r.executed})"
    metrics = {r.notebook: json.loads(open(r.metrics_file).read()) for r in results}
    assert {m["data_source"] for m in metrics.values()} == {data.source}
    dev = metrics["03_deviation_maps"]
    assert dev["tumour_evaluation"].startswith("skipped: no lesion ground truth")
    assert dev["guard_available"] is True and dev["guard_flag_rate_contrast_inverted_healthy_test"] == 1.0
    assert 0.0 <= dev["guard_false_alarm_rate_healthy_test"] <= 1.0
    assert metrics["04_regional_profiles"]["ad_evaluation"].startswith("skipped")
    executed = (tmp_path / "reports" / "03_deviation_maps.ipynb").read_text()
    assert "SKIPPED — tumour detection needs lesion ground truth" in executed and data.source in executed

    ckpt = tmp_path / "data" / "models" / "smoke" / "normative_ae" / "ensemble.json"  # the cross-fitted members
    assert (ckpt.parent / "scan_guard.json").is_file()
    patient = data.table.loc[data.table["diagnosis"] == "glioma", "participant_id"].iloc[0]
    cmd = [sys.executable, "-m", "nbutils.cli", "report", "--subject", patient, "--prep", str(native_prep.prep),
           "--model", str(ckpt), "--out", str(tmp_path / "subjects")]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "subjects" / f"{patient}_deviation_report.html").read_text()
    assert data.source in page and "glioma" in page
    assert "Scan guard" in page or "SCAN UNLIKE THE HEALTHY REFERENCE" in page  # never silent
    prof = pd.read_csv(tmp_path / "subjects" / f"{patient}_regional_profile.tsv", sep="\t")
    assert len(prof) > 10 and prof["profile"].notna().any()
