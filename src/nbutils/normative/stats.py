"""The normative statistics bundle saved next to a checkpoint, so one file pair runs a report.

``<checkpoint folder>/normative_stats.npz`` holds the arrays (brain mask,
residual and intensity mean/SD maps, regional reference means/SDs);
``normative_stats.json`` holds everything else (smoothing, thresholds at the
healthy false-positive rates, post-processing, atlas, region table, grid,
provenance). The npz is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .conditional import (
    ConditionalVoxelNorm,
    CovariateDesign,
    MissingCovariatesWarning,
    RegionalModel,
    missing_covariates,
)
from .deviation import VoxelNorm
from .regional import MEASURES, RegionalReference, region_statistics

__all__ = ["NormativeStats", "load_stats", "save_stats", "stats_paths"]

STATS_STEM = "normative_stats"
REGIONAL_FOLDER = "normative_regional"


def stats_paths(checkpoint: str | os.PathLike) -> tuple[Path, Path]:
    """``(npz, json)`` paths of the statistics that belong to ``checkpoint``."""
    folder = Path(checkpoint).parent
    return folder / f"{STATS_STEM}.npz", folder / f"{STATS_STEM}.json"


@dataclass(frozen=True)
class NormativeStats:
    """Everything besides the network weights needed to turn a scan into deviation maps.

    Attributes
    ----------
    residual : VoxelNorm
        Norm of autoencoder residuals (held-out healthy validation subjects).
    intensity : VoxelNorm
        Norm of raw intensities (healthy training subjects): the no-network baseline.
    thresholds : dict
        Score thresholds at healthy voxel false-positive rates, e.g.
        ``{"fpr_0.01": 3.1, "fpr_0.05": 2.2}`` (after post-processing).
    postprocessing : dict
        ``score`` (abs/positive/negative), ``median_size``, ``erode``, ``min_size``.
    regional : RegionalReference
        Healthy distribution of region scores.
    atlas : str
        Atlas name for :func:`nbutils.anatomy.load_atlas`.
    resolution : float
        Grid resolution (mm) of :func:`nbutils.anatomy.standard_grid`.
    provenance : dict
        Checkpoint, training summary, data source, reference subjects, versions.
    conditional_residual, conditional_intensity : ConditionalVoxelNorm, optional
        Age/sex/site-conditional norms of the residual and of the intensities;
        ``residual`` and ``intensity`` are then their unconditional fallbacks.
    regional_model : RegionalModel, optional
        PCNtoolkit model of the region scores; ``regional`` is its fallback.
    baseline_thresholds : dict
        ``{"intensity": {...}, "voxel_z": {...}}`` thresholds of the no-network
        baselines at the same healthy FPRs (from the reference subjects).
    """

    residual: VoxelNorm
    intensity: VoxelNorm
    thresholds: dict[str, float]
    postprocessing: dict
    regional: RegionalReference
    atlas: str
    resolution: float
    provenance: dict = field(default_factory=dict)
    conditional_residual: ConditionalVoxelNorm | None = None
    conditional_intensity: ConditionalVoxelNorm | None = None
    regional_model: RegionalModel | None = None
    baseline_thresholds: dict = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """Brain mask of the model grid."""
        return self.residual.mask

    @property
    def conditional(self) -> bool:
        """Whether the reference depends on age, sex and site."""
        return self.conditional_residual is not None

    def uses_covariates(self, covariates: pd.DataFrame | None) -> bool:
        """Whether ``covariates`` can be used; warns once when the fallback is taken instead."""
        if not self.conditional:
            return False
        missing = missing_covariates(covariates)
        if missing:
            import warnings

            warnings.warn(f"no {', '.join(missing)} for this scan: it is compared with the "
                          "unconditional healthy reference (all ages, sexes and sites)",
                          MissingCovariatesWarning, stacklevel=3)  # fmt: skip
            return False
        return True

    def residual_z(self, residuals: np.ndarray, covariates: pd.DataFrame | None = None) -> np.ndarray:
        """z-maps of residual maps against healthy people like each subject (or all of them)."""
        if self.uses_covariates(covariates):
            return self.conditional_residual.z(residuals, covariates)
        return self.residual.z(residuals)

    def intensity_z(self, volumes: np.ndarray, covariates: pd.DataFrame | None = None) -> np.ndarray:
        """z-maps of intensities (the no-network baseline), conditional when possible."""
        if self.uses_covariates(covariates):
            return self.conditional_intensity.z(volumes, covariates)
        return self.intensity.z(volumes)

    def profiles(
        self, z: np.ndarray, labels: np.ndarray, covariates: pd.DataFrame | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Regional profiles ``(N, R)``, total deviations ``(N,)`` and raw region scores of z-maps.

        Conditional (PCNtoolkit) when the model has a regional model and the
        subjects have covariates, otherwise against the unconditional reference.
        """
        ref = self.regional
        z = np.asarray(z)
        raw = region_statistics(z[None] if z.ndim == 3 else z, labels,
                                ref.regions["index"].to_numpy(), self.mask)  # fmt: skip
        if self.regional_model is not None and not missing_covariates(covariates):
            prof = self.regional_model.z(raw[ref.measure], covariates)
            return prof, np.asarray(self.regional_model.total_deviation(prof)), raw
        prof = ref.region_z(raw)
        return prof, np.asarray(ref.total_deviation(prof)), raw


