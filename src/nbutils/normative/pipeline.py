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

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .conditional import MissingCovariatesWarning
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
    "covariates_of",
    "deviation_maps",
    "ensemble_z",
    "fit_normative_stats",
    "member_z_maps",
    "normative_stats_from_residuals",
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
    train_volumes: np.ndarray | None,
    mask: np.ndarray,
    *,
    covariates: pd.DataFrame | None = None,
    progress: bool = False,
    **options,
) -> NormativeStats:
    """Normative statistics of one trained model from held-out healthy scans.

    The residuals of ``val_volumes`` (not trained on) define the reference; see
    :func:`normative_stats_from_residuals` for ``covariates`` and ``options``.
    ``train_volumes`` is accepted for backward compatibility and unused: the
    intensity baseline now uses the same reference scans, with leave-one-out
    thresholds.
    """
    from .deviation import residual
    from .model import reconstruct

    mask = np.asarray(mask) > 0
    res = residual(val_volumes, reconstruct(model, val_volumes, progress=progress), mask)
    return normative_stats_from_residuals(res, val_volumes, mask, covariates, **options)


def normative_stats_from_residuals(
    residuals: np.ndarray,
    volumes: np.ndarray,
    mask: np.ndarray,
    covariates: pd.DataFrame | None = None,
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
) -> NormativeStats:
    """Normative statistics from out-of-sample residuals of healthy reference subjects.

    Parameters
    ----------
    residuals : array ``(N, X, Y, Z)``
        One out-of-sample residual map per healthy reference subject (held-out
        validation scans, or cross-fitted: each from the model that did not
        train on it).
    volumes : array ``(N, X, Y, Z)``
        The same subjects' scans: the no-network intensity baseline.
    mask : array ``(X, Y, Z)``
    covariates : DataFrame, optional
        ``age``, ``sex``, ``site`` of the N subjects. With them the voxel norms
        are conditional (:func:`~nbutils.normative.conditional.fit_conditional_voxel_norm`)
        and, with enough subjects, the regional reference is a PCNtoolkit model;
        the unconditional norms are kept as the fallback.
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
        Scale the SD maps by one factor so that 5 % of the healthy
        leave-one-out ``|z|`` exceed 1.96 (stored as ``calibration_factor``).
    provenance : dict, optional
        Stored with the statistics (checkpoint, data source, ...).
    """
    from .conditional import (
        MIN_REGIONAL_SUBJECTS,
        fit_conditional_voxel_norm,
        fit_regional_model,
        missing_covariates,
    )

    post = {**DEFAULT_POSTPROCESSING, **(postprocessing or {})}
    mask = np.asarray(mask) > 0
    residuals = np.asarray(residuals, dtype=np.float32)
    volumes = np.asarray(volumes, dtype=np.float32)
    n = len(residuals)
    cond_res = cond_int = regional_model = None
    if covariates is not None and not missing_covariates(covariates) and n >= 8:
        cond_res, ref_z, fb_z = fit_conditional_voxel_norm(
            residuals, mask, covariates, sigma, map_sigma, calibrate=calibrate)
        cond_int, int_z, _ = fit_conditional_voxel_norm(
            volumes, mask, covariates, sigma, map_sigma, calibrate=calibrate)
        norm, intensity, factor = cond_res.fallback, cond_int.fallback, cond_res.scale
    else:
        norm, ref_z, factor = _unconditional(residuals, mask, sigma, map_sigma, calibrate)
        intensity, int_z, _ = _unconditional(volumes, mask, sigma, map_sigma, calibrate)
        fb_z = ref_z
    healthy = postprocessed_scores(ref_z, mask, post)
    thresholds = {f"fpr_{f:g}": threshold_at_fpr(healthy, mask, f) for f in FPRS}
    baselines = {
        "intensity": postprocess(np.abs(volumes), mask, post["median_size"], post["erode"]),
        "voxel_z": postprocessed_scores(int_z, mask, post),
    }
    baseline_thresholds = {name: {f"fpr_{f:g}": threshold_at_fpr(s, mask, f) for f in FPRS}
                           for name, s in baselines.items()}  # fmt: skip
    labels, regions = atlas_data if atlas_data is not None else atlas_arrays(atlas, resolution)
    regional = fit_regional_reference(fb_z, labels, regions, mask, measure, min_region_voxels)
    if cond_res is not None and n >= MIN_REGIONAL_SUBJECTS:
        raw = region_statistics(ref_z, labels, regional.regions["index"].to_numpy(), mask)
        regional_model = fit_regional_model(raw[measure], covariates, regional.regions)
    prov = {"n_reference": n, "calibration_factor": factor,
            "conditional": cond_res is not None,
            "covariate_terms": cond_res.design.terms if cond_res is not None else [],
            "regional_model": "PCNtoolkit BLR (B-spline age; sex, site batch effects)"
            if regional_model is not None else "unconditional",
            **(provenance or {})}  # fmt: skip
    return NormativeStats(
        residual=norm,
        intensity=intensity,
        thresholds=thresholds,
        postprocessing=post,
        regional=regional,
        atlas=atlas if atlas_data is None else "custom",
        resolution=float(resolution),
        provenance=prov,
        conditional_residual=cond_res,
        conditional_intensity=cond_int,
        regional_model=regional_model,
        baseline_thresholds=baseline_thresholds,
    )


