"""Evaluate normative deviation methods: tumour detection and profile stability.

* :func:`method_scores`, :func:`healthy_thresholds`, :func:`detection_summary` —
  compare the autoencoder with two no-network baselines (Meissen et al. 2021)
  at thresholds fixed on healthy scans (notebook 03).
* :func:`lesion_wise`, :func:`false_positive_clusters` — lesion-wise detection
  at those thresholds and the false-positive clusters on healthy scans.
* :func:`ad_localisation`, :func:`target_composite`, :func:`age_matched_auc` —
  AD target regions in the top of the profile beside chance, and AD vs
  age-matched controls (notebook 04).
* :func:`profile_correlation`, :func:`stability_study` — retrain the model with
  other seeds on the same (fixed, cross-fitted) healthy reference and correlate
  the regional profiles of the same held-out subjects (notebook 03).
* :func:`calibration_by_group` — healthy ``|z| > 1.96`` share per age tertile and site.

Applying one model to scans is :mod:`nbutils.normative.pipeline`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nbutils.evaluation import (
    AGE_MATCH_MARGIN_YEARS,
    age_matched,
    auc_with_ci,
    false_positive_components,
    lesion_detection,
    scan_dice_ceiling,
    topk_chance,
    topk_hit,
    topk_summary,
)

from .deviation import auprc, binarise, dice, per_volume, postprocess, ranking_metrics
from .pipeline import (
    build_normative_model,
    deviation_maps,
    ensemble_z,
    member_z_maps,
    postprocessed_scores,
    regional_profiles,
)
from .regional import top_regions
from .stats import NormativeStats

__all__ = [
    "METHODS",
    "StabilityResult",
    "ad_localisation",
    "age_matched_auc",
    "calibration_by_group",
    "combined_profile",
    "detection_by_class",
    "detection_summary",
    "dice_at_threshold",
    "false_positive_clusters",
    "fit_intensity_regional_model",
    "healthy_thresholds",
    "intensity_profiles",
    "lesion_wise",
    "method_scores",
    "profile_correlation",
    "segment",
    "stability_study",
    "target_composite",
]


def detection_summary(
    scores: dict[str, np.ndarray],
    thresholds: dict[str, float],
    truth: np.ndarray,
    mask: np.ndarray,
    min_size: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Voxel-level detection metrics of several methods on the same held-out lesion scans.

    Parameters
    ----------
    scores : dict
        Method name -> post-processed score maps ``(N, X, Y, Z)`` of the lesion scans.
    thresholds : dict
        Method name -> threshold fixed on healthy scans (e.g. at 5 % voxel FPR).
    truth : bool array ``(N, X, Y, Z)``
        Lesion masks.
    mask : array ``(X, Y, Z)``
        Brain mask: only voxels inside count.
    min_size : int
        Minimum component size of the thresholded segmentation.

    Returns
    -------
    summary : DataFrame
        One row per method: ``auprc``, ``best_dice`` (pooled voxels, best threshold),
        ``dice_at_threshold`` (mean over subjects), ``threshold``.
    per_subject : DataFrame
        One row per method and scan: ``subject`` (position), ``dice``, ``auprc``,
        ``lesion_voxels``.
    """
    mask = np.asarray(mask) > 0
    truth = np.asarray(truth) > 0
    rows, per = [], []
    for name, s in scores.items():
        s = _check_scores(name, s, truth)
        ap, bd, _ = ranking_metrics(s[:, mask], truth[:, mask])
        dices = dice_at_threshold(s, thresholds[name], truth, mask, min_size)
        for i, d in enumerate(dices):
            t_i = truth[i][mask]
            per.append({
                "method": name, "subject": i, "dice": d,
                "auprc": auprc(s[i][mask], t_i) if t_i.any() else np.nan,
                "lesion_voxels": int(t_i.sum()),
            })  # fmt: skip
        rows.append({
            "method": name, "auprc": ap, "best_dice": bd,
            "dice_at_threshold": float(np.mean(dices)), "threshold": thresholds[name],
        })  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(per)


