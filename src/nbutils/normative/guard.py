"""A guard against scans unlike the model's healthy reference.

A normative model can only say how a scan deviates from the scans it was
calibrated on. A scan from another scanner or contrast, a failed
preprocessing, or a real scan given to a model trained on synthetic data
yields a profile full of "deviations" that say nothing about the person. The
guard measures how far a scan is from the reference *as a whole* and turns
that into a prominent warning, so such a profile is never shown silently.

Two measures, each with a reference range fitted on the held-out healthy
validation scans (the same scans that define the normative statistics):

``similarity``
    Pearson correlation of the scan with the healthy training mean image
    (``stats.intensity.mean``) inside the brain mask; flagged when *below*
    the range. Catches another contrast, an inverted or shifted image, a
    failed registration or skull stripping.
``mean_abs_z``
    Mean voxel ``|z|`` of the deviation map inside the mask; flagged when
    *above* the range.

The regional total deviation is deliberately *not* a guard measure: it is the
clinical output, and a patient is supposed to exceed the healthy range there.
A very large lesion can still trip mean ``|z|``; the warning says so.

The reference's z-maps are leave-one-out (as for the thresholds), so each
reference scan is scored like a new one; at least :data:`MIN_REFERENCE` scans
are needed. A range's limit is the one-sided 99.9 % *prediction* limit for a
new scan from a normal distribution fitted to the (transformed: Fisher
``atanh`` for the correlation, ``log`` for mean ``|z|``) reference values —
Student's t with n-1 degrees of freedom times ``sd * sqrt(1 + 1/n)``, so a small
reference gives a wide range rather than false alarms — widened to include
every reference value. The guard is saved beside the checkpoint as
``scan_guard.json`` (:func:`guard_path`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps

__all__ = [
    "GUARD_FILE",
    "GuardResult",
    "ScanGuard",
    "check_scan",
    "fit_guard",
    "fit_guard_beside",
    "guard_path",
    "load_guard",
    "save_guard",
    "scan_measures",
]

GUARD_FILE = "scan_guard.json"
#: Fewest healthy reference scans a guard is fitted on (leave-one-out z-maps need 3).
MIN_REFERENCE = 3
#: One-sided centile of the reference distribution beyond which a measure is flagged.
CENTILE = 0.999
#: Direction in which each measure is abnormal, its transform and its wording.
MEASURES = {
    "similarity": ("low", np.arctanh, np.tanh, "correlation with the healthy reference mean image"),
    "mean_abs_z": ("high", np.log, np.exp, "mean voxel |z| in the brain"),
}


def guard_path(checkpoint: str | os.PathLike) -> Path:
    """``scan_guard.json`` beside a checkpoint."""
    return Path(checkpoint).with_name(GUARD_FILE)


@dataclass(frozen=True)
class ScanGuard:
    """Reference ranges of the guard's measures.

    Attributes
    ----------
    ranges : dict
        Measure -> ``{"limit", "direction", "reference_min", "reference_max",
        "reference_median", "n"}``.
    data_source : str
        What the reference scans were (the model's training data source).
    """

    ranges: dict
    data_source: str = ""
    centile: float = CENTILE

    def describe(self, name: str) -> str:
        """``"healthy reference 0.91 to 0.97 (n=12); flagged below 0.88 (99.9% prediction limit)"``."""
        r = self.ranges[name]
        side = "below" if r["direction"] == "low" else "above"
        return (f"healthy reference {r['reference_min']:.3g} to {r['reference_max']:.3g} (n={r['n']}); "
                f"flagged {side} {r['limit']:.3g} ({self.centile:.1%} prediction limit)")


@dataclass(frozen=True)
class GuardResult:
    """The guard's verdict on one scan.

    ``flagged`` is ``None`` when the guard is unavailable (old model folder);
    ``warning`` is empty only for a scan inside every reference range.
    """

    measures: dict[str, float]
    outside: list[str] = field(default_factory=list)
    flagged: bool | None = False
    warning: str = ""


def scan_measures(stats, volume: np.ndarray, z: np.ndarray) -> dict:
    """The guard's measures of one scan (or a stack ``(N, X, Y, Z)``: arrays)."""
    mask = stats.mask
    ref = np.asarray(stats.intensity.mean)[mask]
    vol = np.asarray(volume, dtype=np.float64)
    one = vol.ndim == 3
    vol, zz = (vol[None], np.asarray(z)[None]) if one else (vol, np.asarray(z))
    x = vol[:, mask]
    xc, rc = x - x.mean(axis=1, keepdims=True), ref - ref.mean()
    denom = np.sqrt((xc**2).sum(axis=1) * (rc**2).sum())
    similarity = np.where(denom > 0, (xc @ rc) / np.where(denom > 0, denom, 1.0), 0.0)
    out = {"similarity": similarity, "mean_abs_z": np.abs(zz[:, mask]).mean(axis=1)}
    return {k: float(v[0]) for k, v in out.items()} if one else out


def _range(values: np.ndarray, direction: str, forward, inverse, centile: float) -> dict:
    v = np.asarray(values, dtype=np.float64)
    t = forward(np.clip(v, -0.999999, 0.999999) if forward is np.arctanh else np.maximum(v, 1e-12)) \
        if forward is not None else v
    n = len(t)
    q = float(sps.t.ppf(centile, n - 1)) * np.sqrt(1 + 1 / n)
    sd = float(t.std(ddof=1))
    limit = float(t.mean() - q * sd) if direction == "low" else float(t.mean() + q * sd)
    limit = float(inverse(limit)) if inverse is not None else limit
    limit = min(limit, float(v.min())) if direction == "low" else max(limit, float(v.max()))
    return {"limit": limit, "direction": direction, "reference_min": float(v.min()),
            "reference_max": float(v.max()), "reference_median": float(np.median(v)), "n": int(len(v))}


def fit_guard(model, stats, val_volumes: np.ndarray, centile: float = CENTILE,
              residuals: np.ndarray | None = None) -> ScanGuard:  # fmt: skip
    """Reference ranges from the healthy reference scans and their leave-one-out z-maps.

    Parameters
    ----------
    model : torch.nn.Module
        The trained autoencoder (unused when ``residuals`` are given).
    stats : NormativeStats
        Its normative statistics (fitted on ``val_volumes``).
    val_volumes : array ``(N, X, Y, Z)``
        The healthy reference scans, at least :data:`MIN_REFERENCE`.
    residuals : array ``(N, X, Y, Z)``, optional
        Their out-of-sample residuals (cross-fitting); else reconstructed with ``model``.
    """
    from .deviation import leave_one_out_z, residual
    from .model import reconstruct
    if len(val_volumes) < MIN_REFERENCE:
        raise ValueError(f"the scan guard needs at least {MIN_REFERENCE} healthy reference scans "
                         f"(leave-one-out z-maps), got {len(val_volumes)}")
    mask = stats.mask
    res = residuals if residuals is not None else residual(val_volumes, reconstruct(model, val_volumes), mask)
    map_sigma = stats.provenance.get("stats_options", {}).get("map_sigma", 2.0)
    z = leave_one_out_z(res, mask, stats.residual.sigma, map_sigma)
    z = z / float(stats.provenance.get("calibration_factor", 1.0))
    values = scan_measures(stats, val_volumes, z)
    ranges = {name: _range(values[name], *MEASURES[name][:3], centile) for name in values}
    return ScanGuard(ranges, str(stats.provenance.get("data_source", "")), centile)


def save_guard(guard: ScanGuard, checkpoint: str | os.PathLike) -> Path:
    """Write the guard atomically to ``scan_guard.json`` beside ``checkpoint``."""
    from nbutils.io import write_json

    return write_json(guard_path(checkpoint), {"ranges": guard.ranges, "data_source": guard.data_source,
                                               "centile": guard.centile, "version": 1})


def load_guard(checkpoint: str | os.PathLike) -> ScanGuard | None:
    """The guard saved beside ``checkpoint``, or ``None`` (with a warning) for older model folders."""
    import json

    path = guard_path(checkpoint)
    if not path.is_file():
        warnings.warn(f"no scan guard at {path} (model folder older than the guard): scans unlike the "
                      "reference will not be flagged; retrain with notebook 02 to get one", stacklevel=2)
        return None
    try:
        meta = json.loads(path.read_text())
        return ScanGuard(meta["ranges"], meta.get("data_source", ""), float(meta.get("centile", CENTILE)))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a scan guard file ({type(err).__name__}: {err})") from err


def check_scan(guard: ScanGuard | None, stats, volume: np.ndarray, z: np.ndarray) -> GuardResult:
    """Is one scan inside the healthy reference's ranges?

    Parameters
    ----------
    guard : ScanGuard or None
        ``None`` (no guard saved with the model) gives ``flagged=None`` and a
        warning that the check was not possible.
    stats : NormativeStats
    volume, z : arrays ``(X, Y, Z)``
        The preprocessed scan on the model grid and its deviation z-map.

    Returns
    -------
    GuardResult
        ``warning`` names each measure outside its range with the value and the
        reference range, and what the model was trained on.
    """
    measures = scan_measures(stats, volume, z)
    trained = stats.provenance.get("data_source") or "unknown data"
    if guard is None:
        return GuardResult(measures, [], None,
                           "SCAN GUARD UNAVAILABLE: no scan_guard.json was saved with this model (a model "
                           f"folder older than the guard, or fewer than {MIN_REFERENCE} healthy reference scans), "
                           "so nobody checked that the scan resembles the healthy reference "
                           f"(model trained on {trained}); read the profile with care.")
    outside = []
    for name, value in measures.items():
        r = guard.ranges.get(name)
        if r is None:
            continue
        if (value < r["limit"]) if r["direction"] == "low" else (value > r["limit"]):
            outside.append(name)
    if not outside:
        return GuardResult(measures, [], False, "")
    lines = [f"{MEASURES[n][3]} = {measures[n]:.3g}: {guard.describe(n)}" for n in outside]
    text = ("WARNING: SCAN UNLIKE THE HEALTHY REFERENCE. " + "; ".join(lines) + f". The model was trained "
            f"on {trained}. Another scanner or contrast, a failed preprocessing or a model trained on other "
            "data makes the deviation profile meaningless; check the scan before reading it "
            "(a very large lesion can also trip the |z| measures).")
    return GuardResult(measures, outside, True, text)


def fit_guard_beside(model, stats, val_volumes: np.ndarray, checkpoint: str | os.PathLike,
                     residuals: np.ndarray | None = None) -> ScanGuard | None:  # fmt: skip
    """Fit the guard on the validation scans and save it beside ``checkpoint`` (the training hook).

    With fewer than :data:`MIN_REFERENCE` validation scans no guard is written
    (a warning says so); checks then report the guard as unavailable.
    """
    if len(val_volumes) < MIN_REFERENCE:
        warnings.warn(f"{len(val_volumes)} validation scan(s): no scan guard fitted for {checkpoint}", stacklevel=2)
        return None
    guard = fit_guard(model, stats, val_volumes, residuals=residuals)
    save_guard(guard, checkpoint)
    return guard
