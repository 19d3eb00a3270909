"""From a trained autoencoder to calibrated deviation maps and regional profiles.

* :func:`fit_normative_stats` — the normative statistics from held-out healthy
  validation scans (residual norm, thresholds at healthy FPRs via
  leave-one-out, regional reference) and the no-network intensity norm from
  the training scans.
* :func:`build_normative_model` — train + fit + save in one call (notebook 02
  and the seed-stability retrains of notebook 03).
* :func:`analyse_volume` — one preprocessed scan to z-map, segmentation,
  regional profile and total deviation (the report's engine).
* :func:`deviation_maps`, :func:`regional_profiles` — batched versions for
  evaluation.

Comparing detection methods and the stability of profiles across retrained
models is :mod:`nbutils.normative.evaluate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .deviation import (
    VoxelNorm,
    binarise,
    fit_voxel_norm,
    leave_one_out_z,
    postprocess,
    score_map,
    threshold_at_fpr,
)
from .regional import fit_regional_reference, region_statistics
from .stats import NormativeStats

__all__ = [
    "DEFAULT_POSTPROCESSING",
    "SubjectDeviation",
    "analyse_volume",
    "atlas_arrays",
    "build_normative_model",
    "deviation_maps",
    "fit_normative_stats",
    "postprocessed_scores",
    "regional_profiles",
]

#: Post-processing applied to every score map before thresholding (Baur et al. 2021).
DEFAULT_POSTPROCESSING = {"score": "abs", "median_size": 3, "erode": 1, "min_size": 8}
FPRS = (0.01, 0.05)


def atlas_arrays(name: str, resolution: float) -> tuple[np.ndarray, pd.DataFrame]:
    """Label array and region table of atlas ``name`` on the standard grid at ``resolution``."""
    from nbutils.anatomy import load_atlas, standard_grid

    atlas = load_atlas(name, standard_grid(resolution))
    return atlas.data().astype(np.int32), atlas.labels


def postprocessed_scores(z: np.ndarray, mask: np.ndarray, post: dict) -> np.ndarray:
    """Score map of z-maps (``post["score"]``), median-filtered and eroded inside ``mask``."""
    return postprocess(score_map(z, post["score"]), mask, post["median_size"], post["erode"])


def fit_normative_stats(
    model,
    val_volumes: np.ndarray,
    train_volumes: np.ndarray,
    mask: np.ndarray,
    *,
    atlas: str = "neuromorphometrics",
    resolution: float = 2.0,
    atlas_data: tuple[np.ndarray, pd.DataFrame] | None = None,
    sigma: float = 1.0,
    map_sigma: float = 2.0,
    postprocessing: dict | None = None,
    measure: str = "mean_z",
    min_region_voxels: int = 5,
    calibrate: bool = True,
    provenance: dict | None = None,
    progress: bool = False,
) -> NormativeStats:
    """Normative statistics of a trained model from healthy scans only.

    Parameters
    ----------
    model : torch.nn.Module
        Trained autoencoder.
    val_volumes : array ``(N, X, Y, Z)``
        Held-out healthy validation scans (not trained on). Their residuals
        define the voxel norm; leave-one-out z-maps (N >= 3) set the thresholds
        at 1 % / 5 % voxel FPR and the regional reference distribution.
    train_volumes : array ``(M, X, Y, Z)``
        Healthy training scans: the intensity norm of the no-network baseline.
    mask : array ``(X, Y, Z)``
    atlas, resolution : str, float
        Atlas for the regional reference, on the standard grid at ``resolution``.
    atlas_data : (labels, regions), optional
        Use this label array and table instead of loading ``atlas`` (tests).
    sigma, map_sigma : float
        See :func:`~nbutils.normative.deviation.fit_voxel_norm`.
    postprocessing : dict, optional
        Overrides of :data:`DEFAULT_POSTPROCESSING`.
    measure : str
        Region measure for the profile.
    min_region_voxels : int
        Smaller regions are left out of the profile.
    calibrate : bool
        Scale the residual SD map by one factor so that 5 % of the healthy
        leave-one-out ``|z|`` exceed 1.96 (stored as ``calibration_factor``).
    provenance : dict, optional
        Stored with the statistics (checkpoint, data source, ...).
    """
    from .deviation import residual
    from .model import reconstruct

    post = {**DEFAULT_POSTPROCESSING, **(postprocessing or {})}
    mask = np.asarray(mask) > 0
    recon = reconstruct(model, val_volumes, progress=progress)
    res = residual(val_volumes, recon, mask)
    norm = fit_voxel_norm(res, mask, sigma, map_sigma)
    if len(val_volumes) >= 3:
        ref_z = leave_one_out_z(res, mask, sigma, map_sigma)
    else:  # too few for leave-one-out: in-sample (optimistic) reference
        ref_z = norm.z(res)
    # Calibration on healthy data only: with few reference subjects z has heavier tails
    # than N(0, 1); one global factor makes 5 % of leave-one-out |z| exceed 1.96.
    factor = 1.0
    if calibrate:
        factor = max(float(np.quantile(np.abs(ref_z[:, mask]), 0.95)) / 1.959964, 1e-3)
        norm = VoxelNorm(norm.mean, (norm.sd * factor).astype(np.float32), mask, norm.sigma, norm.n)
        ref_z = ref_z / factor
    healthy = postprocessed_scores(ref_z, mask, post)
    thresholds = {f"fpr_{f:g}": threshold_at_fpr(healthy, mask, f) for f in FPRS}
    intensity = fit_voxel_norm(train_volumes, mask, sigma, map_sigma)
    labels, regions = atlas_data if atlas_data is not None else atlas_arrays(atlas, resolution)
    regional = fit_regional_reference(ref_z, labels, regions, mask, measure, min_region_voxels)
    prov = {"n_validation": len(val_volumes), "n_train": len(train_volumes),
            "calibration_factor": factor, **(provenance or {})}
    return NormativeStats(
        residual=norm,
        intensity=intensity,
        thresholds=thresholds,
        postprocessing=post,
        regional=regional,
        atlas=atlas if atlas_data is None else "custom",
        resolution=float(resolution),
        provenance=prov,
    )


def deviation_maps(model, stats: NormativeStats, volumes: np.ndarray, progress: bool = False):
    """Reconstructions and voxel z-maps of a stack of scans ``(N, X, Y, Z)``."""
    from .deviation import residual
    from .model import reconstruct

    recon = reconstruct(model, volumes, progress=progress)
    z = stats.residual.z(residual(volumes, recon, stats.mask))
    return recon, z


def regional_profiles(
    stats: NormativeStats, z: np.ndarray, labels: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """Regional profiles ``(N, R)`` (a DataFrame with region names as columns) and total deviations."""
    ref = stats.regional
    raw = region_statistics(z, labels, ref.regions["index"].to_numpy(), stats.mask)
    if np.ndim(z) == 3:
        raw = {k: v[None] for k, v in raw.items()}
    prof = ref.region_z(raw)
    return pd.DataFrame(prof, columns=ref.regions["name"].tolist()), np.asarray(
        ref.total_deviation(prof)
    )


@dataclass(frozen=True)
class SubjectDeviation:
    """One subject's deviation analysis (arrays on the model grid)."""

    image: np.ndarray
    reconstruction: np.ndarray
    z: np.ndarray
    score: np.ndarray | None
    segmentation: np.ndarray | None
    profile: pd.DataFrame
    total_deviation: float
    threshold: float