def _check_scores(name: str, scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.shape != truth.shape:
        raise ValueError(f"{name}: scores {scores.shape} do not match truth {truth.shape}")
    return scores


def dice_at_threshold(scores: np.ndarray, threshold: float, truth: np.ndarray, mask: np.ndarray,
                      min_size: int = 0) -> list[float]:
    """Dice of each scan's segmentation (:func:`segment`) at a threshold fixed on healthy scans."""
    return [dice(seg, t & mask) for seg, t in zip(segment(scores, threshold, mask, min_size), truth, strict=True)]


def segment(scores: np.ndarray, threshold: float, mask: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Binary segmentations ``(N, X, Y, Z)`` of score maps: above ``threshold``, inside ``mask``,
    components smaller than ``min_size`` removed."""
    mask = np.asarray(mask) > 0
    return np.stack([binarise(v, threshold, min_size) & mask for v in np.asarray(scores)])


#: Detection methods compared in notebook 03, baselines first (Meissen et al. 2021).
METHODS = ("intensity", "voxel_z", "autoencoder")


def method_scores(
    model, stats: NormativeStats, volumes: np.ndarray, covariates: pd.DataFrame | None = None
) -> dict[str, np.ndarray]:
    """Post-processed anomaly scores of the three methods for scans ``(N, X, Y, Z)``.

    * ``intensity`` — baseline (a): ``|x|`` of the standardised image, no model;
    * ``voxel_z`` — baseline (b): voxel z of intensities against the healthy
      reference scans (conditional on ``covariates`` like the autoencoder's), no network;
    * ``autoencoder`` — voxel z of the autoencoder residual.

    All use the same score kind and post-processing (``stats.postprocessing``).
    """
    post, mask = stats.postprocessing, stats.mask
    volumes = np.asarray(volumes, dtype=np.float32)
    _, z = deviation_maps(model, stats, volumes, covariates)
    return {
        "intensity": postprocess(np.abs(volumes), mask, post["median_size"], post["erode"]),
        "voxel_z": postprocessed_scores(stats.intensity_z(volumes, covariates), mask, post),
        "autoencoder": postprocessed_scores(z, mask, post),
    }


def healthy_thresholds(stats: NormativeStats, fpr: float = 0.05) -> dict[str, float]:
    """Thresholds at a healthy voxel FPR for each method, fixed on the healthy reference.

    All come from ``stats``: the autoencoder's and the voxel-z baseline's from
    leave-one-out z-maps of the reference subjects (so never in-sample), the
    intensity baseline's from the reference scans themselves.
    """
    key = f"fpr_{fpr:g}"
    out = {name: float(thr[key]) for name, thr in stats.baseline_thresholds.items()}
    out["autoencoder"] = stats.thresholds[key]
    return out


def calibration_by_group(
    z: np.ndarray, mask: np.ndarray, table: pd.DataFrame, cut: float = 1.96
) -> pd.DataFrame:
    """Share of voxels with ``|z| > cut`` in healthy scans: overall, per age tertile and per site.

    Returns one row per group with ``group``, ``n``, ``share`` (0.05 when
    calibrated) and a 95 % interval of the mean share over the group's subjects
    (``ci_low``, ``ci_high``; normal approximation, NaN for one subject): with
    three or four subjects per group, a share 0.01 from 0.05 can be chance.
    """
    from .deviation import frac_abs_z_above

    share = frac_abs_z_above(z, mask, cut)
    table = table.reset_index(drop=True)

    def row(group: str, sel: np.ndarray) -> dict:
        values = share[sel]
        half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
        mean = float(values.mean())
        return {"group": group, "n": int(sel.sum()), "share": mean, "ci_low": mean - half, "ci_high": mean + half}

    rows = [row("all", np.ones(len(share), bool))]
    if "age" in table.columns and len(table) >= 3:
        tertile = pd.qcut(table["age"].rank(method="first"), 3, labels=["young", "middle", "old"])
        for label in ["young", "middle", "old"]:
            sel = (tertile == label).to_numpy()
            ages = table.loc[sel, "age"]
            rows.append(row(f"age {label} ({ages.min():.0f}-{ages.max():.0f} y)", sel))
    if "site" in table.columns:
        for site in sorted(table["site"].astype(str).unique()):
            rows.append(row(f"site {site}", (table["site"].astype(str) == site).to_numpy()))
    return pd.DataFrame(rows)


def profile_correlation(profiles: list[np.ndarray]) -> pd.DataFrame:
    """Pearson correlation of regional profiles between model replicates.

    Parameters
    ----------
    profiles : list of array ``(N, R)``
        The same N subjects and R regions, one array per retrained model.

    Returns
    -------
    DataFrame
        One row per pair of replicates: ``a``, ``b``, ``r_all`` (all subject x
        region values pooled) and ``r_subject_mean`` (mean over subjects of the
        per-subject correlation).
    """
    rows = []
    for a in range(len(profiles)):
        for b in range(a + 1, len(profiles)):
            pa, pb = np.asarray(profiles[a], float), np.asarray(profiles[b], float)
            if pa.shape != pb.shape:
                raise ValueError(f"profiles {a} and {b} differ in shape: {pa.shape} vs {pb.shape}")
            ok = np.isfinite(pa) & np.isfinite(pb)
            r_all = float(np.corrcoef(pa[ok], pb[ok])[0, 1])
            per = [np.corrcoef(x[m], y[m])[0, 1] for x, y, m in zip(pa, pb, ok, strict=True)]
            rows.append({"a": a, "b": b, "r_all": r_all, "r_subject_mean": float(np.nanmean(per))})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class StabilityResult:
    """Regional-profile agreement of models retrained on re-drawn healthy references.

    Attributes
    ----------
    profiles : list of array ``(N, R)``
        One regional profile of the test subjects per replicate, in seed order.
    correlation : DataFrame
        :func:`profile_correlation` of the replicates (one row per pair).
    by_group : dict
        Group name -> mean pooled ``r`` of the replicate pairs on that group's
        subjects (groups without subjects are left out).
    seed_correlation : float
        Mean pooled ``r`` over all replicate pairs.
    main_correlation : float
        Mean pooled ``r`` of the main model's profile with each replicate.
    member_correlation : float
        The same agreement for single models: member k of one replicate against
        member k of another (same fold, other seed), averaged over members and
        pairs — what an ensemble of one would reach (NaN for one-member models).
    """

    profiles: list[np.ndarray]
    correlation: pd.DataFrame
    by_group: dict[str, float]
    seed_correlation: float
    main_correlation: float
    member_correlation: float = float("nan")


def stability_study(
    subjects: pd.DataFrame,
    test_volumes: np.ndarray,
    labels: np.ndarray,
    model_dir_root: str | os.PathLike,
    seeds: Sequence[int],
    *,
    main_profile: np.ndarray,
    epochs: int,
    minutes: float | None,
    training: dict,
    stats_options: dict | None,
    data_source: str,
    groups: Mapping[str, np.ndarray],
    covariates: pd.DataFrame | None = None,
    build: Callable = build_normative_model,
    progress: bool = False,
    reuse: bool = True,
) -> StabilityResult:
    """Retrain the normative model once per seed on the same healthy reference and compare profiles.

    Each replicate is built from ``subjects`` as they are — the same
    cross-fitting folds, so the same reference subjects and test subjects; only
    the seed (initialisation, batch order) changes — with the same budget
    (``epochs``, also the patience, and ``minutes``), and writes its model to
    ``<model_dir_root>/seed-<seed>``. Stability then measures the model alone.

    Parameters
    ----------
    subjects : DataFrame
        The main model's subject table with its ``split`` (and ``fold``) column.
    test_volumes : array ``(N, X, Y, Z)``
        The held-out test scans, profiled by every replicate.
    labels : int array ``(X, Y, Z)``
        Atlas labels on the model grid.
    model_dir_root : path
        Folder of the replicates' model folders.
    seeds : sequence of int
        One replicate per seed (at least two to correlate).
    main_profile : array ``(N, R)``
        The main model's regional profile of the same test subjects.
    epochs, minutes : int, float or None
        Training budget of every replicate (max epochs = patience; wall-clock cap).
    training : dict
        The main model's ``training.json``: its ``model`` settings and ``data``
        settings (without ``split_seed``) are reused.
    stats_options : dict or None
        Options of :func:`~nbutils.normative.pipeline.fit_normative_stats`.
    data_source : str
        Recorded with each replicate's statistics.
    groups : mapping
        Group name -> boolean mask over the test subjects.
    covariates : DataFrame, optional
        ``age``, ``sex``, ``site`` of the test subjects (conditional profiles).
    build : callable
        :func:`~nbutils.normative.pipeline.build_normative_model` or a stand-in
        with its signature returning ``(result, stats, model)``.
    progress : bool
        Passed to ``build``.
    reuse : bool
        Passed to ``build``: a replicate already built from the same scans,
        settings and seed is loaded instead of trained again.
    """
    data = {k: v for k, v in training["data"].items() if k != "split_seed"}
    profiles, member_profiles = [], []
    for s in seeds:
        _, st, m = build(
            subjects, Path(model_dir_root) / f"seed-{s}",
            model=training["model"], data=data, max_epochs=epochs, max_minutes=minutes,
            patience=epochs, seed=s, stats_options=stats_options, data_source=data_source,
            progress=progress, reuse=reuse,
        )  # fmt: skip
        _, zs = member_z_maps(m, st, test_volumes, covariates)
        profiles.append(regional_profiles(st, ensemble_z(zs, st.mask), labels, covariates)[0].to_numpy())
        member_profiles.append([regional_profiles(st, z_k, labels, covariates)[0].to_numpy() for z_k in zs])
    corr = profile_correlation(profiles)
    n_members = min(len(mp) for mp in member_profiles)
    member_corr = float(np.mean([profile_correlation([mp[k] for mp in member_profiles])["r_all"].mean()
                                 for k in range(n_members)])) if n_members > 1 else float("nan")  # fmt: skip
    by_group = {g: float(profile_correlation([p[mask_] for p in profiles])["r_all"].mean())
                for g, mask_ in groups.items() if mask_.sum() > 0}  # fmt: skip
    seed_corr = float(corr["r_all"].mean())
    main_corr = float(np.mean([profile_correlation([main_profile, p])["r_all"].iloc[0]
                               for p in profiles]))  # fmt: skip
    return StabilityResult(profiles, corr, by_group, seed_corr, main_corr, member_corr)


# --------------------------------------------------------------------------- against chance


def ad_localisation(profiles: pd.DataFrame, targets: Sequence[str], k: int = 5) -> tuple[dict, pd.DataFrame]:
    """Do the pre-specified AD target regions rank in each subject's top ``k`` by ``|profile|``?

    Parameters
    ----------
    profiles : DataFrame
        Subjects x regions (the regional deviation profile of each AD subject).
    targets : sequence of str
        The pre-specified target regions (:func:`nbutils.anatomy.ad_target_regions`).
    k : int
        Top regions that count.

    Returns
    -------
    summary : dict
        ``hit_rate``, ``chance`` (a random ranking of the regions: at least one
        target in the top ``k``), ``p_value`` (one-sided, exact), ``n``, ``hits``,
        ``n_regions``, ``n_targets``, ``k``.
    per_subject : DataFrame
        ``top regions`` and ``hit`` per subject.
    """
    targets = [t for t in targets if t in profiles.columns]
    if not targets:
        raise ValueError("none of the target regions is a column of the profiles")
    scores = profiles.abs()
    hits = topk_hit(scores, None, targets, k)
    n_regions = int(profiles.notna().any().sum())
    summary = topk_summary(hits, topk_chance(n_regions, len(targets), k))
    summary.update(n_regions=n_regions, n_targets=len(targets), k=k)
    tops = [", ".join(top_regions(row, profiles.columns, k)) for row in profiles.to_numpy()]
    return summary, pd.DataFrame({"top regions": tops, "hit": hits}, index=profiles.index)


def fit_intensity_regional_model(stats: NormativeStats, volumes: np.ndarray, covariates: pd.DataFrame,
                                 labels: np.ndarray):
    """The no-network regional baseline: a regional model of healthy reference subjects' intensity z-maps.

    The model's conditional voxel-wise *intensity* reference (``stats.intensity_z``, no autoencoder) is
    averaged per atlas region and a PCNtoolkit regional model is fitted on it, exactly as notebook 02 fits
    the autoencoder's. The reference's intensity z-maps are in-sample (their voxel statistics came from
    the same subjects), which makes this reference slightly under-dispersed but leaves its ranking of
    regions as it is.

    Parameters
    ----------
    stats : NormativeStats
        The normative model's statistics (its intensity reference, regions, measure and mask).
    volumes : array ``(N, X, Y, Z)``
        The healthy reference subjects' images.
    covariates : DataFrame
        Their ``age``, ``sex`` and ``site``.
    labels : int array ``(X, Y, Z)``
        The atlas labels of ``stats``.

    Returns
    -------
    nbutils.normative.conditional.RegionalModel
    """
    from .conditional import fit_regional_model

    return fit_regional_model(_intensity_scores(stats, volumes, covariates, labels), covariates,
                              stats.regional.regions)


def intensity_profiles(stats: NormativeStats, regional_model, volumes: np.ndarray, covariates: pd.DataFrame,
                       labels: np.ndarray) -> pd.DataFrame:
    """Regional profiles ``(N, R)`` of the no-network baseline (see :func:`fit_intensity_regional_model`)."""
    scores = _intensity_scores(stats, volumes, covariates, labels)
    return pd.DataFrame(regional_model.z(scores, covariates), columns=stats.regional.regions["name"].tolist())


def _intensity_scores(stats: NormativeStats, volumes: np.ndarray, covariates: pd.DataFrame,
                      labels: np.ndarray) -> np.ndarray:
    """Region scores ``(N, R)`` of the conditional intensity z-maps (the model's regions and measure)."""
    from .regional import region_statistics

    z = stats.intensity_z(volumes, covariates)
    return region_statistics(z, labels, stats.regional.regions["index"].to_numpy(), stats.mask)[stats.regional.measure]


def combined_profile(ae: pd.DataFrame, intensity: pd.DataFrame, healthy: np.ndarray | None = None,
                     rho: float | None = None) -> tuple[pd.DataFrame, float]:
    """The autoencoder's and the no-network regional profiles combined as correlated z-scores.

    ``(ae + intensity) / sqrt(2 + 2 rho)`` (Stouffer's sum of two correlated z-scores; Strube 1985, the
    rule :func:`~nbutils.normative.pipeline.ensemble_z` uses for the ensemble's members): a healthy
    region stays a unit-variance z, a region both detectors see as deviant adds up.

    Parameters
    ----------
    ae, intensity : DataFrame
        Subjects x regions, the same rows and columns.
    healthy : bool array, optional
        Rows of healthy subjects on which ``rho`` is measured (all finite region pairs pooled).
    rho : float, optional
        The correlation, when already measured (e.g. on other healthy subjects); overrides ``healthy``.

    Returns
    -------
    combined : DataFrame
    rho : float
    """
    if ae.shape != intensity.shape or list(ae.columns) != list(intensity.columns):
        raise ValueError(f"the two profiles differ in shape or regions: {ae.shape} vs {intensity.shape}")
    if rho is None:
        if healthy is None or not np.any(healthy):
            raise ValueError("rho needs healthy rows to be measured on")
        a, b = ae.to_numpy()[healthy].ravel(), intensity.to_numpy()[healthy].ravel()
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 3:
            raise ValueError("too few finite healthy regions to measure the correlation of the two profiles")
        rho = float(np.corrcoef(a[ok], b[ok])[0, 1])
    if not -1.0 < rho <= 1.0:
        raise ValueError(f"rho must be in (-1, 1], got {rho}")
    combined = (ae.to_numpy() + intensity.to_numpy()) / np.sqrt(2.0 + 2.0 * rho)
    return pd.DataFrame(combined, index=ae.index, columns=ae.columns), float(rho)


def target_composite(profiles: pd.DataFrame, targets: Sequence[str]) -> pd.Series:
    """Mean ``|profile|`` over the AD target regions: one pre-specified medial-temporal score per subject."""
    present = [t for t in targets if t in profiles.columns]
    if not present:
        raise ValueError("none of the target regions is a column of the profiles")
    return profiles[present].abs().mean(axis=1).rename("mtl_composite")


def age_matched_auc(
    scores: Sequence[float],
    diagnosis: Sequence[str],
    age: Sequence[float],
    case: str,
    control: str = "CN",
    margin: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """AUC of ``scores`` separating ``case`` from age-matched ``control`` subjects, with a bootstrap CI.

    Matching: :func:`nbutils.evaluation.age_matched` (controls aged within the
    cases' age range widened by ``margin`` years, by default
    :data:`~nbutils.evaluation.AGE_MATCH_MARGIN_YEARS`; every case is kept).

    Returns
    -------
    dict
        ``auc``, ``ci_low``, ``ci_high`` (95 %, stratified bootstrap), ``n_case``,
        ``n_control`` (after matching), ``n_control_all``, ``margin_years``.
    """
    margin = AGE_MATCH_MARGIN_YEARS if margin is None else margin
    scores, dx, age = np.asarray(scores, float), np.asarray(diagnosis), np.asarray(age, float)
    cases, controls = dx == case, dx == control
    nan = float("nan")
    out = {"auc": nan, "ci_low": nan, "ci_high": nan, "n_case": int(cases.sum()),
           "n_control": 0, "n_control_all": int(controls.sum())}  # fmt: skip
    if not cases.any() or not controls.any():
        return out
    matched = controls.copy()
    matched[controls] = age_matched(age[controls], age[cases], margin)
    out.update(n_control=int(matched.sum()), margin_years=float(margin))
    if matched.any():
        auc, ci_lo, ci_hi = auc_with_ci(scores[cases], scores[matched], seed=seed)
        out.update(auc=float(auc), ci_low=float(ci_lo), ci_high=float(ci_hi))
    return out


def lesion_wise(
    scores: dict[str, np.ndarray],
    thresholds: dict[str, float],
    truth: np.ndarray,
    mask: np.ndarray,
    voxel_volume_mm3: float,
    min_size: int = 0,
    subjects: Sequence | None = None,
) -> pd.DataFrame:
    """Lesion-wise detection of every method at its healthy-FPR threshold.

    A lesion (a connected component of the truth) is detected when a component
    of the method's segmentation (thresholded score, inside ``mask``, components
    smaller than ``min_size`` removed) overlaps it.

    Returns
    -------
    DataFrame
        One row per method and lesion (see :func:`nbutils.evaluation.lesion_detection`)
        plus ``method``.
    """
    mask = np.asarray(mask) > 0
    frames = []
    for name, s in scores.items():
        seg = segment(s, thresholds[name], mask, min_size)
        frames.append(lesion_detection(seg, truth, voxel_volume_mm3, subjects=subjects).assign(method=name))
    return pd.concat(frames, ignore_index=True)


def detection_by_class(
    scores: dict[str, np.ndarray],
    thresholds: Mapping[float, dict[str, float]],
    truth: np.ndarray,
    classes: Sequence[str],
    mask: np.ndarray,
    min_size: int = 0,
) -> pd.DataFrame:
    """:func:`detection_summary` per lesion class and healthy-FPR threshold, beside chance and the Dice ceiling.

    Parameters
    ----------
    scores : dict
        Method -> post-processed score maps ``(N, X, Y, Z)`` of the lesion scans.
    thresholds : mapping
        Healthy voxel FPR -> (method -> threshold), from :func:`healthy_thresholds`.
    truth : bool array ``(N, X, Y, Z)``
    classes : sequence of str
        Lesion class of each scan; ``"all"`` rows pool every scan.
    mask : array ``(X, Y, Z)``
        The analysis mask.

    Returns
    -------
    DataFrame
        One row per class, FPR and method: ``n_scans``, ``auprc``, ``auprc_chance``
        (the lesion-voxel prevalence: a random score's AUPRC), ``best_dice``,
        ``dice_at_fpr`` (mean over scans), ``dice_ceiling`` (mean over scans of the
        best Dice a perfectly sensitive method could reach with that FPR's false
        positives, :func:`nbutils.evaluation.scan_dice_ceiling`), ``threshold``.
    """
    mask, truth, classes = np.asarray(mask) > 0, np.asarray(truth) > 0, np.asarray(classes)
    scores = {name: _check_scores(name, s, truth) for name, s in scores.items()}
    rows = []
    for cls in ["all", *sorted(set(classes))]:
        keep = np.ones(len(classes), bool) if cls == "all" else classes == cls
        t = truth[keep]
        chance = float(t[:, mask].mean())
        # threshold-free, so once per class: one sort of the pooled voxels per method, a thread each
        pooled = [(s[keep][:, mask], t[:, mask]) for s in scores.values()]
        ranking = dict(zip(scores, per_volume(lambda st: ranking_metrics(*st), pooled), strict=True))
        for fpr, thr in thresholds.items():
            ceiling = float(np.mean(scan_dice_ceiling(t, mask, fpr)))
            for name, s in scores.items():
                ap, bd, _ = ranking[name]
                dices = dice_at_threshold(s[keep], thr[name], t, mask, min_size)
                rows.append({"class": cls, "fpr": fpr, "method": name, "n_scans": int(keep.sum()),
                             "auprc": ap, "auprc_chance": chance, "best_dice": bd,
                             "dice_at_fpr": float(np.mean(dices)), "dice_ceiling": ceiling,
                             "threshold": thr[name]})
    return pd.DataFrame(rows)


def false_positive_clusters(
    healthy_scores: dict[str, np.ndarray], thresholds: dict[str, float], mask: np.ndarray, min_size: int = 0
) -> pd.DataFrame:
    """Segmented components on healthy scans (all false), per method and scan.

    Returns
    -------
    DataFrame
        Columns ``method``, ``scan`` (position), ``components``, ``voxels``.
    """
    mask = np.asarray(mask) > 0
    rows = []
    for name, s in healthy_scores.items():
        seg = segment(s, thresholds[name], mask, min_size)
        comps = np.atleast_1d(false_positive_components(seg))
        rows += [{"method": name, "scan": i, "components": int(c), "voxels": int(seg[i].sum())}
                 for i, c in enumerate(comps)]
    return pd.DataFrame(rows, columns=["method", "scan", "components", "voxels"])
