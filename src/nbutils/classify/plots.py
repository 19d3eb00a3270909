"""Figures of the classification notebooks (matplotlib; each returns the Figure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "plot_confusion",
    "plot_error_by_uncertainty",
    "plot_learning_curves",
    "plot_sample_size",
    "plot_saliency_overlay",
]


def plot_learning_curves(histories: Mapping[str, Sequence[pd.DataFrame]], title: str = ""):
    """Train loss per epoch and validation loss per validated epoch, one panel per model, one line per fold."""
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.4), squeeze=False, sharey=True)
    for ax, (name, runs) in zip(axes[0], histories.items(), strict=True):
        for i, h in enumerate(runs):
            ax.plot(h["epoch"] + 1, h["train_loss"], color="C0", alpha=0.6, label="train" if i == 0 else None)
            val = h.dropna(subset=["val_loss"])  # validated epochs only (see fit_classifier's val_every)
            ax.plot(val["epoch"] + 1, val["val_loss"], "o-", color="C1", alpha=0.8, markersize=3,
                    label="validation" if i == 0 else None)
        ax.set(title=f"{name}", xlabel="epoch", ylabel="cross-entropy")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(matrices: Mapping[str, np.ndarray], class_names: Sequence[str], title: str = ""):
    """Confusion matrices (summed over folds), rows = true class, one panel per model."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.6 * len(matrices), 3.4), squeeze=False)
    for ax, (name, cm) in zip(axes[0], matrices.items(), strict=True):
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, int(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set(title=name, xlabel="predicted", ylabel="true")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_saliency_overlay(
    maps: Mapping[str, np.ndarray],
    background: np.ndarray | Mapping[str, np.ndarray],
    cut: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    title: str = "",
    outlines: Mapping[str, np.ndarray] | None = None,
    brain_only: bool = True,
):
    """Saliency maps over a background volume: axial, coronal and sagittal cuts per row.

    ``maps`` and ``background`` (one volume, or one per row name) share one
    grid (RAS voxel order). ``cut`` is
    one voxel (x, y, z) for all rows, or a mapping map name → voxel. Maps are
    shown above their 60th percentile, so that the anatomy stays visible:
    inside the brain (non-zero background) only with ``brain_only``, or
    everywhere (saliency outside the brain then shows, rather than being
    hidden). ``outlines`` maps a row name to a boolean volume (e.g. the true
    tumour) drawn as a cyan contour.
    """
    fig, axes = plt.subplots(len(maps), 3, figsize=(9, 3 * len(maps)), squeeze=False)
    for row, (name, sal) in zip(axes, maps.items(), strict=True):
        bg = np.asarray(background[name] if isinstance(background, Mapping) else background, float)
        here = cut.get(name) if isinstance(cut, Mapping) else cut
        c = [s // 2 for s in bg.shape] if here is None else [int(np.clip(v, 0, s - 1)) for v, s in zip(here, bg.shape, strict=True)]
        sal = np.asarray(sal, float)
        inside = bg != 0 if brain_only else np.ones(bg.shape, bool)  # skull-stripped background is 0
        thr = np.percentile(sal[inside] if inside.any() else sal, 60)
        sal = np.where(inside, sal, -np.inf)
        line = None if outlines is None or name not in outlines else np.asarray(outlines[name], float)
        cuts = [np.s_[:, :, c[2]], np.s_[:, c[1], :], np.s_[c[0], :, :]]
        labels = [f"axial z={c[2]}", f"coronal y={c[1]}", f"sagittal x={c[0]}"]
        for ax, where, label in zip(row, cuts, labels, strict=True):
            ax.imshow(bg[where].T, origin="lower", cmap="gray")
            top = float(sal[np.isfinite(sal)].max()) if np.isfinite(sal).any() else thr + 1
            ax.imshow(np.ma.masked_less(sal[where], thr).T, origin="lower", cmap="YlOrRd", alpha=0.6,
                      vmin=thr, vmax=top if top > thr else thr + 1)
            if line is not None and line[where].any():
                ax.contour(line[where].T, levels=[0.5], colors="cyan", linewidths=0.8, origin="lower")
            ax.set_title(f"{name} · {label}", fontsize=9)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_error_by_uncertainty(bins: Mapping[str, pd.DataFrame], title: str = ""):
    """Error rate per predictive-entropy bin (low → high uncertainty), one line per model."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, table in bins.items():
        centre = (table["entropy_min"] + table["entropy_max"]) / 2
        ax.plot(centre, table["error_rate"], marker="o", label=f"{name} (n per bin ≈ {int(table['n'].mean())})")
    ax.set(xlabel="predictive entropy (nats), bin centre", ylabel="error rate", ylim=(-0.05, 1.05), title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_sample_size(runs: pd.DataFrame, title: str = ""):
    """Balanced accuracy and early-stopping epoch per model and subset (points = repeats)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    subsets = list(dict.fromkeys(runs["subset"]))
    models = list(dict.fromkeys(runs["model"]))
    for ax, column, label in zip(axes, ["balanced_accuracy", "epochs_run"],
                                 ["test balanced accuracy", "early-stopping epoch"], strict=True):
        for k, model in enumerate(models):
            for s, subset in enumerate(subsets):
                v = runs.loc[(runs.model == model) & (runs.subset == subset), column].to_numpy(float)
                x = s + (k - (len(models) - 1) / 2) * 0.25
                ax.scatter(np.full(len(v), x), v, color=f"C{k}", alpha=0.5, s=18)
                ax.errorbar(x, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else 0, fmt="s", color=f"C{k}",
                            capsize=4, label=model if s == 0 else None)
        ax.set_xticks(range(len(subsets)), [f"{s} of training set" for s in subsets])
        ax.set_ylabel(label)
        ax.legend()
    axes[0].axhline(0.5, color="gray", lw=0.8, ls="--")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
