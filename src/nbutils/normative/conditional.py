"""A reference of healthy people *like the subject*: age-, sex- and site-conditional norms.

Normative modelling compares a person with healthy people of the same age and
sex, scanned at the same site (PCNtoolkit; Bethlehem et al. 2022). Two levels:

* :class:`ConditionalVoxelNorm` — per-voxel regression of a healthy residual
  (or intensity) map on the covariates: the mean on age, age², sex and site
  dummies, the log-variance on age, with coefficient maps smoothed so a few
  dozen reference subjects give stable estimates. A subject's z-map uses their
  own covariates.
* :class:`RegionalModel` — one PCNtoolkit Bayesian linear regression per atlas
  region (B-spline of age; sex and site as batch effects) of the region's
  score: conditional regional z-scores and centile curves against age.

Both keep the unconditional reference as the explicit fallback for a subject
without covariates (with a warning, never silently). How many covariate terms
are used depends on the number of reference subjects (:func:`choose_terms`).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .deviation import VoxelNorm, masked_smooth

__all__ = [
    "COVARIATES",
    "ConditionalVoxelNorm",
    "CovariateDesign",
    "MissingCovariatesWarning",
    "RegionalModel",
    "choose_terms",
    "fit_conditional_voxel_norm",
    "fit_regional_model",
    "missing_covariates",
]

#: Covariates of the conditional reference, in the subject table's column names.
COVARIATES = ("age", "sex", "site")
#: Reference subjects needed per regression coefficient of the voxel model.
SUBJECTS_PER_TERM = 4
#: Regional models need at least this many reference subjects (else unconditional).
MIN_REGIONAL_SUBJECTS = 12
#: E[log chi2_1]: the bias of a log squared Gaussian residual (log-variance regression).
_LOG_CHI2_BIAS = -1.2704


class MissingCovariatesWarning(UserWarning):
    """A subject lacks age, sex or site: the unconditional reference is used for it."""


def missing_covariates(table: pd.DataFrame | None) -> list[str]:
    """Covariates absent from ``table`` or missing (NaN) in any of its rows."""
    if table is None:
        return list(COVARIATES)
    return [c for c in COVARIATES if c not in table.columns or table[c].isna().any()]


def choose_terms(n_subjects: int, n_sexes: int, n_sites: int) -> list[str]:
    """Mean-model terms the reference can support: about :data:`SUBJECTS_PER_TERM` subjects each.

    Terms join in order of expected effect size (age, sex, site, age²) while
    ``n_subjects >= SUBJECTS_PER_TERM * (terms + intercept)``.
    """
    candidates = [("age", 1), ("sex", max(n_sexes - 1, 0)), ("site", max(n_sites - 1, 0)),
                  ("age2", 1)]  # fmt: skip
    terms, used = [], 1
    for name, width in candidates:
        if width and n_subjects >= SUBJECTS_PER_TERM * (used + width):
            terms.append(name)
            used += width
    return terms


@dataclass(frozen=True)
class CovariateDesign:
    """How covariates become design-matrix columns (fitted on the reference subjects).

    Attributes
    ----------
    terms : list of str
        Mean-model terms among ``age``, ``sex``, ``site``, ``age2``.
    age_mean, age_sd : float
        Standardisation of age.
    sexes, sites : list of str
        Levels seen in the reference (the first is the baseline level).
    site_shares : list of float
        Reference share of each site: an unknown site gets the average site effect.
    """

    terms: list[str]
    age_mean: float
    age_sd: float
    sexes: list[str]
    sites: list[str]
    site_shares: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, table: pd.DataFrame, terms: list[str] | None = None) -> CovariateDesign:
        """Design of the reference subjects in ``table`` (needs :data:`COVARIATES`)."""
        missing = missing_covariates(table)
        if missing:
            raise ValueError(f"reference subjects lack covariate(s) {missing}; the conditional "
                             "reference needs age, sex and site for every reference subject")
        sexes = sorted(map(str, table["sex"].unique()))
        sites = sorted(map(str, table["site"].unique()))
        shares = [float((table["site"].astype(str) == s).mean()) for s in sites]
        if terms is None:
            terms = choose_terms(len(table), len(sexes), len(sites))
        age = table["age"].to_numpy(float)
        return cls(list(terms), float(age.mean()), float(max(age.std(), 1e-6)), sexes, sites, shares)

    def _age(self, table: pd.DataFrame) -> np.ndarray:
        return (table["age"].to_numpy(float) - self.age_mean) / self.age_sd

    def matrix(self, table: pd.DataFrame) -> np.ndarray:
        """Mean-model design ``(N, P)``: intercept and :attr:`terms`.

        An unknown sex or site level gets the reference-average effect (with a warning).
        """
        a = self._age(table)
        cols = [np.ones(len(table))]
        if "age" in self.terms:
            cols.append(a)
        for term, levels, shares in (("sex", self.sexes, None), ("site", self.sites, self.site_shares)):
            if term not in self.terms:
                continue
            values = table[term].astype(str).to_numpy()
            unknown = sorted(set(values) - set(levels))
            if unknown:
                warnings.warn(f"{term} {unknown} not in the reference ({levels}): the reference-"
                              f"average {term} effect is used", MissingCovariatesWarning, stacklevel=3)
            default = (np.full(len(levels), 1 / len(levels)) if shares is None
                       else np.asarray(shares))  # fmt: skip
            for j, level in enumerate(levels[1:], start=1):
                cols.append(np.where(values == level, 1.0,
                                     np.where(np.isin(values, levels), 0.0, default[j])))  # fmt: skip
        if "age2" in self.terms:
            cols.append(a**2 - 1.0)
        return np.column_stack(cols)

    def variance_matrix(self, table: pd.DataFrame) -> np.ndarray:
        """Log-variance design ``(N, Q)``: intercept, and age when the mean uses it."""
        cols = [np.ones(len(table))]
        if "age" in self.terms:
            cols.append(self._age(table))
        return np.column_stack(cols)

    def to_dict(self) -> dict:
        return {"terms": self.terms, "age_mean": self.age_mean, "age_sd": self.age_sd,
                "sexes": self.sexes, "sites": self.sites, "site_shares": self.site_shares}


@dataclass(frozen=True)
class ConditionalVoxelNorm:
    """Voxel-wise mean and SD maps as functions of age, sex and site.

    Attributes
    ----------
    mean_coef : array ``(P, X, Y, Z)``
        Coefficient maps of the mean (columns of :meth:`CovariateDesign.matrix`).
    logvar_coef : array ``(Q, X, Y, Z)``
        Coefficient maps of the log-variance (:meth:`CovariateDesign.variance_matrix`).
    design : CovariateDesign
    mask : bool array ``(X, Y, Z)``
    sigma : float
        Smoothing (voxels) of each subject map before comparison.
    sd_floor : float
        Lower bound of the SD (a quantile of the reference SD).
    scale : float
        Calibration factor of the SD (healthy leave-one-out ``|z| > 1.96`` at 5 %).
    n : int
        Reference subjects.
    fallback : VoxelNorm
        The unconditional norm for subjects without covariates.
    """

    mean_coef: np.ndarray
    logvar_coef: np.ndarray
    design: CovariateDesign
    mask: np.ndarray
    sigma: float
    sd_floor: float
    scale: float
    n: int
    fallback: VoxelNorm

    def moments(self, covariates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Expected mean and SD maps ``(N, X, Y, Z)`` for subjects with these covariates."""
        x = self.design.matrix(covariates).astype(np.float32)
        xv = self.design.variance_matrix(covariates).astype(np.float32)
        mean = np.tensordot(x, self.mean_coef, axes=(1, 0))
        sd = np.exp(0.5 * np.tensordot(xv, self.logvar_coef, axes=(1, 0)))
        sd = np.maximum(sd, self.sd_floor) * self.scale
        return mean.astype(np.float32), np.where(self.mask, sd, 1.0).astype(np.float32)

    def z(self, maps: np.ndarray, covariates: pd.DataFrame | None = None) -> np.ndarray:
        """z-maps of ``maps`` (``(X, Y, Z)`` or ``(N, X, Y, Z)``) against people like each subject.

        Without usable covariates a :class:`MissingCovariatesWarning` says so and
        the unconditional :attr:`fallback` is used.
        """
        maps = np.asarray(maps, dtype=np.float32)
        single = maps.ndim == 3
        stack = maps[None] if single else maps
        missing = missing_covariates(covariates)
        if missing:
            warnings.warn(f"no {', '.join(missing)} for this scan: it is compared with the "
                          "unconditional healthy reference (all ages, sexes and sites)",
                          MissingCovariatesWarning, stacklevel=2)  # fmt: skip
            return self.fallback.z(maps)
        if len(covariates) != len(stack):
            raise ValueError(f"{len(stack)} maps but {len(covariates)} covariate rows")
        mean, sd = self.moments(covariates.reset_index(drop=True))
        smooth = masked_smooth(stack, self.mask, self.sigma)
        z = np.where(self.mask, (smooth - mean) / sd, 0.0).astype(np.float32)
        return z[0] if single else z


