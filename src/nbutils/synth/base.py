"""The base anatomy every synthetic subject is warped from.

Built once per process (cached) from the real MNI152 2009 template, its GM/WM
maps and the Neuromorphometrics atlas (:mod:`nbutils.anatomy`): tissue
fractions, the atlas label map, a residual texture (what the template shows
beyond a three-tissue model, e.g. darker deep grey nuclei), a cortical-ribbon
weight for age-related thinning and, for whole-head images, the distance
outside the brain mask from which scalp and skull are drawn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from nbutils import anatomy
from nbutils.anatomy import Grid

__all__ = ["BaseAnatomy", "STRUCTURES", "base_anatomy", "head_grid", "measure_base", "regional_weights"]

#: Structure groups whose volume the generator controls, as label-name regexes.
STRUCTURES: dict[str, str] = {
    "hippocampus_L": r"^Left_Hippocampus$",
    "hippocampus_R": r"^Right_Hippocampus$",
    "amygdala_L": r"^Left_Amygdala$",
    "amygdala_R": r"^Right_Amygdala$",
    "entorhinal_L": r"^Left_Ent_",
    "entorhinal_R": r"^Right_Ent_",
    "parahippocampal_L": r"^Left_PHG_",
    "parahippocampal_R": r"^Right_PHG_",
    # lateral + third ventricles; the temporal horn (Inf_Lat_Vent) is not warped but filled with the
    # CSF that replaces medial temporal tissue loss (see ``subject.mtl_csf``)
    "ventricles": r"Lateral_Ventricle|3rd_Ventricle",
}
#: Regional weight of disease (AD/MCI) cortical thinning, by Neuromorphometrics name regex. The "AD
#: signature" of Dickerson et al. 2009 (Cereb Cortex 19:497): medial temporal (entorhinal,
#: parahippocampal), temporal pole, inferior and middle temporal, inferior parietal (angular,
#: supramarginal), precuneus, posterior cingulate at 1; the signature's weaker parts (superior
#: parietal, superior frontal, fusiform, superior temporal) at 0.6; every other cortical label at
#: :data:`AD_CORTEX_BACKGROUND`.
AD_CORTEX_WEIGHT: dict[str, float] = {
    r"_(Ent|PHG|TMP|ITG|MTG|AnG|SMG|PCu|PCgG)_": 1.0,
    r"_(SPL|SFG|FuG|STG)_": 0.6,
}
AD_CORTEX_BACKGROUND = 0.2
#: Regional weight of age-related thinning: frontal (incl. orbital and medial), anterior cingulate
#: and insula thin fastest with age (Salat et al. 2004, Cereb Cortex 14:721; Fjell et al. 2009,
#: Cereb Cortex 19:2001), every other cortical label at :data:`AGEING_CORTEX_BACKGROUND` (global
#: thinning). A different pattern from :data:`AD_CORTEX_WEIGHT`, so age and disease are separable.
AGEING_CORTEX_WEIGHT: dict[str, float] = {
    r"_(SFG|MFG|MSFG|OpIFG|TrIFG|OrIFG|AOrG|LOrG|MOrG|POrG|FRP|GRe|MFC|ACgG|SCA|FO|AIns|PIns)_": 1.0,
}
AGEING_CORTEX_BACKGROUND = 0.45
#: Width (mm) of the smoothing that shapes each structure's deformation field.
FIELD_SIGMA_MM = {"ventricles": 5.0, "hippocampus": 2.5, "amygdala": 2.5}
_DEFAULT_SIGMA = 3.0

#: Extra room (mm) around the MNI brain box for scalp, skull, face and neck.
HEAD_PAD_MM = ((20.0, 20.0), (22.0, 24.0), (32.0, 20.0))


@dataclass(frozen=True)
class StructureField:
    """Unit displacement field ``∇(G_σ * 1_structure)`` on a local 2 mm box.

    ``data`` has shape ``(3, nx, ny, nz)`` in mm per unit amplitude; the box
    starts at world point ``origin`` with spacing ``spacing``. ``max_jac`` is the
    largest Frobenius norm of its Jacobian, so amplitudes below ``0.7 / max_jac``
    keep the warp invertible.
    """

    name: str
    labels: tuple[int, ...]
    origin: np.ndarray
    spacing: float
    data: np.ndarray
    max_jac: float

    @property
    def upper(self) -> np.ndarray:
        """World coordinates of the box's last voxel."""
        return self.origin + (np.array(self.data.shape[1:]) - 1) * self.spacing

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Field value at world points ``(N, 3)``; zero outside the box."""
        out = np.zeros_like(points)
        inside = np.flatnonzero(np.all((points >= self.origin) & (points <= self.upper), axis=1))
        if inside.size:
            sub = ((points[inside] - self.origin) / self.spacing).T
            for k in range(3):
                out[inside, k] = ndi.map_coordinates(self.data[k], sub, order=1, prefilter=False)
        return out


@dataclass(frozen=True)
class BaseAnatomy:
    """Template-space arrays on one grid (all read-only).

    Attributes
    ----------
    grid : Grid
        Grid of the arrays (MNI mm).
    gm, wm, csf : numpy.ndarray
        Tissue fractions (sum to 1 inside ``mask``).
    mask : numpy.ndarray
        Brain (intracranial) mask, float 0/1.
    labels : numpy.ndarray
        Neuromorphometrics labels (int16).
    texture : numpy.ndarray
        Template intensity minus its three-tissue fit, in units of the WM–CSF contrast.
    cortex : numpy.ndarray
        0–1 weight of the cortical ribbon next to sulcal CSF (where cortex thins).
    cortex_ageing, cortex_ad : numpy.ndarray
        ``cortex`` times the regional weight of age-related and of AD-signature thinning
        (:data:`AGEING_CORTEX_WEIGHT`, :data:`AD_CORTEX_WEIGHT`).
    outside_mm : numpy.ndarray
        Distance (mm) outside the closed brain mask; 0 inside.
    """

    grid: Grid
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    texture: np.ndarray
    cortex: np.ndarray
    cortex_ageing: np.ndarray
    cortex_ad: np.ndarray
    outside_mm: np.ndarray


def head_grid(resolution: float = 1.0) -> Grid:
    """MNI grid covering the whole head (brain box plus scalp, skull, face, neck)."""
    box = np.array(anatomy.BRAIN_BOX_MM) + np.array(HEAD_PAD_MM) * np.array([-1.0, 1.0])
    n = np.ceil((box[:, 1] - box[:, 0]) / resolution).astype(int) + 1
    affine = np.diag([resolution, resolution, resolution, 1.0])
    affine[:3, 3] = box[:, 0]
    return Grid(shape=tuple(int(v) for v in n), affine=affine, resolution=float(resolution))


def _texture(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, csf: np.ndarray, mask: np.ndarray) -> np.ndarray:
    inside = mask > 0
    design = np.stack([csf[inside], gm[inside], wm[inside]], axis=1)
    mu, *_ = np.linalg.lstsq(design, t1[inside], rcond=None)
    fit = csf * mu[0] + gm * mu[1] + wm * mu[2]
    tex = np.where(inside, (t1 - fit) / max(mu[2] - mu[0], 1e-6), 0.0)
    return np.clip(tex, -0.35, 0.35).astype(np.float32)


def regional_weights(
    labels: np.ndarray, table: pd.DataFrame, weights: dict[str, float], background: float
) -> np.ndarray:
    """Weight of each voxel's cortical label (``background`` for unlisted cortical labels, 0 below 100).

    ``table`` is the atlas label table (``index``, ``name``); ``weights`` maps name regexes to weights.
    """
    lut = np.zeros(max(int(labels.max()), int(table["index"].max())) + 1, np.float32)
    for idx, name in zip(table["index"], table["name"], strict=True):
        if idx >= 100:
            lut[idx] = next((w for rx, w in weights.items() if re.search(rx, name)), background)
    return lut[np.clip(labels, 0, None)]


def base_anatomy(grid: Grid) -> BaseAnatomy:
    """Build (once per process and grid) the base anatomy on ``grid``."""
    return _base_anatomy(anatomy._grid_key(grid))


@lru_cache(maxsize=4)
def _base_anatomy(key: tuple) -> BaseAnatomy:
    shape, affine, resolution = key
    grid = Grid(shape=shape, affine=np.array(affine).reshape(4, 4), resolution=resolution)
    arrays = anatomy._template_arrays(anatomy._grid_key(grid))
    gm, wm, csf = (arrays[k].astype(np.float32) for k in ("gm", "wm", "csf"))
    mask = arrays["mask"].astype(np.float32)
    atlas = anatomy.load_atlas("neuromorphometrics", grid)
    labels = atlas.data().astype(np.int16)
    labels[mask == 0] = 0
    texture = _texture(arrays["t1"], gm, wm, csf, mask)
    vox = grid.resolution
    # sulcal CSF = CSF outside the ventricles, plus the space outside the brain (the atlas "CSF" label
    # alone, used before version 2, covers ~150 voxels, which left the ribbon weight ~0 everywhere)
    ventricles = np.isin(labels, atlas.index_of(r"Ventricle|Inf_Lat_Vent"))
    sulcal = ndi.gaussian_filter(csf * ~ventricles + (mask == 0), 1.5 / vox)
    cortex = (np.clip(sulcal / 0.25, 0, 1) * (labels >= 100) * (gm > 0.05)).astype(np.float32)
    closed = ndi.binary_closing(mask > 0, iterations=max(1, int(round(4 / vox))))
    closed = ndi.binary_fill_holes(closed)
    outside = ndi.distance_transform_edt(~closed, sampling=vox).astype(np.float32)
    ageing = cortex * regional_weights(labels, atlas.labels, AGEING_CORTEX_WEIGHT, AGEING_CORTEX_BACKGROUND)
    ad = cortex * regional_weights(labels, atlas.labels, AD_CORTEX_WEIGHT, AD_CORTEX_BACKGROUND)
    out = BaseAnatomy(grid, gm, wm, csf, mask, labels, texture, cortex, ageing, ad, outside)
    for a in (gm, wm, csf, mask, labels, texture, cortex, ageing, ad, outside):
        a.setflags(write=False)
    return out


@dataclass(frozen=True)
class Measure:
    """What the volume measurements need: 2 mm labels and the structure fields."""

    grid: Grid
    labels: np.ndarray
    n_labels: int
    fields: dict[str, StructureField]
    structure_labels: dict[str, tuple[int, ...]]
    label_table: object  # pandas.DataFrame with index, name, hemisphere


def _structure_field(name: str, ids: tuple[int, ...], labels: np.ndarray, grid: Grid) -> StructureField:
    sigma = next((s for k, s in FIELD_SIGMA_MM.items() if name.startswith(k)), _DEFAULT_SIGMA)
    vox = grid.resolution
    ind = np.isin(labels, ids).astype(np.float32)
    smooth = ndi.gaussian_filter(ind, sigma / vox)
    grad = np.stack(np.gradient(smooth, vox))
    mag = np.sqrt((grad**2).sum(0))
    keep = np.argwhere(mag > 1e-3 * mag.max())
    lo = np.maximum(keep.min(0) - 1, 0)
    hi = np.minimum(keep.max(0) + 2, np.array(labels.shape))
    data = grad[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
    jac = np.stack([np.stack(np.gradient(data[k], vox)) for k in range(3)])
    max_jac = float(np.sqrt((jac**2).sum((0, 1))).max())
    origin = grid.world_coords(lo.astype(float))
    data.setflags(write=False)
    return StructureField(name, ids, origin, vox, data, max_jac)


@lru_cache(maxsize=1)
def measure_base() -> Measure:
    """2 mm label map and unit structure fields (cached)."""
    grid = anatomy.standard_grid(2.0)
    atlas = anatomy.load_atlas("neuromorphometrics", grid)
    labels = atlas.data().astype(np.int32)
    ids = {name: tuple(atlas.index_of(rx)) for name, rx in STRUCTURES.items()}
    for name, v in ids.items():
        if not v:
            raise RuntimeError(f"Neuromorphometrics atlas has no label for structure {name!r}")
    fields = {name: _structure_field(name, v, labels, grid) for name, v in ids.items()}
    labels.setflags(write=False)
    return Measure(grid, labels, int(labels.max()) + 1, fields, ids, atlas.labels.copy())
