"""Figures of the normative notebooks, the report and the explorer.

Pure drawing functions (tested without a browser): :func:`slice_at` cuts a
plane, :func:`overlay_rgba` colours the supra-threshold z-values,
:func:`render_planes` draws three orthogonal planes and :func:`figure_png`
turns a figure into PNG bytes; :func:`plot_planes` and :func:`plot_profile` are
the static deviation figures. The rest are the notebooks' figures (learning
curve, reconstructions, calibration, groups).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "AXES",
    "figure_png",
    "overlay_rgba",
    "plot_atrophy_sensitivity",
    "plot_group_profiles",
    "plot_learning_curve",
    "plot_planes",
    "plot_planes_grid",
    "plot_profile",
    "plot_qq",
    "plot_reconstruction",
    "plot_total_deviation",
    "render_planes",
    "slice_at",
]

#: Plane name -> array axis it cuts (RAS grid: x = left-right, y = back-front, z = down-up).
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def slice_at(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """2D cut of a RAS volume for display with ``origin="lower"``.

    Sagittal: rows inferior->superior, columns posterior->anterior. Coronal:
    rows inferior->superior, columns left->right. Axial: rows
    posterior->anterior, columns left->right (neurological convention: the
    subject's left is on the left).

    Parameters
    ----------
    volume : array ``(X, Y, Z)``
    plane : {"sagittal", "coronal", "axial"}
    index : int
        Position along the plane's axis; clipped to the volume.
    """
    if plane not in AXES:
        raise ValueError(f"unknown plane {plane!r}; use one of {list(AXES)}")
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    axis = AXES[plane]
    index = int(np.clip(index, 0, volume.shape[axis] - 1))
    cut = np.take(volume, index, axis=axis)
    return cut.T  # rows = the later axis (y or z), columns = the earlier axis


def overlay_rgba(
    z: np.ndarray, threshold: float = 1.96, opacity: float = 0.7, vmax: float = 6.0
) -> np.ndarray:
    """RGBA overlay of a z-slice: red for ``z > threshold``, blue for ``z < -threshold``.

    Colour saturates at ``|z| = vmax``; voxels with ``|z| <= threshold`` are fully
    transparent; the rest have alpha ``opacity``.

    Returns
    -------
    array ``(*z.shape, 4)`` of float in [0, 1]
    """
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    z = np.asarray(z, dtype=float)
    strength = np.clip((np.abs(z) - threshold) / max(vmax - threshold, 1e-6), 0, 1)
    rgba = np.zeros((*z.shape, 4))
    pos, neg = z > threshold, z < -threshold
    rgba[pos, 0] = 1.0
    rgba[pos, 1] = 0.8 * strength[pos]  # red -> yellow as |z| grows
    rgba[neg, 2] = 1.0
    rgba[neg, 1] = 0.8 * strength[neg]  # blue -> cyan
    rgba[..., 3] = np.where(pos | neg, opacity, 0.0)
    return rgba


def _draw_planes(axes, image, z, position, threshold, opacity, vmax) -> None:
    """The three orthogonal planes through ``position`` with the z overlay, on three axes."""
    image, z = np.asarray(image), np.asarray(z)
    if image.shape != z.shape:
        raise ValueError(f"image {image.shape} and z-map {z.shape} differ in shape")
    lo, hi = np.percentile(image[image != 0], [1, 99]) if np.any(image) else (0.0, 1.0)
    for ax, (plane, axis) in zip(axes, AXES.items(), strict=True):
        idx = int(position[axis])
        base = np.ma.masked_equal(slice_at(image, plane, idx), 0)  # background stays black
        ax.imshow(base, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        ax.imshow(overlay_rgba(slice_at(z, plane, idx), threshold, opacity, vmax), origin="lower")
        ax.set_title(f"{plane} {idx}", color="white", fontsize=9)
        ax.set_facecolor("black")
        ax.set_xticks([])
        ax.set_yticks([])


def render_planes(
    image: np.ndarray,
    z: np.ndarray,
    position: Sequence[int],
    threshold: float = 1.96,
    opacity: float = 0.7,
    title: str | None = None,
    vmax: float = 6.0,
):
    """Figure with the three orthogonal planes through ``position`` and the z overlay."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), facecolor="black")
    _draw_planes(axes, image, z, position, threshold, opacity, vmax)
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    fig.tight_layout()
    return fig


def _largest_deviation(z) -> tuple[int, ...]:
    return np.unravel_index(int(np.argmax(np.abs(z))), np.shape(z))


def plot_planes_grid(
    views: dict[str, tuple[np.ndarray, np.ndarray, Sequence[int] | None]],
    threshold: float = 1.96,
    opacity: float = 0.7,
    title: str | None = None,
    vmax: float = 6.0,
):
    """One figure, one row of three planes per subject.

    Parameters
    ----------
    views : dict
        Row label -> ``(image, z, position)``; ``position=None`` cuts through
        the voxel of largest ``|z|``.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(views), 3, figsize=(10, 3.4 * len(views)), facecolor="black",
                             squeeze=False)
    for row, (label, (image, z, position)) in zip(axes, views.items(), strict=True):
        _draw_planes(row, image, z, _largest_deviation(z) if position is None else position,
                     threshold, opacity, vmax)
        row[0].set_ylabel(label, color="white", fontsize=9)
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    fig.tight_layout()
    return fig


def figure_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor(), bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_planes(image, z, position=None, threshold=1.96, opacity=0.7, title=None):
    """Static three-plane figure; by default through the voxel of largest ``|z|``."""
    if position is None:
        position = _largest_deviation(z)
    return render_planes(image, z, position, threshold, opacity, title)


def plot_profile(profile: pd.DataFrame, top: int = 20, ax=None, title: str | None = None):
    """Horizontal bars of the ``top`` regions by ``|profile|`` against the 95 % normative range.

    Parameters
    ----------
    profile : DataFrame
        From :meth:`~nbutils.normative.regional.RegionalReference.profile_table`
        (columns ``name`` and ``profile``).
    """
    import matplotlib.pyplot as plt

    rows = profile.reindex(profile["profile"].abs().sort_values(ascending=False).index).head(top)
    rows = rows.iloc[::-1]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.2))
    colors = np.where(rows["profile"].abs() > 1.96, "#d62728", "#7f7f7f")
    ax.axvspan(-1.96, 1.96, color="#2ca02c", alpha=0.12, label="healthy 95 % range")
    ax.barh(rows["name"].astype(str), rows["profile"], color=colors)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("regional deviation (z against healthy reference)")
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    ax.figure.tight_layout()
    return ax.figure


def plot_conditional_norm(stats, ages=(30, 80), sex: str = "F", site: str | None = None, axis: str = "axial"):
    """Expected healthy residual mean and SD maps at several ages (one row per age).

    Uses the conditional norm of ``stats`` when it has one (else the
    unconditional maps, once). The slice is the middle one along ``axis``.
    """
    import matplotlib.pyplot as plt

    norm = stats.conditional_residual
    if norm is None:
        rows = [("all ages", stats.residual.mean, stats.residual.sd)]
    else:
        site = site or norm.design.sites[0]
        cov = pd.DataFrame({"age": list(ages), "sex": sex, "site": site})
        mean, sd = norm.moments(cov)
        rows = [(f"age {a:g}", m, s) for a, m, s in zip(ages, mean, sd, strict=True)]
    mask = stats.mask
    k = mask.shape[{"sagittal": 0, "coronal": 1, "axial": 2}[axis]] // 2
    fig, axes = plt.subplots(len(rows), 2, figsize=(7.5, 3.2 * len(rows)), squeeze=False)
    vmax = max(float(np.abs(m[mask]).max()) for _, m, _ in rows)
    smax = max(float(s[mask].max()) for _, _, s in rows)
    for (label, mean, sd), (ax_m, ax_s) in zip(rows, axes, strict=True):
        im = ax_m.imshow(slice_at(np.where(mask, mean, np.nan), axis, k), origin="lower", cmap="RdBu_r",
                         vmin=-vmax, vmax=vmax)
        fig.colorbar(im, ax=ax_m, shrink=0.8)
        im = ax_s.imshow(slice_at(np.where(mask, sd, np.nan), axis, k), origin="lower", cmap="magma",
                         vmin=0, vmax=smax)
        fig.colorbar(im, ax=ax_s, shrink=0.8)
        ax_m.set_title(f"healthy residual mean, {label}", fontsize=9)
        ax_s.set_title(f"healthy residual SD, {label}", fontsize=9)
        ax_m.axis("off")
        ax_s.axis("off")
    fig.tight_layout()
    return fig


def plot_centile_chart(
    regional_model, region: str, site: str, subject: dict | None = None,
    ages: np.ndarray | None = None, ax=None,
):
    """Brain-chart view of one region: reference centile curves against age, by sex, and the subject.

    Parameters
    ----------
    regional_model : RegionalModel
        The PCNtoolkit model in the normative statistics.
    region : str
        Region name.
    site : str
        Site of the curves (the subject's).
    subject : dict, optional
        ``age``, ``sex``, ``score`` (the region's raw score) and ``label``: drawn as a dot.
    ages : array, optional
        Age grid (default 20-90 years).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    ages = np.linspace(20, 90, 36) if ages is None else np.asarray(ages, float)
    colours = {"F": "tab:red", "M": "tab:blue"}
    for sex in ("F", "M"):
        c = regional_model.centiles(region, ages, sex, site)
        col = colours[sex]
        ax.fill_between(c["age"], c["5"], c["95"], color=col, alpha=0.08)
        ax.fill_between(c["age"], c["25"], c["75"], color=col, alpha=0.15)
        ax.plot(c["age"], c["50"], color=col, lw=1.5, label=f"{sex}: median, 25-75 %, 5-95 %")
    if subject is not None:
        ax.plot([subject["age"]], [subject["score"]], "o", ms=8, color="k", zorder=5,
                label=subject.get("label", "subject"))  # fmt: skip
    ax.set_xlabel("age (years)")
    ax.set_ylabel(f"{region}\nmean z (< 0: darker than expected)")
    ax.set_title(f"{region}: healthy centiles at {site}", fontsize=9)
    ax.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax.figure


def plot_learning_curve(curve: pd.DataFrame, ax=None):
    """Training and validation L1 per epoch (from :func:`~nbutils.normative.train.read_learning_curve`)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for col, style in (("train_loss", "-o"), ("val_loss", "-s")):
        if col in curve:
            ax.plot(curve["epoch"], curve[col], style, ms=3, label=col.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1 reconstruction loss")
    ax.legend()
    ax.figure.tight_layout()
    return ax.figure


def plot_reconstruction(image, reconstruction, z, index: int | None = None, title: str = ""):
    """Axial slice of image, reconstruction, residual and z-map side by side."""
    import matplotlib.pyplot as plt

    index = image.shape[2] // 2 if index is None else index
    panels = [
        (image, "image", "gray", None),
        (reconstruction, "reconstruction", "gray", None),
        (image - reconstruction, "residual", "RdBu_r", 2.0),
        (z, "z (vs healthy)", "RdBu_r", 4.0),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(11, 3.3))
    lo, hi = np.percentile(image[image != 0], [1, 99]) if np.any(image) else (0, 1)
    for ax, (vol, name, cmap, lim) in zip(axes, panels, strict=True):
        kw = {"vmin": lo, "vmax": hi} if lim is None else {"vmin": -lim, "vmax": lim}
        im = ax.imshow(slice_at(vol, "axial", index), cmap=cmap, origin="lower", **kw)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
        if lim is not None:
            fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_qq(z: np.ndarray, mask: np.ndarray, labels: Sequence[str] | None = None, n: int = 200, ax=None):
    """Normal QQ plot of voxel z-values inside the mask, one line per subject (PCNtoolkit-style)."""
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    q = (np.arange(n) + 0.5) / n
    theo = norm.ppf(q)
    mask = np.asarray(mask) > 0
    for i, s in enumerate(np.asarray(z)):
        ax.plot(theo, np.quantile(s[mask], q), lw=1, alpha=0.7,
                label=None if labels is None else labels[i])
    ax.plot(theo, theo, "k--", lw=1, label="calibrated")
    ax.set_xlabel("standard normal quantile")
    ax.set_ylabel("voxel z quantile")
    ax.legend(fontsize=7, loc="upper left")
    ax.figure.tight_layout()
    return ax.figure


def plot_group_profiles(profiles: pd.DataFrame, groups: Sequence[str], top: int = 15):
    """Heat map of the mean regional profile per group, for the ``top`` most deviating regions."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    means = profiles.groupby(np.asarray(groups)).mean().T
    order = means.abs().max(axis=1).sort_values(ascending=False).index[:top]
    fig, ax = plt.subplots(figsize=(1.2 * means.shape[1] + 4, 0.3 * top + 1.5))
    sns.heatmap(means.loc[order], cmap="RdBu_r", center=0, vmin=-4, vmax=4, annot=True, fmt=".1f",
                cbar_kws={"label": "mean regional deviation (z)"}, ax=ax)
    ax.set_xlabel("")
    fig.tight_layout()
    return fig


def plot_total_deviation(totals: pd.DataFrame, ax=None):
    """Total deviation per diagnosis (columns ``diagnosis``, ``total_deviation``) vs the healthy range."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    ax.axhspan(-1.96, 1.96, color="#2ca02c", alpha=0.12, label="healthy 95 % range")
    sns.boxplot(totals, x="diagnosis", y="total_deviation", ax=ax, color="white", fliersize=0)
    sns.stripplot(totals, x="diagnosis", y="total_deviation", ax=ax, size=4)
    ax.set_ylabel("total deviation (z)")
    ax.legend(loc="upper left", fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def plot_atrophy_sensitivity(summary: pd.DataFrame, k: int, title: str = ""):
    """Inserted atrophy found, against the volume lost: one line per method and region group.

    Parameters
    ----------
    summary : DataFrame
        From :func:`nbutils.normative.sensitivity.sensitivity_summary`.
    k : int
        The top ``k`` of the hit rate (for the axis label).
    title : str
        Figure title (say which data it came from).
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    styles = {"target": "-o", "other": "--s"}
    methods = list(dict.fromkeys(summary.index.get_level_values("method")))
    for (method, group), g in summary.groupby(level=["method", "group"], sort=True):
        loss = 100 * g.index.get_level_values("loss").to_numpy()
        kw = {"ms": 4, "color": f"C{methods.index(method)}", "label": f"{method}, {group} regions"}
        axes[0].plot(loss, g["top_k_rate"], styles.get(group, "-"), **kw)
        axes[1].plot(loss, g["median_z"], styles.get(group, "-"), **kw)
    axes[0].axhline(float(summary["chance"].iloc[0]), color="grey", ls=":", label="chance")
    axes[0].set_ylabel(f"shrunk region in the top {k}")
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].axhline(-1.96, color="grey", ls=":", label="95 % normative range")
    axes[1].set_ylabel("median z of the shrunk region")
    for ax in axes:
        ax.set_xlabel("volume of the region turned into CSF (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