def _smooth_coefficients(coef: np.ndarray, mask: np.ndarray, map_sigma: float) -> np.ndarray:
    vol = np.zeros((len(coef), *mask.shape), np.float32)
    vol[:, mask] = coef
    return masked_smooth(vol, mask, map_sigma)


def fit_conditional_voxel_norm(
    maps: np.ndarray,
    mask: np.ndarray,
    covariates: pd.DataFrame,
    sigma: float = 1.0,
    map_sigma: float = 2.0,
    min_sd_quantile: float = 0.05,
    calibrate: bool = True,
    terms: list[str] | None = None,
) -> tuple[ConditionalVoxelNorm, np.ndarray, np.ndarray]:
    """Fit the conditional voxel norm on healthy reference maps; also return their leave-one-out z.

    Parameters
    ----------
    maps : array ``(N, X, Y, Z)``
        One out-of-sample map per healthy reference subject.
    mask : array ``(X, Y, Z)``
    covariates : DataFrame
        ``age``, ``sex`` and ``site`` of the N subjects, in order.
    sigma, map_sigma, min_sd_quantile
        As in :func:`~nbutils.normative.deviation.fit_voxel_norm`; ``map_sigma``
        smooths the coefficient maps.
    calibrate : bool
        Scale the SD so that 5 % of the leave-one-out ``|z|`` exceed 1.96.
    terms : list of str, optional
        Mean-model terms (default: :func:`choose_terms` for N).

    Returns
    -------
    (ConditionalVoxelNorm, array ``(N, X, Y, Z)``, array ``(N, X, Y, Z)``)
        The norm, each reference subject's z-map against the mean fitted
        without it (closed-form leave-one-out of the regression), and the same
        against the unconditional fallback norm (leave-one-out).
    """
    from .deviation import fit_voxel_norm, leave_one_out_z

    maps = np.asarray(maps, dtype=np.float32)
    mask = np.asarray(mask) > 0
    covariates = covariates.reset_index(drop=True)
    if maps.ndim != 4 or len(maps) != len(covariates):
        raise ValueError(f"need one map per covariate row, got maps {maps.shape} and "
                         f"{len(covariates)} rows")
    design = CovariateDesign.fit(covariates, terms)
    x = design.matrix(covariates)
    n, p = x.shape
    if n < p + 3:
        raise ValueError(f"{n} reference subjects cannot fit {p} mean terms ({design.terms})")
    smooth = masked_smooth(maps, mask, sigma)[:, mask].astype(np.float64)
    pinv = np.linalg.pinv(x)
    beta = pinv @ smooth
    mean_coef = _smooth_coefficients(beta.astype(np.float32), mask, map_sigma)
    # leave-one-out residual against the *smoothed* mean map, exactly: smoothing is linear, so
    # dropping subject i moves the smoothed fit by h_i / (1 - h_i) times its smoothed residual
    hat = np.clip(np.einsum("ij,ji->i", x, pinv), 0.0, 0.95)
    e_smooth = _smooth_coefficients((smooth - x @ beta).astype(np.float32), mask, map_sigma)[:, mask]
    loo = smooth - x @ mean_coef[:, mask] + (hat / (1.0 - hat))[:, None] * e_smooth
    xv = design.variance_matrix(covariates)
    gamma = np.linalg.pinv(xv) @ np.log(loo**2 + 1e-12)
    gamma[0] -= _LOG_CHI2_BIAS
    logvar_coef = _smooth_coefficients(gamma.astype(np.float32), mask, map_sigma)
    sd_ref = np.exp(0.5 * logvar_coef[0][mask])
    floor = max(float(np.quantile(sd_ref, min_sd_quantile)), 1e-6)
    fallback = fit_voxel_norm(maps, mask, sigma, map_sigma, min_sd_quantile)
    norm = ConditionalVoxelNorm(mean_coef, logvar_coef, design, mask, float(sigma), floor, 1.0, n,
                                fallback)
    _, sd = norm.moments(covariates)
    loo_z = np.zeros(maps.shape, np.float32)
    loo_z[:, mask] = loo / sd[:, mask]
    fb_z = leave_one_out_z(maps, mask, sigma, map_sigma, min_sd_quantile)
    scale = fb_scale = 1.0
    if calibrate:
        scale = calibration_factor(loo_z[:, mask])
        fb_scale = calibration_factor(fb_z[:, mask])
        loo_z /= scale
        fb_z /= fb_scale
        fallback = VoxelNorm(fallback.mean, (fallback.sd * fb_scale).astype(np.float32), mask,
                             fallback.sigma, fallback.n)  # fmt: skip
    norm = ConditionalVoxelNorm(mean_coef, logvar_coef, design, mask, float(sigma), floor, scale, n,
                                fallback)
    return norm, loo_z, fb_z


