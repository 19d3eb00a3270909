"""Accuracy of the pipeline against the ground truth of a synthetic native cohort.

:func:`nbutils.synth.generate_cohort` with ``space="native"`` stores, per
subject, the true brain mask (native space) and the true transform as an
image on the 2 mm MNI grid whose voxels hold the scanner-space mm of the same
anatomy (``*_from-T1w_to-MNI_mode-coords_xfm.nii.gz``). Here the estimated
registration is turned into the same kind of coordinate map and compared.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from nbutils import anatomy
from nbutils.prep import steps

__all__ = ["accuracy_summary", "dice", "evaluate_scan", "evaluate_against_truth"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def evaluate_scan(
    native: nib.Nifti1Image,
    native_mask: nib.Nifti1Image,
    registration: steps.Registration,
    true_mask: nib.Nifti1Image,
    true_xfm: nib.Nifti1Image,
) -> dict[str, float]:
    """Mask Dice (native space) and registration error (mm) over MNI brain voxels.

    Parameters
    ----------
    native : nibabel image
        The input scan (any orientation).
    native_mask : nibabel image
        Estimated brain mask on the RAS-reoriented grid of ``native``.
    registration : Registration
        Estimated registration of the scan to MNI.
    true_mask, true_xfm : nibabel images
        Ground truth from the synthetic cohort.

    Returns
    -------
    dict
        ``mask_dice``, ``reg_error_mm`` (mean over the MNI152 brain mask of the
        distance between estimated and true native positions), ``reg_error_p95_mm``.
    """
    ras = steps.reorient_to_ras(native)
    truth = np.asarray(steps.reorient_to_ras(true_mask).dataobj) > 0
    est = np.asarray(native_mask.dataobj) > 0
    if truth.shape != est.shape:
        raise ValueError(f"mask shapes differ: estimated {est.shape}, truth {truth.shape}")
    true_coords = np.asarray(true_xfm.dataobj, dtype=np.float64)
    resolution = float(true_xfm.header.get_zooms()[0])
    grid = anatomy.standard_grid(resolution)
    if true_coords.shape[:3] != grid.shape:
        raise ValueError(
            f"true transform is not on standard_grid({resolution}): {true_coords.shape}"
        )
    brain = np.asarray(anatomy.load_brain_mask(grid).dataobj) > 0
    est_coords = registration.native_coordinates(ras, resolution)
    err = np.linalg.norm(est_coords[brain] - true_coords[brain], axis=1)
    err = err[np.isfinite(err)]
    return {
        "mask_dice": dice(est, truth),
        "reg_error_mm": float(err.mean()) if err.size else float("nan"),
        "reg_error_p95_mm": float(np.percentile(err, 95)) if err.size else float("nan"),
    }


def evaluate_against_truth(prep: pd.DataFrame, synth_root: str | os.PathLike) -> pd.DataFrame:
    """Evaluate every ``done`` row of a ``prep.tsv`` table against a synthetic native cohort.

    Parameters
    ----------
    prep : pandas.DataFrame
        Returned by :func:`~nbutils.prep.pipeline.run_prep` on
        ``load_bids(synth_root)``.
    synth_root : path-like
        The cohort folder (holding ``derivatives/synth``).

    Returns
    -------
    pandas.DataFrame
        ``participant_id``, ``scan_id``, ``mask_dice``, ``reg_error_mm``,
        ``reg_error_p95_mm``, ``mask_method``.
    """
    from nbutils.synth.cohort import subject_paths

    rows = []
    for _, row in prep[prep["status"] == "done"].iterrows():
        truth = subject_paths(synth_root, row["participant_id"])
        if not truth["xfm"].is_file():
            raise FileNotFoundError(
                f"no ground-truth transform for {row['participant_id']}: {truth['xfm']}"
            )
        registration = steps.Registration(
            forward=[row["xfm_path"]], inverse=[row["xfm_path"]], inverse_flags=[True],
            template_resolution=2.0, correlation=float(row.get("template_corr", np.nan)),
        )  # fmt: skip
        warp = Path(str(row["xfm_path"]).replace("_xfm.mat", "_xfm.nii.gz"))
        if warp.is_file():
            registration.forward = [str(warp), row["xfm_path"]]
        scores = evaluate_scan(
            nib.load(row["path"]), nib.load(row["native_mask_path"]), registration,
            nib.load(truth["mask"]), nib.load(truth["xfm"]),
        )  # fmt: skip
        rows.append({"participant_id": row["participant_id"], "scan_id": row["scan_id"], **scores,
                     "mask_method": row.get("mask_method")})  # fmt: skip
    return pd.DataFrame(rows)


def accuracy_summary(prep: pd.DataFrame, accuracy: pd.DataFrame) -> dict[str, float]:
    """One line of a run's accuracy and cost: means over its scans.

    Parameters
    ----------
    prep : pandas.DataFrame
        The ``prep.tsv`` table of the run (rows of any status).
    accuracy : pandas.DataFrame
        :func:`evaluate_against_truth` of the same run.

    Returns
    -------
    dict
        ``scans`` (evaluated), ``mask_dice``, ``reg_error_mm``, ``reg_error_p95_mm``,
        ``seconds_per_scan`` (over scans processed in this run; over all done scans
        when every one was reused from an earlier run) and ``seconds_register``.
        NaN where nothing was done.
    """
    done = prep[prep["status"] == "done"]
    fresh = done[~done["reused"].astype(bool)]
    timed = fresh if len(fresh) else done
    return {
        "scans": int(len(accuracy)),
        "mask_dice": float(accuracy["mask_dice"].mean()),
        "reg_error_mm": float(accuracy["reg_error_mm"].mean()),
        "reg_error_p95_mm": float(accuracy["reg_error_p95_mm"].mean()),
        "seconds_per_scan": float(timed["seconds_total"].mean()),
        "seconds_register": float(done["seconds_register"].mean()),
    }
