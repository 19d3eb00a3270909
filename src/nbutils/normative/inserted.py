"""Insert synthetic anomalies into healthy scans, to choose models without touching test subjects.

Model settings (architecture, loss) are chosen on healthy *validation* scans
into which we paint anomalies ourselves: ellipsoids brighter or darker than
the surrounding tissue, of several sizes, inside the brain mask. The truth is
known exactly and no test subject (and no lesion the synthetic generator
makes) is involved. :func:`insert_anomalies` never modifies its input.

:func:`insert_atrophy` shrinks one atlas region of a scan by a method of its
own (not the synthetic generator's deformation): the region's outermost
voxels become CSF, so any region of any scan, real or synthetic, can be given
a known volume loss to check that the regional profile finds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = ["InsertedAnomalies", "csf_level", "insert_anomalies", "insert_atrophy"]


@dataclass(frozen=True)
class InsertedAnomalies:
    """Scans with inserted anomalies.

    Attributes
    ----------
    volumes : float32 array ``(N, X, Y, Z)``
        Copies of the input scans with the anomalies painted in.
    truth : bool array ``(N, X, Y, Z)``
        The anomalous voxels.
    table : DataFrame
        One row per anomaly: ``scan``, ``centre`` (voxel), ``voxels``, ``volume_cm3``,
        ``delta`` (intensity change in units of the scan's in-mask SD) and
        ``direction`` ("brighter" or "darker").
    """

    volumes: np.ndarray
    truth: np.ndarray
    table: pd.DataFrame


def _ellipsoid(shape, centre, semi_axes) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    dist = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, semi_axes, strict=True))
    return dist <= 1.0


def insert_anomalies(
    volumes: np.ndarray,
    mask: np.ndarray,
    *,
    per_scan: int = 2,
    volume_cm3: tuple[float, float] = (0.5, 20.0),
    delta: tuple[float, float] = (0.8, 1.6),
    voxel_volume_mm3: float = 8.0,
    inside: float = 0.9,
    seed: int = 0,
    max_tries: int = 200,
) -> InsertedAnomalies:
    """Paint ``per_scan`` separate (not touching) ellipsoids of changed intensity into each scan.

    Sizes are log-uniform in ``volume_cm3``; each ellipsoid has random semi-axes
    (ratios 0.7-1.4) and a random centre inside ``mask``, keeps at least
    ``inside`` of its volume in the mask and is clipped to it. Its voxels get
    ``+-delta * sd`` added (``delta`` uniform in the range, the sign alternating
    brighter/darker so both occur equally), where ``sd`` is the scan's intensity
    SD inside the mask.

    Parameters
    ----------
    volumes : array ``(N, X, Y, Z)`` or ``(X, Y, Z)``
        Healthy scans (not modified).
    mask : array ``(X, Y, Z)``
        Brain mask: anomalies lie inside it.
    per_scan : int
        Anomalies per scan.
    volume_cm3 : (low, high)
        Range of the anomaly volumes in cm³ (before clipping to the mask).
    delta : (low, high)
        Range of the intensity change, in units of the in-mask SD.
    voxel_volume_mm3 : float
        Volume of one voxel in mm³ (8 on the 2 mm grid).
    inside : float
        Minimum share of an ellipsoid inside the mask.
    seed : int
        Seed of the random generator: the same seed gives the same anomalies.
    max_tries : int
        Attempts to place one anomaly before giving up with an error.

    Returns
    -------
    InsertedAnomalies
    """
    vols = np.asarray(volumes, dtype=np.float32)
    single = vols.ndim == 3
    vols = vols[None] if single else vols
    mask = np.asarray(mask) > 0
    if vols.ndim != 4 or vols.shape[1:] != mask.shape:
        raise ValueError(f"volumes {np.shape(volumes)} and mask {mask.shape} do not match")
    lo, hi = volume_cm3
    if not 0 < lo <= hi or not voxel_volume_mm3 > 0 or per_scan < 1:
        raise ValueError(
            f"need 0 < volume_cm3[0] <= volume_cm3[1] (got {volume_cm3}), voxel_volume_mm3 > 0 "
            f"(got {voxel_volume_mm3}) and per_scan >= 1 (got {per_scan})"
        )
    min_vox = lo * 1000 / voxel_volume_mm3
    if min_vox > inside * mask.sum():
        raise ValueError(f"mask of {int(mask.sum())} voxels cannot hold a {lo} cm³ anomaly")
    rng = np.random.default_rng(seed)
    centres = np.argwhere(mask)
    out, truth = vols.copy(), np.zeros(vols.shape, dtype=bool)
    rows = []
    for i in range(len(vols)):
        sd = float(vols[i][mask].std()) or 1.0
        for j in range(per_scan):
            blob = _place(rng, mask, centres, truth[i], lo, hi, voxel_volume_mm3, inside, max_tries)
            sign = 1.0 if (i * per_scan + j) % 2 == 0 else -1.0
            d = sign * float(rng.uniform(*delta))
            out[i][blob] += d * sd
            truth[i] |= blob
            rows.append({
                "scan": i, "centre": tuple(int(c) for c in np.argwhere(blob).mean(0).round()),
                "voxels": int(blob.sum()), "volume_cm3": blob.sum() * voxel_volume_mm3 / 1000.0,
                "delta": d, "direction": "brighter" if d > 0 else "darker",
            })  # fmt: skip
    if single:
        out, truth = out[0], truth[0]
    return InsertedAnomalies(out, truth, pd.DataFrame(rows))


def _place(rng, mask, centres, taken, lo, hi, voxel_volume_mm3, inside, max_tries) -> np.ndarray:
    """One ellipsoid (clipped to ``mask``) that misses ``taken`` and lies mostly inside ``mask``."""
    for _ in range(max_tries):
        n_vox = np.exp(rng.uniform(np.log(lo), np.log(hi))) * 1000 / voxel_volume_mm3
        ratios = rng.uniform(0.7, 1.4, size=3)
        r = (3 * n_vox / (4 * np.pi * ratios.prod())) ** (1 / 3)
        centre = centres[rng.integers(len(centres))]
        blob = _ellipsoid(mask.shape, centre, np.maximum(r * ratios, 0.5))
        if not blob.any():
            continue
        clipped = blob & mask
        apart = not (ndimage.binary_dilation(clipped) & taken).any()  # separate lesions
        if clipped.sum() >= inside * blob.sum() and apart:
            return clipped
    raise ValueError(
        f"could not place an anomaly of {lo}-{hi} cm³ in {max_tries} tries "
        "(mask too small or too many anomalies per scan)"
    )


def csf_level(volume: np.ndarray, csf_probability: np.ndarray, threshold: float = 0.9) -> float:
    """A scan's CSF intensity: its median where a CSF probability map exceeds ``threshold``.

    Parameters
    ----------
    volume : array ``(X, Y, Z)``
        The scan.
    csf_probability : array ``(X, Y, Z)``
        CSF probability on the scan's grid (e.g. the template's,
        :func:`nbutils.anatomy.load_tissue_maps`).
    threshold : float
        Probability above which a voxel counts as CSF.

    Returns
    -------
    float
    """
    vol = np.asarray(volume)
    csf = np.asarray(csf_probability) > threshold
    if vol.shape != csf.shape:
        raise ValueError(f"volume {vol.shape} and CSF map {csf.shape} do not match")
    if not csf.any():
        raise ValueError(f"no voxel has CSF probability above {threshold}")
    return float(np.median(vol[csf]))


def insert_atrophy(
    volume: np.ndarray, labels: np.ndarray, region: int, loss: float, fill: float
) -> tuple[np.ndarray, np.ndarray]:
    """Shrink one atlas region by ``loss`` of its volume, its outermost voxels turned into CSF.

    The voxels of label ``region`` are ordered by their distance to the region's
    border (Euclidean distance transform), outermost first, ties broken by
    intensity (darkest first: those already partly CSF); the first
    ``round(loss * n)`` of them get the intensity ``fill``. The region loses
    tissue from its surface and CSF takes its place, as in atrophy, without any
    deformation of the rest of the scan.

    Parameters
    ----------
    volume : array ``(X, Y, Z)``
        The scan (not modified).
    labels : int array ``(X, Y, Z)``
        Atlas labels on the scan's grid.
    region : int
        The label to shrink.
    loss : float
        Fraction of the region's voxels that become CSF, in (0, 1).
    fill : float
        The CSF intensity (:func:`csf_level`).

    Returns
    -------
    atrophied : float32 array ``(X, Y, Z)``
        A copy of ``volume`` with the region shrunk.
    changed : bool array ``(X, Y, Z)``
        The voxels that became CSF.
    """
    vol = np.asarray(volume, dtype=np.float32)
    lab = np.asarray(labels)
    if vol.shape != lab.shape:
        raise ValueError(f"volume {vol.shape} and labels {lab.shape} do not match")
    if not 0.0 < loss < 1.0:
        raise ValueError(f"loss must be a fraction in (0, 1), got {loss}")
    inside = lab == region
    n = int(inside.sum())
    if n == 0:
        raise ValueError(f"label {region} is not in the atlas labels")
    depth = ndimage.distance_transform_edt(inside)
    idx = np.flatnonzero(inside)
    order = np.lexsort((vol.ravel()[idx], depth.ravel()[idx]))  # outermost first, then darkest
    changed = np.zeros(vol.shape, dtype=bool)
    changed.ravel()[idx[order[: int(round(loss * n))]]] = True
    out = vol.copy()
    out[changed] = fill
    return out, changed
