"""Evaluation that can fail and shows chance: lesion-wise detection, ceilings, baselines.

A voxel Dice of 0.2 means little without knowing what was *possible* and what
*chance* gives. The functions here put every headline number beside its
yardstick (Baur et al. 2021; Meissen et al. 2021; Behrendt et al.):

* **lesion-wise detection** (:func:`lesion_detection`, :func:`detection_rate_by`):
  a true lesion (connected component of the truth) counts as detected when
  any segmented voxel overlaps it, reported by lesion size, with exact
  binomial confidence intervals;
* **false-positive components** (:func:`false_positive_components`): clusters
  of the segmentation touching no lesion (on a healthy scan, every cluster);
* **the Dice ceiling of a voxel false-positive rate** (:func:`dice_ceiling`,
  :func:`scan_dice_ceiling`): a threshold fixed on healthy scans at 5 % FPR
  caps Dice at ``2L / (2L + FP)`` even with perfect sensitivity, which is low
  for small lesions;
* **top-k hit rate against chance** (:func:`topk_hit`, :func:`topk_chance`,
  :func:`topk_summary`): does a regional deviation profile rank a target
  region (e.g. hippocampus) among its k highest more often than a random ranking?
* **AUC against age-matched controls** (:func:`age_matched_controls`,
  :func:`auc_with_ci`): a case-vs-control AUC with a stratified bootstrap CI,
  using :func:`nbutils.classify.metrics.binary_auc`.

Voxel Dice and AUPRC live in :mod:`nbutils.normative.deviation` (``dice``,
``auprc``, ``best_dice``); the share of a saliency/score map inside regions
versus their share of the brain is :func:`nbutils.classify.interpret.saliency_mass`.

Pure numpy/scipy/pandas. Volumes are ``(X, Y, Z)`` or a batch ``(N, X, Y, Z)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from nbutils.classify.metrics import binary_auc

__all__ = [
    "AGE_MATCH_MARGIN_YEARS",
    "age_matched",
    "auc_with_ci",
    "detection_rate_by",
    "dice_ceiling",
    "false_positive_components",
    "lesion_components",
    "lesion_detection",
    "scan_dice_ceiling",
    "size_bin_labels",
    "topk_chance",
    "topk_hit",
    "topk_summary",
]

_CONNECTIVITY = {6: 1, 18: 2, 26: 3}


# ---------------------------------------------------------------- components


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in _CONNECTIVITY:
        raise ValueError(f"connectivity must be 6, 18 or 26 (3D neighbourhoods), got {connectivity!r}")
    return ndimage.generate_binary_structure(3, _CONNECTIVITY[connectivity])


def _as_batch(volume: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """Boolean ``(N, X, Y, Z)`` view of a volume or batch, and whether it was a batch."""
    arr = np.asarray(volume)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{name} must be a volume (X, Y, Z) or a batch (N, X, Y, Z), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    arr = arr > 0
    return (arr, True) if arr.ndim == 4 else (arr[None], False)


def _pair(segmentation: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    seg, batch = _as_batch(segmentation, "segmentation")
    tru, _ = _as_batch(truth, "truth")
    if seg.shape != tru.shape:
        raise ValueError(
            f"segmentation shape {np.shape(segmentation)} does not match truth shape {np.shape(truth)}"
        )
    return seg, tru, batch


def lesion_components(truth: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Label the connected components (lesions) of one binary volume.

    Parameters
    ----------
    truth : array ``(X, Y, Z)``
        Lesion mask (non-zero = lesion).
    connectivity : {6, 18, 26}
        Voxel neighbourhood: faces, faces + edges, or faces + edges + corners.

    Returns
    -------
    labels : int array ``(X, Y, Z)``
        0 = background, ``1 .. n`` = lesion number.
    n : int
        Number of lesions.
    """
    arr = np.asarray(truth)
    if arr.ndim != 3:
        raise ValueError(f"lesion_components takes one volume (X, Y, Z), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"truth is empty (shape {arr.shape})")
    labels, n = ndimage.label(arr > 0, structure=_structure(connectivity))
    return labels, int(n)


# ---------------------------------------------------------------- lesion-wise detection


def size_bin_labels(edges_cm3: Sequence[float]) -> list[str]:
    """Labels of the size bins cut at ``edges_cm3``: ``(1, 10)`` -> ``< 1 cm³``, ``1–10 cm³``, ``≥ 10 cm³``."""
    edges = [float(e) for e in edges_cm3]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or edges[0] <= 0:
        raise ValueError(f"size bin edges must be positive and strictly increasing, got {list(edges_cm3)}")
    inner = [f"{a:g}–{b:g} cm³" for a, b in zip(edges, edges[1:], strict=False)]
    return [f"< {edges[0]:g} cm³", *inner, f"≥ {edges[-1]:g} cm³"]


def lesion_detection(
    segmentation: np.ndarray,
    truth: np.ndarray,
    voxel_volume_mm3: float,
    connectivity: int = 26,
    subjects: Sequence | None = None,
    size_bins_cm3: Sequence[float] = (1.0, 10.0),
) -> pd.DataFrame:
    """One row per true lesion: its size and whether the segmentation touches it.

    A lesion is a connected component of the truth of one scan; it is
    ``detected`` when at least one segmented voxel lies inside it. This is the
    lenient lesion-wise criterion: pair it with :func:`false_positive_components`,
    otherwise segmenting the whole brain would detect everything.

    Parameters
    ----------
    segmentation, truth : array ``(X, Y, Z)`` or ``(N, X, Y, Z)``, same shape
        Binary (non-zero = positive) segmentation and lesion masks.
    voxel_volume_mm3 : float
        Volume of one voxel in mm³ (8 for a 2 mm grid). Required: the size bins
        depend on it.
    connectivity : {6, 18, 26}
        Neighbourhood defining a lesion.
    subjects : sequence, optional
        One identifier per scan for the ``subject`` column (default: the position).
    size_bins_cm3 : sequence of float
        Edges of the ``size_bin`` categories (see :func:`size_bin_labels`).

    Returns
    -------
    DataFrame
        Columns ``subject``, ``lesion`` (1-based number within the scan),
        ``voxels``, ``volume_cm3``, ``overlap_voxels``, ``detected`` (bool) and
        ``size_bin`` (ordered categorical). Scans without lesions add no row.
    """
    seg, tru, _ = _pair(segmentation, truth)
    if not voxel_volume_mm3 > 0:
        raise ValueError(f"voxel_volume_mm3 must be positive, got {voxel_volume_mm3}")
    ids = list(range(len(tru))) if subjects is None else list(subjects)
    if len(ids) != len(tru):
        raise ValueError(f"{len(ids)} subject ids for {len(tru)} scans")
    labels_text = size_bin_labels(size_bins_cm3)
    rows = []
    for sid, s, t in zip(ids, seg, tru, strict=True):
        labels, n = lesion_components(t, connectivity)
        if n == 0:
            continue
        voxels = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        overlap = np.bincount(labels[s].ravel(), minlength=n + 1)[1:]
        for i in range(n):
            rows.append({
                "subject": sid, "lesion": i + 1, "voxels": int(voxels[i]),
                "volume_cm3": voxels[i] * voxel_volume_mm3 / 1000.0,
                "overlap_voxels": int(overlap[i]), "detected": bool(overlap[i] > 0),
            })  # fmt: skip
    columns = ["subject", "lesion", "voxels", "volume_cm3", "overlap_voxels", "detected"]
    out = pd.DataFrame(rows, columns=columns).astype(
        {"lesion": int, "voxels": int, "volume_cm3": float, "overlap_voxels": int, "detected": bool}
    )
    edges = [-np.inf, *[float(e) for e in size_bins_cm3], np.inf]
    out["size_bin"] = pd.cut(out["volume_cm3"], edges, right=False, labels=labels_text)
    return out


def detection_rate_by(
    lesions: pd.DataFrame, by: str | Sequence[str] | None = "size_bin", level: float = 0.95
) -> pd.DataFrame:
    """Share of lesions detected, per group, with an exact (Clopper-Pearson) interval.

    Parameters
    ----------
    lesions : DataFrame
        Output of :func:`lesion_detection`, possibly with extra columns (e.g. a
        tumour ``class`` merged in by ``subject``).
    by : str, list of str or None
        Grouping column(s); None gives one overall row. Empty categories of a
        categorical column (e.g. no lesion ``≥ 10 cm³``) appear with ``n_lesions`` 0.
    level : float
        Confidence level of the interval.

    Returns
    -------
    DataFrame
        Columns ``n_lesions``, ``n_detected``, ``detection_rate``, ``ci_lo``,
        ``ci_hi`` (NaN rate and interval for empty groups), one row per group.
    """
    if "detected" not in lesions:
        raise ValueError("lesions needs a boolean 'detected' column (see lesion_detection)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in lesions]
    if missing:
        raise ValueError(f"grouping column(s) {missing} not in the lesion table {list(lesions.columns)}")

    detected = lesions["detected"].astype(bool)
    if keys:
        grouped = detected.groupby([lesions[k] for k in keys], observed=False)
        out = grouped.agg(n_lesions="size", n_detected="sum")
    else:
        out = pd.DataFrame({"n_lesions": [detected.size], "n_detected": [int(detected.sum())]},
                           index=pd.Index(["all"], name="group"))  # fmt: skip
    out = out.astype({"n_lesions": int, "n_detected": int})
    n, k = out["n_lesions"].to_numpy(), out["n_detected"].to_numpy()
    cis = [
        stats.binomtest(int(ki), int(ni)).proportion_ci(confidence_level=level, method="exact")
        if ni > 0 else None
        for ki, ni in zip(k, n, strict=True)
    ]
    out["detection_rate"] = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    out["ci_lo"] = [np.nan if ci is None else ci.low for ci in cis]
    out["ci_hi"] = [np.nan if ci is None else ci.high for ci in cis]
    return out


def false_positive_components(
    segmentation: np.ndarray, truth: np.ndarray | None = None, connectivity: int = 26
) -> int | np.ndarray:
    """Number of segmented components that touch no true lesion voxel.

    Parameters
    ----------
    segmentation : array ``(X, Y, Z)`` or ``(N, X, Y, Z)``
    truth : array, same shape, optional
        Lesion masks; None means healthy scans, where every component is false.
    connectivity : {6, 18, 26}

    Returns
    -------
    int for one volume, int array ``(N,)`` for a batch.
    """
    if truth is None:
        seg, batch = _as_batch(segmentation, "segmentation")
        tru = np.zeros_like(seg)
    else:
        seg, tru, batch = _pair(segmentation, truth)
    structure = _structure(connectivity)
    counts = []
    for s, t in zip(seg, tru, strict=True):
        labels, n = ndimage.label(s, structure=structure)
        touching = np.unique(labels[t & s])
        counts.append(n - int((touching > 0).sum()))
    return np.array(counts, dtype=int) if batch else counts[0]


# ---------------------------------------------------------------- Dice ceiling


def dice_ceiling(
    lesion_voxels: float | np.ndarray, fpr: float | np.ndarray, mask_voxels: float | np.ndarray
) -> np.ndarray | float:
    """Best Dice reachable at a voxel false-positive rate, with perfect sensitivity.

    With ``L`` lesion voxels in an analysis mask of ``M`` voxels, a threshold
    with voxel FPR ``f`` on healthy tissue is expected to mark
    ``FP = f * (M - L)`` healthy voxels. Even finding every lesion voxel, Dice
    is at most ``2L / (2L + FP)``. (With ``L = 0`` the ceiling is 0, or 1 when
    ``FP = 0`` too, matching :func:`nbutils.normative.deviation.dice`.)

    Parameters
    ----------
    lesion_voxels : float or array
        Lesion voxels inside the analysis mask, per scan.
    fpr : float or array
        Voxel false-positive rate on healthy tissue, in [0, 1].
    mask_voxels : float or array
        Voxels of the analysis (brain) mask, lesion included.

    Returns
    -------
    float or array (broadcast of the inputs)
    """
    lesion = np.asarray(lesion_voxels, dtype=float)
    rate = np.asarray(fpr, dtype=float)
    mask = np.asarray(mask_voxels, dtype=float)
    for name, v in (("lesion_voxels", lesion), ("fpr", rate), ("mask_voxels", mask)):
        if v.size == 0:
            raise ValueError(f"{name} is empty")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} has non-finite values")
    if np.any(lesion < 0):
        raise ValueError("lesion_voxels must be >= 0")
    if np.any((rate < 0) | (rate > 1)):
        raise ValueError(f"fpr must be in [0, 1], got {rate}")
    if np.any(lesion > mask):
        raise ValueError("lesion_voxels exceeds mask_voxels: count lesion voxels inside the analysis mask")
    fp = rate * (mask - lesion)
    den = 2 * lesion + fp
    out = np.where(den > 0, 2 * lesion / np.where(den > 0, den, 1.0), 1.0)
    return float(out) if out.ndim == 0 else out


def scan_dice_ceiling(truth: np.ndarray, mask: np.ndarray, fpr: float) -> np.ndarray:
    """:func:`dice_ceiling` of each scan, counting lesion and mask voxels.

    Parameters
    ----------
    truth : array ``(X, Y, Z)`` or ``(N, X, Y, Z)``
        Lesion masks (only voxels inside ``mask`` count).
    mask : array ``(X, Y, Z)``
        Analysis (brain) mask.
    fpr : float
        Voxel false-positive rate of the threshold on healthy scans.

    Returns
    -------
    array ``(N,)``
        Per-scan ceilings; their mean is the yardstick for a mean per-scan Dice.
    """
    tru, _ = _as_batch(truth, "truth")
    m = np.asarray(mask) > 0
    if m.shape != tru.shape[1:]:
        raise ValueError(f"mask shape {m.shape} does not match volume shape {tru.shape[1:]}")
    if not m.any():
        raise ValueError("analysis mask is empty")
    lesion = tru[:, m].sum(axis=1)
    return np.atleast_1d(dice_ceiling(lesion, fpr, int(m.sum())))


# ---------------------------------------------------------------- top-k against chance


def topk_chance(n_regions: int, n_targets: int | np.ndarray, k: int) -> float | np.ndarray:
    """Probability that a uniformly random ranking puts a target in its top ``k``.

    ``1 - C(n - t, k) / C(n, k)`` for ``n`` regions of which ``t`` are targets
    (exact integer binomials). ``n_targets`` may be an array (one per subject).
    """
    n, kk = int(n_regions), int(k)
    if n < 1:
        raise ValueError(f"n_regions must be >= 1, got {n_regions}")
    if not 1 <= kk <= n:
        raise ValueError(f"k must be in 1..n_regions={n}, got {k}")
    t = np.asarray(n_targets)
    if t.size == 0:
        raise ValueError("n_targets is empty")
    if np.any(t < 0) or np.any(t > n) or np.any(t != np.round(t)):
        raise ValueError(f"n_targets must be whole numbers in 0..n_regions={n}, got {n_targets}")
    total = math.comb(n, kk)
    out = np.array([1.0 - math.comb(n - int(ti), kk) / total for ti in t.ravel()]).reshape(t.shape)
    return float(out) if out.ndim == 0 else out


def topk_hit(
    profile: np.ndarray | pd.DataFrame,
    names: Sequence[str] | None,
    targets: Sequence[str] | Sequence[Sequence[str]],
    k: int,
) -> np.ndarray:
    """Whether each subject's ``k`` highest-scoring regions include a target region.

    Parameters
    ----------
    profile : array ``(R,)`` or ``(N, R)``, or DataFrame (subjects x regions)
        Regional scores (higher = more deviant). NaN ranks last. Ties are broken
        by region order (a stable sort), so ties never favour the targets unless
        they come first in ``names``.
    names : sequence of str or None
        The ``R`` region names (None: the DataFrame's columns).
    targets : sequence of str, or one sequence of str per subject
        Target regions: shared by all subjects (e.g. ``["Left Hippocampus",
        "Right Hippocampus"]``) or per subject (e.g. the region holding each tumour).
    k : int
        How many top regions count, 1..R.

    Returns
    -------
    bool array ``(N,)`` (``(1,)`` for a single profile).
    """
    if isinstance(profile, pd.DataFrame):
        names = list(profile.columns) if names is None else names
        profile = profile.to_numpy(dtype=float)
    scores = np.atleast_2d(np.asarray(profile, dtype=float))
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"profile must be (R,) or (N, R) and non-empty, got shape {np.shape(profile)}")
    if names is None:
        raise ValueError("names are needed unless profile is a DataFrame with region columns")
    names = [str(x) for x in names]
    n_sub, n_reg = scores.shape
    if len(names) != n_reg:
        raise ValueError(f"{len(names)} region names for {n_reg} profile columns")
    if not 1 <= k <= n_reg:
        raise ValueError(f"k must be in 1..{n_reg} (number of regions), got {k}")
    if isinstance(targets, str):
        raise ValueError("targets must be a sequence of region names, not one string")
    shared = all(isinstance(t, str) for t in targets)
    per_subject = [list(targets)] * n_sub if shared else [list(t) for t in targets]
    if len(per_subject) != n_sub:
        raise ValueError(f"{len(per_subject)} target lists for {n_sub} subjects")
    index = {name: i for i, name in enumerate(names)}
    key = np.where(np.isnan(scores), np.inf, -scores)  # ascending: NaN last
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    hits = np.empty(n_sub, dtype=bool)
    for i, tlist in enumerate(per_subject):
        unknown = [t for t in tlist if t not in index]
        if unknown or not tlist:
            raise ValueError(f"subject {i}: target regions {unknown or tlist} not among the region names")
        hits[i] = bool(np.isin(order[i], [index[t] for t in tlist]).any())
    return hits


