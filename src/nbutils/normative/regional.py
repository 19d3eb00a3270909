"""Regional deviation profiles: atlas aggregation of voxel z-maps, scored against healthy people.

For each atlas region and subject we summarise the voxel z-map by its mean
(signed) and by the 95th percentile of ``|z|``. Each region score is then
z-scored against the same score in healthy reference subjects, giving the
subject's **regional deviation profile** (0 = typical, ±1.96 = edge of the
95 % normative range), and the profile is summarised in one **total
deviation** (Pinaya et al. 2019): the mean squared profile, itself z-scored
against the healthy reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "MEASURES",
    "RegionalReference",
    "direction_of",
    "fit_regional_reference",
    "region_centroids",
    "region_statistics",
    "top_regions",
]

#: Region summaries of a voxel z-map.
MEASURES = ("mean_z", "mean_abs_z", "p95_abs_z")


def _check_labels(labels: np.ndarray, shape) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        raise ValueError(f"atlas shape {labels.shape} does not match map shape {tuple(shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"atlas must hold integer labels, got {labels.dtype}")
    return labels


def region_statistics(
    z: np.ndarray, labels: np.ndarray, indices: list[int] | np.ndarray, mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-region mean z, mean ``|z|`` and 95th percentile of ``|z|``.

    Parameters
    ----------
    z : array ``(X, Y, Z)`` or ``(N, X, Y, Z)``
        Voxel z-maps.
    labels : int array ``(X, Y, Z)``
        Atlas label map.
    indices : list of int
        Region label values, in output order.
    mask : array, optional
        Only voxels inside it count (e.g. the brain mask).

    Returns
    -------
    dict
        ``{measure: array (N, R)}`` for each of :data:`MEASURES`
        (``(R,)`` for a single map). Regions without voxels are NaN.
    """
    z = np.asarray(z, dtype=np.float32)
    single = z.ndim == 3
    stack = z[None] if single else z
    labels = _check_labels(labels, stack.shape[1:])
    use = np.ones(labels.shape, bool) if mask is None else np.asarray(mask) > 0
    indices = np.asarray(indices, dtype=int)
    lab = labels[use]
    order = np.argsort(lab, kind="stable")
    lab_sorted = lab[order]
    starts = np.searchsorted(lab_sorted, indices, side="left")
    ends = np.searchsorted(lab_sorted, indices, side="right")
    out = {m: np.full((len(stack), len(indices)), np.nan, dtype=np.float64) for m in MEASURES}
    vals = stack[:, use][:, order]  # (N, voxels) grouped by region: every subject at once
    for r, (a, b) in enumerate(zip(starts, ends, strict=True)):
        if b > a:
            v = vals[:, a:b]
            av = np.abs(v)
            # row by row: the same float32 summation order as one map alone
            out["mean_z"][:, r] = [row.mean() for row in v]
            out["mean_abs_z"][:, r] = [row.mean() for row in av]
            out["p95_abs_z"][:, r] = np.percentile(av, 95, axis=1)
    return {m: a[0] for m, a in out.items()} if single else out


