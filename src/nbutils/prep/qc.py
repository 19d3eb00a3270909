"""Input QC that says no: scans the pipeline cannot analyse meaningfully are flagged with the reason.

Three rules, each a documented module constant with its rationale:

- **voxel size**: the largest voxel edge of the input (``voxel_max_mm``);
- **field of view**: the share of the native brain mask's surface lying on
  the image's outer faces (``fov_contact``): a brain cut by the field of view;
- **template correlation**: ``template_corr`` far below the rest of the batch
  (robust z against the batch median and MAD): a registration or contrast
  outlier.

A ``fail`` makes the scan ``rejected`` in ``prep.tsv`` (status is no longer
``done``, so nothing downstream uses it); a ``warn`` keeps it ``done`` with the
reason in ``qc_reasons`` for someone to look at. The measurements are stored
per scan; the decisions are taken by :func:`assess` over the whole table on
every run, so changing a limit never needs a scan to be re-processed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "CORR_MAD_FLOOR",
    "CORR_MIN_BATCH",
    "CORR_OUTLIER_K",
    "FOV_FAIL_SHARE",
    "FOV_WARN_SHARE",
    "VOXEL_FAIL_MM",
    "VOXEL_WARN_MM",
    "assess",
    "fov_contact",
    "scan_flags",
]

#: Largest voxel edge (mm) above which a scan is rejected: the cortex (2-3 mm) and the
#: hippocampus (~4 mm across) are then at most one voxel thick, so regional deviations are noise.
VOXEL_FAIL_MM = 3.0
#: Largest voxel edge (mm) above which a scan gets a warning: research T1s are <= 1.2 mm
#: (IXI 0.94x0.94x1.2, UK Biobank 1.0, ADNI 1.0-1.2); thicker slices blur the cortex.
VOXEL_WARN_MM = 1.5
#: Share of the brain-mask surface on the field-of-view boundary above which a scan gets a
#: warning: the brainstem leaving the bottom of the field of view gives <= 0.6 % (MNI152 mask),
#: a 2 mm cut of the vertex or frontal pole 0.8-1.8 %.
FOV_WARN_SHARE = 0.01
#: ... and above which it is rejected: about 1 cm of cortex missing at the vertex (6 %) or the
#: frontal pole (5 %), which the model would report as a huge deviation.
FOV_FAIL_SHARE = 0.05
#: A scan warns when its template correlation is below the batch median by more than this many
#: scaled MADs (1.4826 MAD = one sd for normal data): ~5 sd flags ~1 in 3.5 million well-behaved
#: scans by chance, so in a 40,000-scan cohort the warnings are real outliers.
CORR_OUTLIER_K = 5.0
#: Lower bound of the scaled MAD: a homogeneous batch (MAD ~ 0.002) must not flag a scan 0.02 below.
CORR_MAD_FLOOR = 0.01
#: Fewest done scans for the batch rule: a median and MAD of fewer are too unstable to judge by.
CORR_MIN_BATCH = 5

_LEVELS = ("pass", "warn", "fail")


def fov_contact(mask: np.ndarray) -> float:
    """Share of the mask's surface voxels that lie on the array's outer faces.

    Surface voxels are mask voxels with a 6-neighbour outside the mask (outside
    the array counts as outside). 0 for a brain well inside the field of view.
    """
    m = np.asarray(mask) > 0
    if not m.any():
        return 0.0
    padded = np.pad(m, 1)
    surface = (padded & ~ndimage.binary_erosion(padded))[1:-1, 1:-1, 1:-1]
    border = np.ones(m.shape, bool)
    border[1:-1, 1:-1, 1:-1] = False
    return float((surface & border).sum() / surface.sum())


def scan_flags(row: dict) -> list[tuple[str, str]]:
    """The per-scan rules (voxel size, field of view) on one ``prep.tsv`` row.

    Parameters
    ----------
    row : dict
        Needs ``voxel_max_mm`` and, once the brain is extracted, ``fov_contact``
        (missing or NaN values are not judged).

    Returns
    -------
    list of (level, reason)
        ``level`` is ``"warn"`` or ``"fail"``.
    """
    flags = []
    voxel = _number(row.get("voxel_max_mm"))
    if voxel > VOXEL_FAIL_MM:
        flags.append(("fail", f"voxel edge {voxel:.2g} mm > {VOXEL_FAIL_MM:g} mm limit"))
    elif voxel > VOXEL_WARN_MM:
        flags.append(("warn", f"voxel edge {voxel:.2g} mm > {VOXEL_WARN_MM:g} mm"))
    fov = _number(row.get("fov_contact"))
    where = "of the brain surface on the field-of-view boundary"
    if fov > FOV_FAIL_SHARE:
        flags.append(("fail", f"brain cut by the field of view: {fov:.1%} {where} > {FOV_FAIL_SHARE:.0%} limit"))
    elif fov > FOV_WARN_SHARE:
        flags.append(("warn", f"brain touches the field of view: {fov:.1%} {where} > {FOV_WARN_SHARE:.0%}"))
    return flags


def _number(value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return v


def _corr_flags(prep: pd.DataFrame) -> dict[int, tuple[str, str]]:
    """Batch rule: template correlation below median - k * scaled MAD of the done scans."""
    done = prep["status"].isin(["done", "rejected"]) & prep["template_corr"].notna()
    corr = prep.loc[done, "template_corr"].astype(float)
    if len(corr) < CORR_MIN_BATCH:
        return {}
    median = float(corr.median())
    spread = max(1.4826 * float((corr - median).abs().median()), CORR_MAD_FLOOR)
    limit = median - CORR_OUTLIER_K * spread
    return {
        i: ("warn", f"template correlation {c:.3f} far below the batch (median {median:.3f}, "
                    f"limit median - {CORR_OUTLIER_K:g} MAD = {limit:.3f}, {len(corr)} scans)")
        for i, c in corr.items() if c < limit
    }  # fmt: skip


def assess(prep: pd.DataFrame) -> pd.DataFrame:
    """Apply every QC rule to a ``prep.tsv`` table.

    Rows that failed to process keep ``status="failed"`` and get no QC. Every
    other row gets ``qc`` (``pass``/``warn``/``fail``) and ``qc_reasons``
    (``"; "``-joined); a ``fail`` sets ``status="rejected"`` and puts the
    reasons into ``error``.

    Returns
    -------
    pandas.DataFrame
        A copy of ``prep`` with the ``qc`` and ``qc_reasons`` columns.
    """
    prep = prep.copy()
    for col in ("voxel_max_mm", "fov_contact", "template_corr"):
        if col not in prep:
            prep[col] = np.nan
    prep["qc"], prep["qc_reasons"] = "", ""
    corr = _corr_flags(prep)
    for i, row in prep.iterrows():
        if row["status"] not in ("done", "rejected"):
            continue
        flags = scan_flags(row.to_dict()) + ([corr[i]] if i in corr else [])
        level = max((_LEVELS.index(lv) for lv, _ in flags), default=0)
        reasons = "; ".join(reason for _, reason in flags)
        prep.at[i, "qc"], prep.at[i, "qc_reasons"] = _LEVELS[level], reasons
        if level == 2:
            fails = "; ".join(reason for lv, reason in flags if lv == "fail")
            prep.at[i, "status"], prep.at[i, "error"] = "rejected", f"{row['path']}: QC: {fails}"
    return prep