def save_stats(stats: NormativeStats, checkpoint: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``stats`` beside ``checkpoint`` (atomically); return the two paths."""
    from nbutils.io import write_bytes, write_json

    npz_path, json_path = stats_paths(checkpoint)
    ref = stats.regional
    arrays = {
        "mask": stats.mask.astype(np.uint8),
        "residual_mean": stats.residual.mean,
        "residual_sd": stats.residual.sd,
        "intensity_mean": stats.intensity.mean,
        "intensity_sd": stats.intensity.sd,
        "region_index": ref.regions["index"].to_numpy(dtype=np.int64),
    }
    for m in MEASURES:
        arrays[f"region_mean_{m}"] = ref.mean[m]
        arrays[f"region_sd_{m}"] = ref.sd[m]
    conditional = {}
    for name, norm in (("residual", stats.conditional_residual),
                       ("intensity", stats.conditional_intensity)):  # fmt: skip
        if norm is None:
            continue
        arrays[f"conditional_{name}_mean_coef"] = norm.mean_coef
        arrays[f"conditional_{name}_logvar_coef"] = norm.logvar_coef
        conditional[name] = {"design": norm.design.to_dict(), "sigma": norm.sigma,
                             "sd_floor": norm.sd_floor, "scale": norm.scale, "n": norm.n}
    if stats.regional_model is not None:
        stats.regional_model.save(npz_path.parent / REGIONAL_FOLDER)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(npz_path, buf.getvalue())
    meta = {
        "format": 2,
        "conditional": conditional,
        "regional_model": REGIONAL_FOLDER if stats.regional_model is not None else None,
        "baseline_thresholds": stats.baseline_thresholds,
        "residual": {"sigma": stats.residual.sigma, "n": stats.residual.n},
        "intensity": {"sigma": stats.intensity.sigma, "n": stats.intensity.n},
        "thresholds": stats.thresholds,
        "postprocessing": stats.postprocessing,
        "atlas": stats.atlas,
        "resolution": stats.resolution,
        "regional": {
            "measure": ref.measure,
            "total_mean": ref.total_mean,
            "total_sd": ref.total_sd,
            "n": ref.n,
            "regions": ref.regions.to_dict(orient="list"),
        },
        "provenance": stats.provenance,
    }
    write_json(json_path, meta)
    return npz_path, json_path


def load_stats(checkpoint: str | os.PathLike) -> NormativeStats:
    """Read the statistics saved beside ``checkpoint`` by :func:`save_stats`."""
    npz_path, json_path = stats_paths(checkpoint)
    for p in (npz_path, json_path):
        if not p.exists():
            raise FileNotFoundError(
                f"normative statistics not found: {p} (they are written next to the checkpoint "
                "by nbutils.normative.pipeline.fit_normative_stats + save_stats)"
            )
    meta = json.loads(json_path.read_text())
    if meta.get("format") not in (1, 2):
        raise ValueError(f"{json_path}: unsupported format {meta.get('format')!r}")
    with np.load(npz_path, allow_pickle=False) as z:
        arr = {k: z[k] for k in z.files}
    mask = arr["mask"] > 0
    residual = VoxelNorm(arr["residual_mean"], arr["residual_sd"], mask, **meta["residual"])
    intensity = VoxelNorm(arr["intensity_mean"], arr["intensity_sd"], mask, **meta["intensity"])
    reg = meta["regional"]
    regions = pd.DataFrame(reg["regions"])
    if not np.array_equal(regions["index"].to_numpy(), arr["region_index"]):
        raise ValueError(f"{npz_path} and {json_path} disagree on the atlas regions")
    regional = RegionalReference(
        regions=regions,
        mean={m: arr[f"region_mean_{m}"] for m in MEASURES},
        sd={m: arr[f"region_sd_{m}"] for m in MEASURES},
        measure=reg["measure"],
        total_mean=float(reg["total_mean"]),
        total_sd=float(reg["total_sd"]),
        n=int(reg["n"]),
    )
    fallbacks = {"residual": residual, "intensity": intensity}
    conditional = {}
    for name, info in meta.get("conditional", {}).items():
        conditional[name] = ConditionalVoxelNorm(
            arr[f"conditional_{name}_mean_coef"], arr[f"conditional_{name}_logvar_coef"],
            CovariateDesign(**info["design"]), mask, float(info["sigma"]), float(info["sd_floor"]),
            float(info["scale"]), int(info["n"]), fallbacks[name],
        )  # fmt: skip
    regional_model = None
    if meta.get("regional_model"):
        regional_model = RegionalModel.load(npz_path.parent / meta["regional_model"])
    return NormativeStats(
        residual=residual,
        intensity=intensity,
        thresholds={k: float(v) for k, v in meta["thresholds"].items()},
        postprocessing=meta["postprocessing"],
        regional=regional,
        atlas=meta["atlas"],
        resolution=float(meta["resolution"]),
        provenance=meta.get("provenance", {}),
        conditional_residual=conditional.get("residual"),
        conditional_intensity=conditional.get("intensity"),
        regional_model=regional_model,
        baseline_thresholds=meta.get("baseline_thresholds", {}),
    )
