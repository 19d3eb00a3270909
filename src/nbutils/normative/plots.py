"""Figures of the normative notebooks (learning curve, reconstructions, calibration, groups)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .explorer import slice_at

__all__ = [
    "plot_group_profiles",
    "plot_learning_curve",
    "plot_qq",
    "plot_reconstruction",
    "plot_total_deviation",
]


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
