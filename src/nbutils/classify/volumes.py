"""Cohort volumes as arrays for the classifiers, optionally on a coarser working grid.

The MNI-space cohort lies on :func:`nbutils.anatomy.standard_grid` (80×96×80
at 2 mm). Training on CPU is much faster on a coarser grid, so
:func:`load_volumes` can resample to a *working resolution* (3 mm gives
53×64×53): intensities are **area-averaged** (no aliasing), label volumes
use nearest neighbour.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

__all__ = [
    "CORTEX_REGIONS",
    "Task",
    "derivative_path",
    "load_task",
    "load_volumes",
    "resize_labels",
    "resize_volumes",
    "upsample_maps",
    "working_shape",
]

#: Neuromorphometrics cortical labels (``Right_ACgG_anterior_cingulate_gyrus`` ...: an
#: abbreviation followed by a lower-case description; ``(?-i:...)`` keeps that case-sensitive
#: under :meth:`~nbutils.anatomy.Atlas.index_of`). The AD target regions are
#: :data:`nbutils.anatomy.AD_TARGET_PATTERN`.
CORTEX_REGIONS = r"^(Right|Left)_[A-Za-z]+_(?-i:[a-z])"


def working_shape(shape: Sequence[int], resolution: float, working_resolution: float) -> tuple[int, int, int]:
    """Grid shape after resampling voxels of ``resolution`` mm to ``working_resolution`` mm."""
    if working_resolution < resolution:
        raise ValueError(
            f"working_resolution ({working_resolution} mm) must not be finer than the data ({resolution} mm)"
        )
    return tuple(max(1, int(round(s * resolution / working_resolution))) for s in shape)  # type: ignore[return-value]


def resize_volumes(volumes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Area-average ``(N, *spatial)`` volumes down to ``shape`` (identity if equal)."""
    volumes = np.asarray(volumes, np.float32)
    if tuple(volumes.shape[1:]) == tuple(shape):
        return volumes
    out = F.adaptive_avg_pool3d(torch.from_numpy(volumes)[:, None], tuple(shape))
    return out[:, 0].numpy()


def resize_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of one integer label volume to ``shape``."""
    labels = np.asarray(labels)
    if labels.shape == tuple(shape):
        return labels
    t = torch.from_numpy(labels.astype(np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="nearest")[0, 0].numpy().astype(labels.dtype)


def load_volumes(
    paths: Sequence[str | os.PathLike],
    resolution: float | None = None,
    working_resolution: float | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Read NIfTI volumes (same grid) into a float32 array ``(N, *spatial)``.

    Parameters
    ----------
    paths : sequence of path-like
        Images on one common grid (e.g. the MNI-space cohort).
    resolution : float, optional
        Voxel size of the images (read from the first header when omitted).
    working_resolution : float, optional
        Resample to this voxel size (mm) by area averaging; ``None`` keeps the grid.
    progress : bool
        Show a progress bar.
    """
    paths = list(paths)
    if not paths:
        raise ValueError("no image paths given")
    first = nib.load(paths[0])
    shape = first.shape[:3]
    if resolution is None:
        resolution = float(np.mean(first.header.get_zooms()[:3]))
    target = working_shape(shape, resolution, working_resolution or resolution)
    out = np.empty((len(paths), *target), np.float32)
    for i, path in enumerate(tqdm(paths, desc="loading volumes", disable=not progress)):
        img = nib.load(path)
        if img.shape[:3] != shape:
            raise ValueError(f"{path}: shape {img.shape[:3]} differs from the first image's {shape}")
        data = np.asarray(img.dataobj, dtype=np.float32)
        out[i] = resize_volumes(data[None], target)[0]
    return out


@dataclass
class Task:
    """A classification task ready for training.

    Attributes
    ----------
    table : pandas.DataFrame
        The dataset rows used (from :func:`nbutils.datasets.load_bids`), with
        added ``label`` (class name) and ``y`` (class index) columns.
    images : numpy.ndarray
        ``(N, 1, *shape)`` float32 volumes on the working grid.
    y : numpy.ndarray
        Class indices.
    subjects : list of str
        ``participant_id`` of every image.
    class_names : list of str
        Class names in index order.
    """

    table: pd.DataFrame
    images: np.ndarray
    y: np.ndarray
    subjects: list[str]
    class_names: list[str]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])


def load_task(
    table: pd.DataFrame,
    classes: Mapping[str, Sequence[str]],
    working_resolution: float | None = None,
    resolution: float | None = None,
    max_per_class: Mapping[str, int] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Task:
    """Select the scans of a task from a dataset table and load them.

    Parameters
    ----------
    table : pandas.DataFrame
        Needs ``participant_id``, ``diagnosis`` and ``path``.
    classes : mapping
        Class name → diagnoses it contains, in class-index order, e.g.
        ``{"CN": ["CN"], "AD": ["AD"]}``.
    working_resolution, resolution : float, optional
        See :func:`load_volumes`.
    max_per_class : mapping, optional
        Class name → at most this many subjects (a seeded random choice),
        e.g. to keep "no tumour" controls as many as each tumour type.
    seed : int
        Seed of that choice.
    """
    missing = {"participant_id", "diagnosis", "path"} - set(table.columns)
    if missing:
        raise ValueError(f"dataset table lacks column(s) {sorted(missing)}")
    rng = np.random.default_rng(seed)
    parts = []
    for k, (name, diagnoses) in enumerate(classes.items()):
        rows = table[table["diagnosis"].isin(list(diagnoses))].sort_values("participant_id")
        if rows.empty:
            raise ValueError(f"no scans with diagnosis {list(diagnoses)} for class {name!r}")
        limit = (max_per_class or {}).get(name)
        if limit is not None and rows["participant_id"].nunique() > limit:
            keep = rng.choice(sorted(rows["participant_id"].unique()), size=limit, replace=False)
            rows = rows[rows["participant_id"].isin(keep)]
        parts.append(rows.assign(label=name, y=k))
    chosen = pd.concat(parts, ignore_index=True)
    images = load_volumes(chosen["path"].tolist(), resolution, working_resolution, progress=progress)
    return Task(
        table=chosen,
        images=images[:, None],
        y=chosen["y"].to_numpy(int),
        subjects=chosen["participant_id"].astype(str).tolist(),
        class_names=list(classes),
    )


def derivative_path(root: str | os.PathLike, participant_id: str, suffix: str, pipeline: str = "synth") -> Path:
    """``<root>/derivatives/<pipeline>/<sub>/anat/<sub>_<suffix>`` (e.g. ``atlas-neuromorphometrics_dseg.nii.gz``)."""
    path = Path(root) / "derivatives" / pipeline / participant_id / "anat" / f"{participant_id}_{suffix}"
    if not path.exists():
        raise FileNotFoundError(f"derivative not found: {path}")
    return path


def upsample_maps(maps: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of ``(N, *spatial)`` maps (e.g. saliency on the working grid) to ``shape``."""
    maps = np.asarray(maps, np.float32)
    if tuple(maps.shape[1:]) == tuple(shape):
        return maps
    t = torch.from_numpy(maps)[:, None]
    return F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)[:, 0].numpy()