def topk_summary(hits: Sequence[bool] | np.ndarray, chance: float | Sequence[float]) -> dict[str, float]:
    """Observed top-k hit rate beside chance, with an exact one-sided p-value.

    Parameters
    ----------
    hits : bool array ``(N,)``
        From :func:`topk_hit`.
    chance : float or array ``(N,)``
        From :func:`topk_chance` (per subject when the number of targets varies).

    Returns
    -------
    dict
        ``hit_rate``, ``chance`` (mean), ``n``, ``hits`` and ``p_value`` =
        P(at least this many hits | random rankings): the exact binomial test
        (:func:`scipy.stats.binomtest`, ``alternative="greater"``) for one
        chance level, the exact Poisson-binomial tail for per-subject levels.
    """
    h = np.asarray(hits, dtype=bool).ravel()
    if h.size == 0:
        raise ValueError("hits is empty")
    p = np.asarray(chance, dtype=float).ravel()
    if p.size == 1:
        p = np.full(h.shape, p[0])
    if p.shape != h.shape:
        raise ValueError(f"{p.size} chance levels for {h.size} subjects")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("chance levels must be probabilities in [0, 1]")
    n, x = int(h.size), int(h.sum())
    if np.all(p == p[0]):
        p_value = float(stats.binomtest(x, n, float(p[0]), alternative="greater").pvalue)
    else:  # Poisson-binomial: distribution of the number of hits, by convolution
        dist = np.array([1.0])
        for pi in p:
            dist = np.convolve(dist, [1.0 - pi, pi])
        p_value = float(min(1.0, dist[x:].sum()))
    return {"hit_rate": x / n, "chance": float(p.mean()), "n": n, "hits": x, "p_value": p_value}