def analyse_volume(
    model,
    stats: NormativeStats,
    volume: np.ndarray,
    labels: np.ndarray | None = None,
    fpr: float = 0.05,
    segment: bool = True,
) -> SubjectDeviation:
    """Deviation map, anomaly segmentation and regional profile of one preprocessed scan.

    Parameters
    ----------
    model : torch.nn.Module
    stats : NormativeStats
    volume : array ``(X, Y, Z)``
        Skull-stripped, intensity-standardised scan on the model grid.
    labels : int array, optional
        Atlas labels on the grid; loaded from ``stats.atlas`` if omitted.
    fpr : float
        Healthy false-positive rate of the segmentation threshold (0.01 or 0.05).
    segment : bool
        Also post-process the score and threshold it (the median filter is the
        slowest step); otherwise ``score`` and ``segmentation`` are ``None``.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.shape != stats.mask.shape:
        raise ValueError(
            f"scan shape {volume.shape} does not match the model grid {stats.mask.shape}"
        )
    key = f"fpr_{fpr:g}"
    if key not in stats.thresholds:
        raise ValueError(f"no threshold at FPR {fpr}; have {sorted(stats.thresholds)}")
    if labels is None:
        labels, _ = atlas_arrays(stats.atlas, stats.resolution)
    recon, z = deviation_maps(model, stats, volume[None])
    recon, z = recon[0], z[0]
    post = stats.postprocessing
    score = seg = None
    if segment:
        score = postprocessed_scores(z, stats.mask, post)
        seg = binarise(score, stats.thresholds[key], post["min_size"])
    raw = region_statistics(z, labels, stats.regional.regions["index"].to_numpy(), stats.mask)
    table = stats.regional.profile_table(raw)
    total = float(stats.regional.total_deviation(table["profile"].to_numpy()))
    return SubjectDeviation(volume, recon, z, score, seg, table, total, stats.thresholds[key])


def build_normative_model(
    table: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    model: dict | None = None,
    data: dict | None = None,
    max_epochs: int = 50,
    patience: int = 10,
    seed: int = 0,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    limit_train_batches: int | float | None = None,
    max_minutes: float | None = None,
    stats_options: dict | None = None,
    data_source: str = "",
    progress: bool = True,
):
    """Train the autoencoder, fit its normative statistics and save them next to the checkpoint.

    Returns
    -------
    (TrainResult, NormativeStats, model)
    """
    from .data import NormativeDataModule, load_volumes
    from .stats import save_stats
    from .train import load_autoencoder, train_autoencoder

    result = train_autoencoder(
        table, out_dir, model=model, data=data, max_epochs=max_epochs, patience=patience,
        seed=seed, accelerator=accelerator, devices=devices, strategy=strategy,
        num_nodes=num_nodes, limit_train_batches=limit_train_batches, max_minutes=max_minutes,
        progress=progress,
    )
    net = load_autoencoder(result.best_checkpoint)
    subjects = pd.read_csv(Path(out_dir) / "subjects.tsv", sep="\t")
    mask_source = (data or {}).get("mask")
    dm = NormativeDataModule(subjects, mask=mask_source)
    train = load_volumes(dm.rows("train")["path"], progress=progress)
    val = load_volumes(dm.rows("val")["path"], progress=progress)
    mask = dm._mask(train.shape[1:])
    import json

    training = json.loads((Path(out_dir) / "training.json").read_text())
    prov = {
        "checkpoint": result.best_checkpoint.name,
        "data_source": data_source,
        "training": training,
        "reference_subjects": dm.rows("val")["participant_id"].tolist(),
        "stats_options": stats_options or {},
    }
    stats = fit_normative_stats(net, val, train, mask, provenance=prov, progress=progress,
                                **(stats_options or {}))
    save_stats(stats, result.best_checkpoint)
    from .guard import fit_guard_beside

    fit_guard_beside(net, stats, val, result.best_checkpoint)  # scans unlike the reference get a warning
    return result, stats, net
