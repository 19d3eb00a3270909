"""How much atrophy does a regional profile see? Atrophy inserted by a method the generator does not use.

The AD hit rate of notebook 04 measures the profile on the synthetic
generator's own disease. This module measures it on atrophy we insert
ourselves into healthy held-out scans (:func:`nbutils.normative.inserted.insert_atrophy`:
a region's outermost voxels become CSF), one region and one volume loss at a
time, for any region of the atlas — including regions the generator never
changes. For each inserted loss it records the region's signed profile value
and its rank by ``|profile|`` among all regions, so that the hit rate
("the shrunk region is in the top ``k``") is read beside its chance level
``k / R``, and the rate of values below the 95 % normative range beside the
healthy rate of 2.5 %. The unmodified scans (loss 0) are scored the same way
as the control.

Any number of profile methods can be compared on the same inserted scans
(notebook 04: the autoencoder and the no-network intensity baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from nbutils.evaluation import topk_summary

from .inserted import csf_level, insert_atrophy

__all__ = [
    "CSF_LIKE",
    "Profiler",
    "atrophy_regions",
    "atrophy_sensitivity",
    "profile_methods",
    "sensitivity_summary",
]

#: Atlas regions that are CSF already (ventricles, sulcal CSF) cannot lose tissue.
CSF_LIKE = r"Vent|CSF"
#: One-sided normal quantile of the 95 % normative range (2.5 % of healthy regions fall below it).
LOW_Z = float(sps.norm.ppf(0.025))

#: ``profiler(volumes (N, X, Y, Z), covariates (N rows)) -> DataFrame (N, regions)``.
Profiler = Callable[[np.ndarray, pd.DataFrame], pd.DataFrame]


def profile_methods(model, stats, labels: np.ndarray, baseline_model=None,
                    rho: float | None = None) -> dict[str, Profiler]:
    """Notebook 04's regional profiles as :data:`Profiler` functions, each detector run once per stack.

    Parameters
    ----------
    model, stats
        The normative model and its statistics.
    labels : int array ``(X, Y, Z)``
        Atlas labels of ``stats``.
    baseline_model : RegionalModel, optional
        The no-network regional model (:func:`~nbutils.normative.evaluate.fit_intensity_regional_model`):
        adds ``"no network"`` and, with ``rho``, ``"combined"``
        (:func:`~nbutils.normative.evaluate.combined_profile`).
    rho : float, optional
        Correlation of the two detectors' profiles on healthy subjects.

    Returns
    -------
    dict of str to Profiler
        ``"autoencoder"`` always.
    """
    from .evaluate import combined_profile, intensity_profiles
    from .pipeline import deviation_maps, regional_profiles

    last: list = [None, {}]  # the last stack profiled and its profiles by detector

    def detector(name: str) -> Profiler:
        def profile(volumes: np.ndarray, covariates: pd.DataFrame | None) -> pd.DataFrame:
            if last[0] is not volumes:
                last[:] = [volumes, {}]
            done = last[1]
            if name not in done:
                if name == "autoencoder":
                    z = deviation_maps(model, stats, volumes, covariates)[1]
                    done[name] = regional_profiles(stats, z, labels, covariates)[0]
                else:
                    done[name] = intensity_profiles(stats, baseline_model, volumes, covariates, labels)
            return done[name]

        return profile

    out = {"autoencoder": detector("autoencoder")}
    if baseline_model is not None:
        out["no network"] = detector("no network")
        if rho is not None:
            ae, nn = out["autoencoder"], out["no network"]
            out["combined"] = lambda v, c: combined_profile(ae(v, c), nn(v, c), rho=rho)[0]
    return out


def atrophy_regions(
    regions: pd.DataFrame, targets: Sequence[str], n_other: int, seed: int, min_voxels: int = 100
) -> list[str]:
    """The regions to shrink: the tissue target regions, then ``n_other`` other tissue regions at random.

    Parameters
    ----------
    regions : DataFrame
        The model's region table (``name`` and ``n_voxels``).
    targets : sequence of str
        Pre-specified target regions (e.g. :func:`nbutils.anatomy.ad_target_regions`); CSF-like ones
        (:data:`CSF_LIKE`) are left out.
    n_other : int
        Other regions drawn at random (without replacement, seeded) from the tissue regions of at least
        ``min_voxels`` voxels that are not targets.
    seed : int
        Seed of the draw.
    min_voxels : int
        Smallest region shrunk, so that a 10 % loss changes at least ``min_voxels / 10`` voxels.

    Returns
    -------
    list of str
    """
    if n_other < 0:
        raise ValueError(f"n_other must be >= 0, got {n_other}")
    tissue = regions[~regions["name"].str.contains(CSF_LIKE) & (regions["n_voxels"] >= min_voxels)]
    names = set(tissue["name"])
    chosen = [t for t in targets if t in names]
    pool = sorted(names - set(targets))
    if n_other > len(pool):
        raise ValueError(f"{n_other} other regions asked for, but only {len(pool)} tissue regions of "
                         f">= {min_voxels} voxels are not targets")
    rng = np.random.default_rng(seed)
    return chosen + [str(n) for n in rng.choice(pool, n_other, replace=False)]


def atrophy_sensitivity(
    profilers: Mapping[str, Profiler],
    volumes: np.ndarray,
    covariates: pd.DataFrame | None,
    labels: np.ndarray,
    regions: pd.DataFrame,
    chosen: Sequence[str],
    losses: Sequence[float],
    csf_probability: np.ndarray,
    progress: bool = True,
) -> pd.DataFrame:
    """Shrink each chosen region of each scan by each loss, and read the region in every profile.

    Parameters
    ----------
    profilers : mapping of str to callable
        Method name -> function giving the regional profiles of a stack of scans (see :data:`Profiler`).
    volumes : array ``(N, X, Y, Z)``
        Healthy scans (not modified).
    covariates : DataFrame or None
        One row per scan (``age``, ``sex``, ``site``), passed on to the profilers (None: none known).
    labels : int array ``(X, Y, Z)``
        Atlas labels of the profiles' regions.
    regions : DataFrame
        Region table (``index``, ``name``) of the profiles.
    chosen : sequence of str
        Regions to shrink, one at a time (:func:`atrophy_regions`).
    losses : sequence of float
        Volume losses, fractions in (0, 1).
    csf_probability : array ``(X, Y, Z)``
        CSF probability map; each scan's CSF intensity (:func:`~nbutils.normative.inserted.csf_level`)
        fills the lost voxels.
    progress : bool
        Show a progress bar over scans.

    Returns
    -------
    DataFrame
        One row per scan, region, loss (0 = the unmodified scan) and method: ``scan``, ``region``,
        ``loss``, ``method``, ``z`` (the region's profile value), ``rank`` (1 = largest ``|profile|``;
        NaN ranks last) and ``changed_voxels``.
    """
    from tqdm.auto import tqdm

    vols = np.asarray(volumes, dtype=np.float32)
    if vols.ndim != 4 or vols.shape[1:] != np.shape(labels):
        raise ValueError(f"volumes {vols.shape} must be (N, X, Y, Z) on the labels' grid {np.shape(labels)}")
    if covariates is not None and len(covariates) != len(vols):
        raise ValueError(f"{len(covariates)} covariate rows for {len(vols)} scans")
    bad = [x for x in losses if not 0.0 < x < 1.0]
    if bad or not losses:
        raise ValueError(f"losses must be fractions in (0, 1), got {list(losses)}")
    index = regions.set_index("name")["index"]
    missing = [c for c in chosen if c not in index.index]
    if missing:
        raise ValueError(f"regions {missing} are not in the region table")
    rows = []
    for i in tqdm(range(len(vols)), desc="inserted atrophy", disable=not progress):
        fill = csf_level(vols[i], csf_probability)
        batch, meta = [vols[i]], [(None, 0.0, 0)]
        for name in chosen:
            for loss in losses:
                shrunk, changed = insert_atrophy(vols[i], labels, int(index[name]), float(loss), fill)
                batch.append(shrunk)
                meta.append((name, float(loss), int(changed.sum())))
        cov = None if covariates is None else covariates.iloc[[i] * len(batch)].reset_index(drop=True)
        stack = np.stack(batch)
        for method, profiler in profilers.items():
            prof = profiler(stack, cov)
            rank = prof.abs().rank(axis=1, ascending=False, method="first", na_option="bottom")
            for b, (name, loss, n_changed) in enumerate(meta):
                for region in (chosen if name is None else [name]):
                    rows.append({"scan": i, "region": region, "loss": loss, "method": method,
                                 "z": float(prof.iloc[b][region]), "rank": int(rank.iloc[b][region]),
                                 "changed_voxels": n_changed})
    return pd.DataFrame(rows)


def sensitivity_summary(table: pd.DataFrame, targets: Sequence[str], k: int, n_regions: int) -> pd.DataFrame:
    """Hit rates of :func:`atrophy_sensitivity` beside chance, per method, region group and loss.

    Parameters
    ----------
    table : DataFrame
        From :func:`atrophy_sensitivity`.
    targets : sequence of str
        Regions reported as the group ``"target"`` (the others as ``"other"``).
    k : int
        A shrunk region is found when it ranks in the top ``k``.
    n_regions : int
        Regions in the profile: chance of a single region in a random top ``k`` is ``k / n_regions``.

    Returns
    -------
    DataFrame
        Indexed by ``method``, ``group``, ``loss``: ``n``, ``top_k_rate``, ``chance``, ``p_value`` (exact
        one-sided binomial), ``below_range_rate`` (z < -1.96; 0.025 in healthy regions) and ``median_z``.
    """
    if table.empty:
        raise ValueError("the table of inserted atrophy is empty")
    if not 1 <= k <= n_regions:
        raise ValueError(f"k must be in 1..{n_regions}, got {k}")
    t = table.assign(group=np.where(table["region"].isin(list(targets)), "target", "other"))
    out = {}
    for key, g in t.groupby(["method", "group", "loss"], sort=True):
        s = topk_summary(g["rank"].to_numpy() <= k, k / n_regions)
        out[key] = {"n": s["n"], "top_k_rate": s["hit_rate"], "chance": s["chance"], "p_value": s["p_value"],
                    "below_range_rate": float((g["z"] < LOW_Z).mean()), "median_z": float(g["z"].median())}
    frame = pd.DataFrame(out).T
    frame.index.names = ["method", "group", "loss"]
    return frame.astype({"n": int})