# ---------------------------------------------------------------- AUC against controls


#: Controls count as age-matched when aged within the cases' age range widened by this many years.
AGE_MATCH_MARGIN_YEARS = 5.0


def age_matched(
    control_ages: Sequence[float], case_ages: Sequence[float], margin_years: float = AGE_MATCH_MARGIN_YEARS
) -> np.ndarray:
    """Which controls are age-matched to a group of cases: the one matching rule of the suite.

    A control is kept when its age lies within ``[min(case ages) - margin,
    max(case ages) + margin]``. Every case is kept. Young controls, whom no case
    resembles, would otherwise make any age-related measure look like a
    disease marker.

    Parameters
    ----------
    control_ages, case_ages : sequence of float
        Ages in years.
    margin_years : float
        Widening of the cases' age range, >= 0.

    Returns
    -------
    bool array, one entry per control.
    """
    controls = np.asarray(control_ages, dtype=float).ravel()
    cases = np.asarray(case_ages, dtype=float).ravel()
    if not (np.all(np.isfinite(controls)) and np.all(np.isfinite(cases))):
        raise ValueError("ages must be finite (no NaN)")
    if not margin_years >= 0:
        raise ValueError(f"margin_years must be >= 0, got {margin_years}")
    if cases.size == 0:
        return np.zeros(controls.size, dtype=bool)
    return (controls >= cases.min() - margin_years) & (controls <= cases.max() + margin_years)


def auc_with_ci(
    pos_scores: Sequence[float],
    neg_scores: Sequence[float],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """AUC of cases (positives) against controls, with a stratified bootstrap CI.

    The AUC is :func:`nbutils.classify.metrics.binary_auc` (Mann-Whitney,
    ties count half; 0.5 = chance). The interval is the percentile interval of
    ``n_boot`` bootstrap AUCs, each resampling the positives and the negatives
    separately with replacement (so every replicate keeps both group sizes).

    Returns
    -------
    (auc, lo, hi)
    """
    pos = np.asarray(pos_scores, dtype=float).ravel()
    neg = np.asarray(neg_scores, dtype=float).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"need at least one positive and one negative score, got {pos.size} and {neg.size}")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise ValueError("scores must be finite (drop or impute NaN first)")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    y = np.r_[np.ones(pos.size, int), np.zeros(neg.size, int)]
    auc = binary_auc(y, np.r_[pos, neg])
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        sample = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        boots[b] = binary_auc(y, sample)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1.0 - alpha])
    return float(auc), float(lo), float(hi)
