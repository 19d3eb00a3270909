"""How large are the simulated effects in what an analysis sees? (notebook 00)

Reads a generated MNI-space cohort the way an analysis would (``load_bids``,
the *template* Neuromorphometrics atlas on the cohort grid, not each subject's
true labels), takes the mean standardised (z-scored) T1 intensity of a few
regions per subject, and reports:

* AD (and MCI) vs **age-matched** CN: Hedges' g with its analytic 95 % CI.
  Matching: only CN whose age lies within the patient group's age range,
  widened by ``margin_years`` on both sides.
* the CN age trend: OLS slope per decade with its 95 % CI.

Negative g / slopes mean darker on T1 (tissue replaced by CSF).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import stats

from nbutils import anatomy
from nbutils.evaluation import AGE_MATCH_MARGIN_YEARS, age_matched

__all__ = [
    "EFFECT_REGIONS",
    "age_trend",
    "disease_effects",
    "group_effects",
    "hedges_g",
    "regional_intensity",
]

#: Regions measured, as Neuromorphometrics name regexes (both hemispheres pooled);
#: ``ad_targets`` is the pre-specified composite :func:`nbutils.anatomy.ad_target_regions`.
EFFECT_REGIONS: dict[str, str] = {
    "hippocampus": r"^(?:Left|Right)_Hippocampus$",
    "amygdala": r"^(?:Left|Right)_Amygdala$",
    "inf_lat_vent": r"^(?:Left|Right)_Inf_Lat_Vent$",
    "lateral_ventricle": r"^(?:Left|Right)_Lateral_Ventricle$",
    "ad_targets": anatomy.AD_TARGET_PATTERN,
}
#: Two-sided 95 % normal quantile.
_Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class Effect:
    """Hedges' g of ``a`` minus ``b`` with its 95 % CI."""

    g: float
    ci_low: float
    ci_high: float