def _unconditional(maps, mask, sigma, map_sigma, calibrate) -> tuple[VoxelNorm, np.ndarray, float]:
    """Unconditional voxel norm, the reference's leave-one-out z-maps and the calibration factor."""
    from .conditional import calibration_factor

    norm = fit_voxel_norm(maps, mask, sigma, map_sigma)
    # with few reference subjects z has heavier tails than N(0, 1): one global factor
    # makes 5 % of the leave-one-out |z| exceed 1.96 (healthy data only)
    ref_z = leave_one_out_z(maps, mask, sigma, map_sigma) if len(maps) >= 3 else norm.z(maps)
    factor = 1.0
    if calibrate:
        factor = calibration_factor(ref_z[:, mask])
        norm = VoxelNorm(norm.mean, (norm.sd * factor).astype(np.float32), mask, norm.sigma, norm.n)
    return norm, ref_z / factor, factor


def member_z_maps(
    model, stats: NormativeStats, volumes: np.ndarray, covariates: pd.DataFrame | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean reconstruction ``(N, X, Y, Z)`` and each ensemble member's z-maps ``(K, N, X, Y, Z)``.

    A single model is an ensemble of one. Every member is compared with the same
    (cross-fitted) healthy reference, conditional on ``covariates`` when the
    statistics allow it.
    """
    from .deviation import residual
    from .model import members_of, reconstruct

    volumes = np.asarray(volumes, dtype=np.float32)
    use_cov = stats.uses_covariates(covariates)
    recons, zs = [], []
    for member in members_of(model):
        recon = reconstruct(member, volumes, progress=progress)
        res = residual(volumes, recon, stats.mask)
        zs.append(stats.conditional_residual.z(res, covariates) if use_cov else stats.residual.z(res))
        recons.append(recon)
    return np.mean(recons, axis=0), np.stack(zs)


def ensemble_z(member_z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One calibrated z-map per scan from the ensemble members' z-maps ``(K, N, X, Y, Z)``.

    Each member's z is calibrated against the healthy reference, but members
    trained on overlapping data make correlated errors, so their plain mean
    is under-dispersed: its variance is ``sum(R) / K**2`` for the members'
    correlation matrix ``R``, not 1 (with the 2-member quick ensemble 3.5 %
    instead of 5 % of healthy test voxels had |z| > 1.96). The members are
    combined as correlated z-scores are (Stouffer's sum over
    ``sqrt(sum(R))``; Strube 1985), with ``R`` measured over the brain voxels
    of each scan itself, so no labels or further reference data are needed.
    A single member is returned unchanged.

    Parameters
    ----------
    member_z : array ``(K, N, X, Y, Z)``
    mask : bool array ``(X, Y, Z)``

    Returns
    -------
    array ``(N, X, Y, Z)`` float32
    """
    member_z = np.asarray(member_z, dtype=np.float32)
    if member_z.ndim != 5 or member_z.shape[2:] != mask.shape:
        raise ValueError(f"expected member z-maps (K, N, {mask.shape}), got {member_z.shape}")
    if len(member_z) == 1:
        return member_z[0]
    out = np.empty(member_z.shape[1:], dtype=np.float32)
    for n in range(member_z.shape[1]):
        inside = member_z[:, n][:, mask].astype(np.float64)
        corr = np.nan_to_num(np.corrcoef(inside), nan=1.0)
        out[n] = member_z[:, n].sum(axis=0) / np.sqrt(max(float(corr.sum()), 1.0))
    return out


def deviation_maps(
    model, stats: NormativeStats, volumes: np.ndarray, covariates: pd.DataFrame | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstructions and voxel z-maps of a stack of scans ``(N, X, Y, Z)``.

    ``covariates`` (``age``, ``sex``, ``site``; one row per scan) select the
    healthy people each scan is compared with; without them a warning says the
    unconditional reference is used. For an ensemble the members' z-maps are
    combined by :func:`ensemble_z`.
    """
    recon, zs = member_z_maps(model, stats, volumes, covariates, progress)
    return recon, ensemble_z(zs, stats.mask)


def regional_profiles(
    stats: NormativeStats, z: np.ndarray, labels: np.ndarray, covariates: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Regional profiles ``(N, R)`` (a DataFrame with region names as columns) and total deviations."""
    prof, totals, _ = stats.profiles(z, labels, covariates)
    return pd.DataFrame(prof, columns=stats.regional.regions["name"].tolist()), totals


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
    uncertainty: np.ndarray | None = None
    conditional: bool = False


def analyse_volume(
    model,
    stats: NormativeStats,
    volume: np.ndarray,
    labels: np.ndarray | None = None,
    fpr: float = 0.05,
    segment: bool = True,
    covariates: pd.DataFrame | dict | None = None,
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
    covariates : DataFrame or dict, optional
        The subject's ``age``, ``sex`` and ``site``: compare with healthy people
        like them. Without them (a warning says so) the unconditional reference
        is used.
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
    if isinstance(covariates, dict):
        covariates = pd.DataFrame([covariates])
    conditional = stats.uses_covariates(covariates)
    cov = covariates if conditional else None
    with warnings.catch_warnings():  # uses_covariates has warned once
        warnings.simplefilter("ignore", MissingCovariatesWarning)
        recon, zs = member_z_maps(model, stats, volume[None], cov)
        recon, z = recon[0], ensemble_z(zs, stats.mask)[0]
        prof, totals, raw = stats.profiles(z, labels, cov)
    uncertainty = zs[:, 0].std(axis=0) if len(zs) > 1 else None
    post = stats.postprocessing
    score = seg = None
    if segment:
        score = postprocessed_scores(z, stats.mask, post)
        seg = binarise(score, stats.thresholds[key], post["min_size"])
    table = stats.regional.profile_table({m: v[0] for m, v in raw.items()}, profile=prof[0])
    total = float(totals[0])
    return SubjectDeviation(volume, recon, z, score, seg, table, total, stats.thresholds[key],
                            uncertainty, conditional)


def covariates_of(table: pd.DataFrame) -> pd.DataFrame | None:
    """The ``age``, ``sex``, ``site`` columns of a subject table (``None`` if any column is absent)."""
    from .conditional import COVARIATES

    if not all(c in table.columns for c in COVARIATES):
        return None
    return table[list(COVARIATES)].reset_index(drop=True)


@dataclass(frozen=True)
class EnsembleResult:
    """What :func:`build_normative_model` trained: one cross-fitted member per fold."""

    out_dir: Path
    best_checkpoint: Path
    members: list
    train_seconds: float
    epochs: list[int]
    best_val_loss: float
    reused: bool = False

    @property
    def metrics_csv(self) -> list[Path]:
        return [m.metrics_csv for m in self.members]


def build_normative_model(
    table: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    n_folds: int = 2,
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
    reuse: bool = False,
):
    """Cross-fit an ensemble of autoencoders, fit its normative statistics and save everything.

    The healthy reference (every non-test healthy subject) is cut into
    ``n_folds`` folds (:func:`~nbutils.normative.data.assign_folds`, unless
    ``table`` already has a ``fold`` column — keep it to retrain on the same
    reference). Member *k* trains on the other folds and early-stops on fold
    *k*; its residuals of fold *k* are out-of-sample, so every reference subject
    contributes one. The members together are the normative model
    (``<out_dir>/ensemble.json``); the statistics (conditional on age, sex and
    site when the table has them) are saved beside it.

    With ``reuse``, a model already in ``out_dir`` that was built from the same
    scans (paths, sizes, modification times, splits and folds) with the same
    settings and seed is loaded instead of trained again (``build_key.json``
    records what it was built from; it is written last, so only a finished
    build is ever reused). ``EnsembleResult.reused`` says which happened.

    Returns
    -------
    (EnsembleResult, NormativeStats, EnsembleAutoencoder)
    """
    from nbutils.io import write_json, write_table

    from .data import NormativeDataModule, assign_folds, fold_table, load_volumes
    from .deviation import residual
    from .model import EnsembleAutoencoder, reconstruct
    from .stats import save_stats
    from .train import load_autoencoder, train_autoencoder

    out_dir = Path(out_dir)
    if "fold" not in table.columns:
        table = assign_folds(table, n_folds, seed)
    n_folds = int(table["fold"].max()) + 1
    key = _build_key(table, {"model": model, "data": data, "max_epochs": max_epochs, "patience": patience,
                             "seed": seed, "max_minutes": max_minutes, "limit_train_batches": limit_train_batches,
                             "stats_options": _options_key(stats_options)})  # fmt: skip
    if reuse:
        built = _load_build(out_dir, key)
        if built is not None:
            return built
    (out_dir / "build_key.json").unlink(missing_ok=True)
    members, results, residuals, volumes, rows = [], [], [], [], []
    for k in range(n_folds):
        result = train_autoencoder(
            fold_table(table, k), out_dir / f"fold-{k}", model=model, data=data,
            max_epochs=max_epochs, patience=patience, seed=seed * 100 + k, accelerator=accelerator,
            devices=devices, strategy=strategy, num_nodes=num_nodes,
            limit_train_batches=limit_train_batches, max_minutes=max_minutes, progress=progress,
        )  # fmt: skip
        net = load_autoencoder(result.best_checkpoint)
        held_out = table[table["fold"] == k]
        vols = load_volumes(held_out["path"], progress=progress)
        mask = NormativeDataModule(table, mask=(data or {}).get("mask"))._mask(vols.shape[1:])
        residuals.append(residual(vols, reconstruct(net, vols), mask))
        volumes.append(vols)
        rows.append(held_out)
        members.append(net)
        results.append(result)
    reference = pd.concat(rows, ignore_index=True)
    checkpoint = out_dir / "ensemble.json"
    write_json(checkpoint, {"members": [str(r.best_checkpoint.relative_to(out_dir)) for r in results]})
    write_table(out_dir / "subjects.tsv", table)
    trainings = [json.loads((r.out_dir / "training.json").read_text()) for r in results]
    training = {**{k: trainings[0][k] for k in ("model", "data", "max_epochs", "patience",
                                                  "max_minutes", "accelerator")},
                "n_folds": n_folds, "seed": seed,
                "epochs": [t["epochs"] for t in trainings],
                "stopped_by": sorted({t["stopped_by"] for t in trainings}),
                "train_seconds": round(sum(t["train_seconds"] for t in trainings), 2),
                "best_val_loss": float(np.mean([t["best_val_loss"] for t in trainings]))}  # fmt: skip
    write_json(out_dir / "training.json", training)
    prov = {
        "checkpoint": checkpoint.name,
        "data_source": data_source,
        "training": training,
        "reference_subjects": reference["participant_id"].tolist(),
        "reference": f"{len(reference)} healthy subjects, cross-fitted over {n_folds} folds",
        "stats_options": {k: v for k, v in (stats_options or {}).items() if k != "atlas_data"},
    }
    residuals, volumes = np.concatenate(residuals), np.concatenate(volumes)
    stats = normative_stats_from_residuals(
        residuals, volumes, mask, covariates_of(reference), provenance=prov, **(stats_options or {}),
    )  # fmt: skip
    save_stats(stats, checkpoint)
    ensemble = EnsembleAutoencoder(members).eval()
    from .guard import fit_guard_beside

    # scans unlike the reference get a warning; its ranges come from the out-of-fold residuals
    fit_guard_beside(ensemble, stats, volumes, checkpoint, residuals=residuals)
    result = EnsembleResult(out_dir, checkpoint, results, training["train_seconds"],
                            training["epochs"], training["best_val_loss"])
    write_json(out_dir / "build_key.json", key)  # last: only a finished build is ever reused
    return result, stats, ensemble


def _options_key(stats_options: dict | None) -> dict:
    """``stats_options`` as plain data: a given atlas (arrays) is represented by its hash."""
    import hashlib

    out = dict(stats_options or {})
    if "atlas_data" in out:
        labels, regions = out["atlas_data"]
        digest = hashlib.sha256(np.ascontiguousarray(labels).tobytes())
        digest.update(regions.to_csv(index=False).encode())
        out["atlas_data"] = digest.hexdigest()
    return out


def _build_key(table: pd.DataFrame, settings: dict) -> dict:
    """What a built model depends on: its settings and every scan (path, size, time, split, fold)."""
    scans = []
    for r in table.sort_values("participant_id").itertuples():
        st = Path(r.path).stat()
        scans.append([str(r.participant_id), str(r.path), st.st_size, st.st_mtime_ns,
                      str(getattr(r, "split", "")), int(r.fold)])  # fmt: skip
    return json.loads(json.dumps({"settings": settings, "scans": scans}, default=str))


def _load_build(out_dir: Path, key: dict):
    """The model built in ``out_dir`` from ``key``, as ``build_normative_model`` returns it, or None."""
    from .stats import load_stats
    from .train import TrainResult, load_autoencoder

    key_path, checkpoint = out_dir / "build_key.json", out_dir / "ensemble.json"
    try:
        if not (key_path.is_file() and checkpoint.is_file()) or json.loads(key_path.read_text()) != key:
            return None
        training = json.loads((out_dir / "training.json").read_text())
        members = []
        for k in range(int(training["n_folds"])):
            fold = out_dir / f"fold-{k}"
            t = json.loads((fold / "training.json").read_text())
            members.append(TrainResult(fold, fold / "checkpoints" / "best.ckpt", fold / "checkpoints" / "last.ckpt",
                                       fold / "logs" / "version_0" / "metrics.csv", t["train_seconds"],
                                       t["epochs"], t["best_val_loss"]))  # fmt: skip
        model, stats = load_autoencoder(checkpoint), load_stats(checkpoint)
    except (OSError, ValueError, KeyError):  # unreadable or from an older format: build again
        return None
    result = EnsembleResult(out_dir, checkpoint, members, training["train_seconds"], training["epochs"],
                            training["best_val_loss"], reused=True)
    return result, stats, model