def calibration_factor(z: np.ndarray) -> float:
    """Factor that makes 5 % of healthy ``|z|`` exceed 1.96 (divide z, multiply the SD by it)."""
    return max(float(np.quantile(np.abs(z), 0.95)) / 1.959964, 1e-3)


# ----------------------------------------------------------------------------- regional


def _quiet_pcntoolkit():
    """Import PCNtoolkit with its start-up chatter and single-threaded BLAS (14x faster here)."""
    import logging

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pcntoolkit
    logging.getLogger("pcntoolkit").setLevel(logging.WARNING)
    return pcntoolkit


def _silent():
    import contextlib
    import io

    from threadpoolctl import threadpool_limits

    stack = contextlib.ExitStack()
    stack.enter_context(threadpool_limits(1))
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


@contextmanager
def _without_predict(nm):
    """Let ``NormativeModel.fit`` skip the prediction pass it ends with.

    PCNtoolkit's ``fit`` closes with ``predict`` on the training data (z-scores,
    centiles, log-likelihoods and ``yhat`` per region, written into the data
    object): 24 of its 32 s for 134 regions here, for arrays nothing reads — the
    regional model computes its z-scores itself (:meth:`RegionalModel.predictive`).
    """
    nm.predict = lambda data: data
    try:
        yield nm
    finally:
        del nm.predict