def region_centroids(labels: np.ndarray, indices: list[int] | np.ndarray) -> np.ndarray:
    """Voxel-space centroid ``(R, 3)`` of each region (rounded to the nearest voxel).

    Regions without voxels get ``-1``. Used by the explorer to move the slices.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    indices = np.asarray(indices, dtype=int)
    with np.errstate(invalid="ignore", divide="ignore"):  # absent labels give NaN
        cents = ndimage.center_of_mass(np.ones(labels.shape), labels, indices)
    out = np.full((len(indices), 3), -1, dtype=int)
    for i, c in enumerate(cents):
        if np.all(np.isfinite(c)):
            out[i] = np.rint(c).astype(int)
    return out


@dataclass(frozen=True)
class RegionalReference:
    """Healthy reference distribution of region scores.

    Attributes
    ----------
    regions : DataFrame
        ``index``, ``name``, ``hemisphere`` and ``n_voxels`` of the regions used.
    mean, sd : dict of array ``(R,)``
        Reference mean and SD of each measure in :data:`MEASURES`.
    measure : str
        The measure used for the profile and total deviation.
    total_mean, total_sd : float
        Reference mean and SD of the raw total deviation (mean squared profile).
    n : int
        Number of reference subjects.
    """

    regions: pd.DataFrame
    mean: dict[str, np.ndarray]
    sd: dict[str, np.ndarray]
    measure: str
    total_mean: float
    total_sd: float
    n: int

    def region_z(self, stats: dict[str, np.ndarray], measure: str | None = None) -> np.ndarray:
        """Region scores z-scored against the reference: ``(N, R)`` or ``(R,)``."""
        m = measure or self.measure
        return (np.asarray(stats[m]) - self.mean[m]) / self.sd[m]

    def _raw_total(self, profile: np.ndarray) -> np.ndarray:
        return np.nanmean(np.asarray(profile) ** 2, axis=-1)

    def total_deviation(self, profile: np.ndarray) -> np.ndarray | float:
        """Total deviation: mean squared profile, z-scored against healthy references."""
        return (self._raw_total(profile) - self.total_mean) / self.total_sd

    def profile_table(self, stats: dict[str, np.ndarray], profile: np.ndarray | None = None) -> pd.DataFrame:
        """One subject's profile: a row per region, sorted by ``|profile|`` (largest first).

        Columns: ``index``, ``name``, ``hemisphere``, ``n_voxels``, the raw
        measures, ``profile`` (z against healthy, of :attr:`measure`; or the
        given conditional ``profile``), ``centile`` (normal approximation),
        ``outside_range`` (``|profile| > 1.96``) and ``direction`` (see
        :func:`direction_of`).
        """
        from scipy.stats import norm

        if np.ndim(stats[self.measure]) != 1:
            raise ValueError("profile_table takes the statistics of one subject")
        table = self.regions.copy()
        for m in MEASURES:
            table[m] = stats[m]
        table["profile"] = self.region_z(stats) if profile is None else np.asarray(profile, float)
        table["centile"] = 100 * norm.cdf(table["profile"])
        table["outside_range"] = table["profile"].abs() > 1.96
        table["direction"] = direction_of(table["profile"].to_numpy())
        return table.reindex(table["profile"].abs().sort_values(ascending=False).index).reset_index(
            drop=True
        )


def fit_regional_reference(
    reference_z: np.ndarray,
    labels: np.ndarray,
    regions: pd.DataFrame,
    mask: np.ndarray | None = None,
    measure: str = "mean_z",
    min_voxels: int = 5,
    min_sd: float = 1e-3,
) -> RegionalReference:
    """Fit the healthy reference distribution of region scores.

    Parameters
    ----------
    reference_z : array ``(N, X, Y, Z)``
        z-maps of healthy reference subjects, ideally not used to fit the voxel
        norm (see :func:`~nbutils.normative.deviation.leave_one_out_z`). N >= 2.
    labels : int array ``(X, Y, Z)``
    regions : DataFrame
        Atlas label table with ``index``, ``name``, ``hemisphere``.
    mask : array, optional
        Only voxels inside it count.
    measure : str
        Measure for the profile (one of :data:`MEASURES`).
    min_voxels : int
        Regions with fewer voxels inside the mask are dropped.
    min_sd : float
        Floor of the reference SDs.
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; use one of {MEASURES}")
    reference_z = np.asarray(reference_z)
    if reference_z.ndim != 4 or len(reference_z) < 2:
        raise ValueError(f"need z-maps of N>=2 reference subjects, got shape {reference_z.shape}")
    labels = _check_labels(labels, reference_z.shape[1:])
    use = np.ones(labels.shape, bool) if mask is None else np.asarray(mask) > 0
    counts = np.bincount(labels[use].ravel(), minlength=int(regions["index"].max()) + 1)
    regions = regions[["index", "name", "hemisphere"]].copy()
    regions["n_voxels"] = counts[regions["index"].to_numpy()]
    regions = regions[regions["n_voxels"] >= min_voxels].reset_index(drop=True)
    if regions.empty:
        raise ValueError(f"no atlas region has >= {min_voxels} voxels inside the mask")
    stats = region_statistics(reference_z, labels, regions["index"].to_numpy(), use)
    mean = {m: np.nanmean(stats[m], axis=0) for m in MEASURES}
    sd = {m: np.maximum(np.nanstd(stats[m], axis=0, ddof=1), min_sd) for m in MEASURES}
    ref = RegionalReference(regions, mean, sd, measure, 0.0, 1.0, len(reference_z))
    raw = ref._raw_total(ref.region_z(stats))
    return RegionalReference(
        regions, mean, sd, measure, float(raw.mean()), float(max(raw.std(ddof=1), min_sd)),
        len(reference_z),
    )


def direction_of(profile: np.ndarray, cut: float = 1.96) -> np.ndarray:
    """What a signed regional z means in a T1 scan, in words.

    The residual is image minus the healthy reconstruction, so a negative
    profile is a region **darker than expected** — in T1, tissue replaced by CSF
    (atrophy, a widened ventricle or sulcus) — and a positive one **brighter
    than expected** (e.g. an enhancing or solid lesion, or tissue where CSF is
    expected). Within ``±cut`` the region is "as expected".
    """
    profile = np.asarray(profile, float)
    return np.where(profile <= -cut, "darker than expected (tissue loss / more CSF)",
                    np.where(profile >= cut, "brighter than expected", "as expected"))  # fmt: skip


def top_regions(profile: np.ndarray, names: list[str] | np.ndarray, k: int = 5) -> list[str]:
    """Names of the ``k`` regions with the largest ``|profile|``."""
    profile = np.nan_to_num(np.asarray(profile, dtype=float), nan=0.0)
    order = np.argsort(-np.abs(profile), kind="stable")[:k]
    return [str(np.asarray(names)[i]) for i in order]