def hedges_g(a: np.ndarray, b: np.ndarray) -> Effect:
    """Hedges' g (bias-corrected Cohen's d) of ``a`` vs ``b`` with the analytic 95 % CI.

    Uses the pooled SD, the small-sample correction ``J = 1 - 3 / (4 (n_a + n_b) - 9)``
    and the large-sample variance ``(n_a + n_b) / (n_a n_b) + g² / (2 (n_a + n_b))``
    (Hedges & Olkin 1985). NaN when a group has fewer than 2 values.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return Effect(np.nan, np.nan, np.nan)
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return Effect(np.nan, np.nan, np.nan)
    g = (a.mean() - b.mean()) / pooled * (1.0 - 3.0 / (4.0 * (na + nb) - 9.0))
    se = np.sqrt((na + nb) / (na * nb) + g**2 / (2.0 * (na + nb)))
    return Effect(float(g), float(g - _Z95 * se), float(g + _Z95 * se))


def _cohort_atlas(path: str | os.PathLike) -> anatomy.Atlas:
    """The template Neuromorphometrics atlas on the grid of the image at ``path``."""
    img = nib.load(path)
    grid = anatomy.Grid(
        shape=tuple(int(n) for n in img.shape[:3]), affine=img.affine.copy(),
        resolution=float(img.header.get_zooms()[0]),
    )
    return anatomy.load_atlas("neuromorphometrics", grid)


def regional_intensity(root: str | os.PathLike, regions: dict[str, str] | None = None) -> pd.DataFrame:
    """Mean standardised T1 intensity of each region per subject, in long (tidy) form.

    Parameters
    ----------
    root : path-like
        A generated MNI-space cohort (``space="mni"``), read with :func:`nbutils.datasets.load_bids`.
    regions : dict, optional
        Region name -> label-name regex; :data:`EFFECT_REGIONS` by default.

    Returns
    -------
    pandas.DataFrame
        Columns ``participant_id, age, sex, diagnosis, region, mean_z`` (one row per subject and region).
    """
    from nbutils.datasets import load_bids

    scans = load_bids(root)
    regions = EFFECT_REGIONS if regions is None else regions
    atlas = _cohort_atlas(scans["path"].iloc[0])
    labels = atlas.data()
    masks = {name: np.isin(labels, atlas.index_of(rx)) for name, rx in regions.items()}
    rows = []
    for scan in scans.itertuples(index=False):
        img = nib.load(scan.path)
        if img.shape[:3] != labels.shape or not np.allclose(img.affine, atlas.image.affine, atol=1e-4):
            raise ValueError(f"{scan.path} is not on the cohort grid of the first image")
        data = np.asarray(img.dataobj, dtype=np.float32)
        for name, m in masks.items():
            rows.append({
                "participant_id": scan.participant_id, "age": scan.age, "sex": scan.sex,
                "diagnosis": scan.diagnosis, "region": name, "mean_z": float(data[m].mean()),
            })
    return pd.DataFrame(rows)


def group_effects(
    values: pd.DataFrame,
    groups: tuple[str, ...] = ("AD", "MCI"),
    reference: str = "CN",
    margin_years: float = AGE_MATCH_MARGIN_YEARS,
    column: str = "mean_z",
) -> pd.DataFrame:
    """Each patient group vs age-matched reference subjects, per region (Hedges' g, 95 % CI).

    Parameters
    ----------
    values : pandas.DataFrame
        Output of :func:`regional_intensity`, or any long table with ``region``,
        ``diagnosis``, ``age`` and the ``column`` compared.
    groups : tuple of str
        Diagnoses to compare (skipped when absent).
    reference : str
        The control diagnosis.
    margin_years : float
        Controls are those aged within the group's ``[min, max]`` age ± this.
    column : str
        The measure compared (default the mean standardised intensity).

    Returns
    -------
    pandas.DataFrame
        ``region, group, n_group, n_reference, reference_age_min, reference_age_max, mean_group,
        mean_reference, hedges_g, ci_low, ci_high, matching``.
    """
    rows = []
    for region, sub in values.groupby("region", sort=False):
        ref = sub[sub["diagnosis"] == reference]
        for group in groups:
            pat = sub[sub["diagnosis"] == group]
            if pat.empty:
                continue
            matched = ref[age_matched(ref["age"].to_numpy(), pat["age"].to_numpy(), margin_years)]
            eff = hedges_g(pat[column].to_numpy(), matched[column].to_numpy())
            rows.append({
                "region": region, "group": group, "n_group": len(pat), "n_reference": len(matched),
                "reference_age_min": matched["age"].min(), "reference_age_max": matched["age"].max(),
                "mean_group": pat[column].mean(), "mean_reference": matched[column].mean(),
                "hedges_g": eff.g, "ci_low": eff.ci_low, "ci_high": eff.ci_high,
                "matching": f"{reference} aged within the {group} age range ± {margin_years:g} y",
            })
    return pd.DataFrame(rows)


def _slope(age: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """OLS slope per decade, its 95 % CI and Pearson r (NaN with fewer than 3 points)."""
    if len(age) < 3 or np.ptp(age) == 0:
        return (np.nan,) * 4
    fit = stats.linregress(age, y)
    half = stats.t.ppf(0.975, len(age) - 2) * fit.stderr
    return 10 * fit.slope, 10 * (fit.slope - half), 10 * (fit.slope + half), fit.rvalue


def age_trend(values: pd.DataFrame, reference: str = "CN") -> pd.DataFrame:
    """Healthy ageing per region: OLS slope of the mean z per decade in ``reference`` subjects.

    Returns
    -------
    pandas.DataFrame
        ``region, n, age_min, age_max, slope_per_decade, ci_low, ci_high, r``.
    """
    rows = []
    for region, sub in values[values["diagnosis"] == reference].groupby("region", sort=False):
        slope, lo, hi, r = _slope(sub["age"].to_numpy(float), sub["mean_z"].to_numpy(float))
        rows.append({
            "region": region, "n": len(sub), "age_min": sub["age"].min(), "age_max": sub["age"].max(),
            "slope_per_decade": slope, "ci_low": lo, "ci_high": hi, "r": r,
        })
    return pd.DataFrame(rows)


def disease_effects(
    root: str | os.PathLike, margin_years: float = AGE_MATCH_MARGIN_YEARS
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Regional intensities, group effects and CN age trends of a generated MNI cohort.

    Returns
    -------
    values, effects, trends : pandas.DataFrame
        :func:`regional_intensity`, :func:`group_effects`, :func:`age_trend`.
    """
    values = regional_intensity(root)
    return values, group_effects(values, margin_years=margin_years), age_trend(values)