@dataclass
class RegionalModel:
    """PCNtoolkit normative model of each region's score against age, sex and site.

    Attributes
    ----------
    model : pcntoolkit.NormativeModel
        One Bayesian linear regression per region (B-spline of age; sex and site
        as batch effects with their own intercept).
    regions : DataFrame
        ``index``, ``name``, ``hemisphere``, ``n_voxels`` of the modelled regions.
    total_mean, total_sd : float
        Reference mean and SD of the raw total deviation (mean squared profile).
    n : int
        Reference subjects.
    """

    model: object
    regions: pd.DataFrame
    total_mean: float
    total_sd: float
    n: int

    @property
    def keys(self) -> list[str]:
        return [f"r{int(i)}" for i in self.regions["index"]]

    def _normdata(self, scores: np.ndarray, covariates: pd.DataFrame, name: str):
        pcn = _quiet_pcntoolkit()
        frame = pd.DataFrame(np.asarray(scores, float), columns=self.keys)
        frame["age"] = covariates["age"].to_numpy(float)
        frame["sex"] = covariates["sex"].astype(str).to_numpy()
        frame["site"] = covariates["site"].astype(str).to_numpy()
        frame["subject"] = [f"s{i}" for i in range(len(frame))]
        return pcn.NormData.from_dataframe(name, frame, covariates=["age"],
                                           batch_effects=["sex", "site"],
                                           response_vars=self.keys, subject_ids="subject")

    def z(self, scores: np.ndarray, covariates: pd.DataFrame) -> np.ndarray:
        """Conditional z-scores ``(N, R)`` of region scores ``(N, R)``.

        A sex or site the reference has not seen gets the reference's mixture over
        its known levels (weighted by their counts), with a warning: a scan from
        a new scanner is compared with all the reference's sites, not refused.
        """
        scores = np.atleast_2d(np.asarray(scores, float))
        if scores.shape[1] != len(self.regions):
            raise ValueError(f"{scores.shape[1]} region scores but the model has {len(self.regions)}")
        mean, var = self.predictive(covariates)
        outs = self.model.outscalers
        scaled = np.column_stack([outs[k].transform(scores[:, j]) for j, k in enumerate(self.keys)])
        return (scaled - mean) / np.sqrt(var)

    def predictive(self, covariates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and variance ``(N, R)`` of the *scaled* region scores.

        PCNtoolkit's own BLR maths (``BLR.ys_s2`` on its scaled age and integer
        batch-effect codes), called on plain arrays: ``compute_zscores`` spends
        about 1.4 s per subject in per-region xarray bookkeeping, this about 30 ms.
        """
        nm = self.model
        covariates = covariates.reset_index(drop=True)
        age = nm.inscalers["age"].transform(covariates["age"].to_numpy(float))[:, None]
        mean = np.zeros((len(covariates), len(self.regions)))
        var = np.zeros_like(mean)
        for codes, weight in self._level_mixture(covariates):
            with _silent():
                for j, key in enumerate(self.keys):
                    ys, s2 = nm[key].ys_s2(age, codes)
                    mean[:, j] += weight * ys
                    var[:, j] += weight * (s2 + ys**2)
        return mean, var - mean**2

    def _level_mixture(self, covariates: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
        """Integer batch-effect codes ``(N, B)`` and weights ``(N,)`` of each mixture component.

        Components are the combinations of known levels. A subject's known level
        has weight 1 (0 for the others); an unknown sex or site gives every known
        level its share of the reference subjects.
        """
        nm = self.model
        per_dim = []
        for dim in nm.unique_batch_effects:
            known, counts = nm.batch_effects_maps[dim], nm.batch_effect_counts[dim]
            values = covariates[dim].astype(str).to_numpy()
            unknown = sorted(set(values) - set(known))
            if unknown:
                warnings.warn(f"{dim} {unknown} not in the regional reference ({sorted(known)}): "
                              "compared with the mixture of its known levels", stacklevel=4)  # fmt: skip
            total = float(sum(counts.values()))
            is_known = np.isin(values, list(known))
            per_dim.append([(code, np.where(is_known, values == level, counts[level] / total))
                            for level, code in known.items()])  # fmt: skip
        out = []
        for combo in itertools.product(*per_dim):
            weight = np.prod([w for _, w in combo], axis=0).astype(float)
            if weight.any():
                codes = np.tile([code for code, _ in combo], (len(covariates), 1))
                out.append((codes, weight))
        return out

    def total_deviation(self, profile: np.ndarray) -> np.ndarray | float:
        """Mean squared conditional profile, z-scored against the reference."""
        raw = np.nanmean(np.asarray(profile) ** 2, axis=-1)
        return (raw - self.total_mean) / self.total_sd

    def centiles(self, region: str | int, ages: np.ndarray, sex: str, site: str,
                 centiles=(0.05, 0.25, 0.5, 0.75, 0.95)) -> pd.DataFrame:  # fmt: skip
        """Centile curves of one region's score against ``ages`` for one sex and site.

        Returns a DataFrame with ``age`` and one column per centile (e.g. ``"50"``).
        """
        from scipy.stats import norm

        row = self.region_row(region)
        ages = np.asarray(ages, float)
        cov = pd.DataFrame({"age": ages, "sex": sex, "site": site})
        mean, var = self.predictive(cov)
        scaler = self.model.outscalers[self.keys[row]]
        out = pd.DataFrame({"age": ages})
        for c in centiles:
            out[f"{100 * c:g}"] = scaler.inverse_transform(mean[:, row] + norm.ppf(c) * np.sqrt(var[:, row]))
        return out

    def region_row(self, region: str | int) -> int:
        """Row of a region given by name or atlas index."""
        regions = self.regions
        hit = regions.index[(regions["name"] == region) | (regions["index"].astype(str) == str(region))]
        if not len(hit):
            raise KeyError(f"region {region!r} is not in the regional model")
        return int(hit[0])

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model to ``folder`` atomically (a temporary folder, then a rename)."""
        from nbutils.io import write_json, write_table

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        with _silent():
            self.model.save(str(tmp / "pcntoolkit"))
        write_table(tmp / "regions.tsv", self.regions)
        write_json(tmp / "regional_model.json",
                   {"total_mean": self.total_mean, "total_sd": self.total_sd, "n": self.n})
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> RegionalModel:
        """Read a model written by :meth:`save`."""
        import json

        folder = Path(folder)
        meta_path = folder / "regional_model.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no regional model at {folder} ({meta_path.name} missing)")
        pcn = _quiet_pcntoolkit()
        with _silent():
            model = pcn.NormativeModel.load(str(folder / "pcntoolkit"))
        meta = json.loads(meta_path.read_text())
        regions = pd.read_csv(folder / "regions.tsv", sep="\t")
        return cls(model, regions, float(meta["total_mean"]), float(meta["total_sd"]), int(meta["n"]))


