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

from .deviation import VoxelNorm
from .regional import MEASURES, RegionalReference

__all__ = ["NormativeStats", "load_stats", "save_stats", "stats_paths"]

STATS_STEM = "normative_stats"


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
    """

    residual: VoxelNorm
    intensity: VoxelNorm
    thresholds: dict[str, float]
    postprocessing: dict
    regional: RegionalReference
    atlas: str
    resolution: float
    provenance: dict = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """Brain mask of the model grid."""
        return self.residual.mask


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
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(npz_path, buf.getvalue())
    meta = {
        "format": 1,
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
    if meta.get("format") != 1:
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
    return NormativeStats(
        residual=residual,
        intensity=intensity,
        thresholds={k: float(v) for k, v in meta["thresholds"].items()},
        postprocessing=meta["postprocessing"],
        regional=regional,
        atlas=meta["atlas"],
        resolution=float(meta["resolution"]),
        provenance=meta.get("provenance", {}),
    )