def fit_regional_model(
    scores: np.ndarray,
    covariates: pd.DataFrame,
    regions: pd.DataFrame,
    *,
    nknots: int = 5,
    heteroskedastic: bool = False,
    min_sd: float = 1e-3,
) -> RegionalModel:
    """Fit one PCNtoolkit BLR per region on healthy reference scores.

    Parameters
    ----------
    scores : array ``(N, R)``
        Region scores of the reference subjects (out-of-sample maps).
    covariates : DataFrame
        ``age``, ``sex``, ``site`` of the N subjects.
    regions : DataFrame
        The R regions (``index``, ``name``, ...).
    nknots : int
        Knots of the cubic B-spline of age.
    heteroskedastic : bool
        Let the variance depend on age too (needs more subjects).
    """
    missing = missing_covariates(covariates)
    if missing:
        raise ValueError(f"reference subjects lack covariate(s) {missing}")
    scores = np.asarray(scores, float)
    if len(scores) < MIN_REGIONAL_SUBJECTS:
        raise ValueError(f"{len(scores)} reference subjects are too few for a conditional regional "
                         f"model (need >= {MIN_REGIONAL_SUBJECTS})")
    pcn = _quiet_pcntoolkit()
    blr = pcn.BLR(name="region", fixed_effect=True, heteroskedastic=heteroskedastic,
                  basis_function_mean=pcn.BsplineBasisFunction(basis_column=0, degree=3,
                                                               nknots=nknots))  # fmt: skip
    nm = pcn.NormativeModel(blr, savemodel=False, evaluate_model=False, saveresults=False,
                            saveplots=False, save_dir=tempfile.mkdtemp(prefix="pcntoolkit-"))
    model = RegionalModel(nm, regions.reset_index(drop=True), 0.0, 1.0, len(scores))
    filled = np.where(np.isfinite(scores), scores, np.nanmean(scores, axis=0))
    with _silent(), _without_predict(nm):
        nm.fit(model._normdata(filled, covariates.reset_index(drop=True), "reference"))
    raw = np.nanmean(model.z(scores, covariates) ** 2, axis=-1)
    model.total_mean, model.total_sd = float(raw.mean()), float(max(raw.std(ddof=1), min_sd))
    return model
