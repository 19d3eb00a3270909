"""Look at deviation maps: pure slice/overlay functions, static figures and an ipywidgets explorer.

The rendering is split into small pure functions (tested without a browser):
:func:`slice_at` cuts a plane, :func:`overlay_rgba` colours the supra-threshold
z-values, :func:`render_planes` draws three orthogonal planes and
:func:`figure_png` turns a figure into PNG bytes. :class:`DeviationExplorer`
wires them to widgets; in a papermill run (no live kernel) use the static
:func:`plot_planes` / :func:`plot_profile` figures, which notebooks always show
as well.

Widgets carry stable descriptions and CSS classes (``nbutils-explorer``,
``nbutils-subject-select``, ``nbutils-sagittal-slider``,
``nbutils-coronal-slider``, ``nbutils-axial-slider``, ``nbutils-z-threshold``,
``nbutils-opacity``, ``nbutils-region-select``, ``nbutils-view``,
``nbutils-profile-table``, ``nbutils-profile-plot``) for browser tests.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "AXES",
    "DeviationExplorer",
    "ExplorerSubject",
    "figure_png",
    "overlay_rgba",
    "plot_planes",
    "plot_profile",
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

    image, z = np.asarray(image), np.asarray(z)
    if image.shape != z.shape:
        raise ValueError(f"image {image.shape} and z-map {z.shape} differ in shape")
    lo, hi = np.percentile(image[image != 0], [1, 99]) if np.any(image) else (0.0, 1.0)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), facecolor="black")
    for ax, (plane, axis) in zip(axes, AXES.items(), strict=True):
        idx = int(position[axis])
        base = np.ma.masked_equal(slice_at(image, plane, idx), 0)  # background stays black
        ax.imshow(base, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        ax.imshow(overlay_rgba(slice_at(z, plane, idx), threshold, opacity, vmax), origin="lower")
        ax.set_title(f"{plane} {idx}", color="white", fontsize=9)
        ax.set_facecolor("black")
        ax.set_xticks([])
        ax.set_yticks([])
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
        position = np.unravel_index(int(np.argmax(np.abs(z))), np.shape(z))
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


@dataclass(frozen=True)
class ExplorerSubject:
    """What the explorer shows for one subject."""

    image: np.ndarray
    z: np.ndarray
    profile: pd.DataFrame


class DeviationExplorer:
    """Interactive deviation explorer (ipywidgets).

    Three orthogonal planes of the T1 with the z overlay (an ``ipywidgets.Image``),
    sliders for each plane, the z threshold and the overlay opacity, a subject
    dropdown and the regional profile as a sorted bar chart and table; choosing
    a region moves the three planes to its centroid.

    Parameters
    ----------
    subjects : mapping
        Subject label -> :class:`ExplorerSubject`.
    centroids : mapping
        Region name -> voxel centroid ``(i, j, k)`` (see
        :func:`~nbutils.normative.regional.region_centroids`).
    threshold : float
        Initial z threshold of the overlay.
    top : int
        Regions listed in the profile.

    Attributes
    ----------
    widget : ipywidgets.Widget
        Display this (``display(explorer.widget)``).
    """

    def __init__(
        self,
        subjects: Mapping[str, ExplorerSubject],
        centroids: Mapping[str, Sequence[int]],
        threshold: float = 1.96,
        top: int = 15,
    ) -> None:
        import ipywidgets as w

        if not subjects:
            raise ValueError("the explorer needs at least one subject")
        self.subjects = dict(subjects)
        self.centroids = {k: tuple(int(v) for v in c) for k, c in centroids.items()}
        self.top = top
        first = next(iter(self.subjects.values()))
        shape = first.image.shape
        style = {"description_width": "110px"}
        row = w.Layout(width="360px")
        self.subject = w.Dropdown(options=list(self.subjects), description="Subject",
                                  style=style, layout=row)
        self.sliders = {}
        for plane, axis in AXES.items():
            s = w.IntSlider(value=shape[axis] // 2, min=0, max=shape[axis] - 1,
                            description=f"{plane.capitalize()} slice", continuous_update=False,
                            style=style, layout=row)
            s.add_class(f"nbutils-{plane}-slider")
            self.sliders[plane] = s
        self.threshold = w.FloatSlider(value=threshold, min=0.0, max=8.0, step=0.1,
                                       description="z threshold", continuous_update=False,
                                       style=style, layout=row)
        self.opacity = w.FloatSlider(value=0.7, min=0.0, max=1.0, step=0.05,
                                     description="Overlay opacity", continuous_update=False,
                                     style=style, layout=row)
        self.region = w.Select(options=[], description="Region", rows=10, style=style, layout=row)
        fit = {"flex": "1 1 auto", "min_width": "0", "max_width": "100%", "height": "auto",
               "object_fit": "contain"}
        self.view = w.Image(format="png", layout=w.Layout(**fit))
        self.profile_plot = w.Image(format="png")
        self.table = w.HTML()
        self.subject.add_class("nbutils-subject-select")
        self.threshold.add_class("nbutils-z-threshold")
        self.opacity.add_class("nbutils-opacity")
        self.region.add_class("nbutils-region-select")
        self.view.add_class("nbutils-view")
        self.table.add_class("nbutils-profile-table")
        self.profile_plot.add_class("nbutils-profile-plot")
        controls = w.VBox([self.subject, *self.sliders.values(), self.threshold, self.opacity,
                           self.region], layout=w.Layout(flex="0 0 370px"))
        self.widget = w.VBox([
            w.HBox([controls, self.view]),
            w.HBox([self.profile_plot, self.table]),
        ])  # fmt: skip
        self.widget.add_class("nbutils-explorer")
        self._hold = False
        self.subject.observe(self._on_subject, names="value")
        self.region.observe(self._on_region, names="value")
        for s in (*self.sliders.values(), self.threshold, self.opacity):
            s.observe(self._on_view_change, names="value")
        self._on_subject()

    @property
    def current(self) -> ExplorerSubject:
        """The subject on screen."""
        return self.subjects[self.subject.value]

    @property
    def position(self) -> tuple[int, int, int]:
        """Voxel position of the three planes."""
        return tuple(self.sliders[p].value for p in AXES)

    def render(self) -> bytes:
        """PNG of the current view (also put into ``self.view``)."""
        s = self.current
        png = figure_png(render_planes(s.image, s.z, self.position, self.threshold.value,
                                       self.opacity.value, title=self.subject.value))
        self.view.value = png
        return png

    def move_to(self, position: Sequence[int]) -> None:
        """Move the three planes to a voxel position (one redraw)."""
        self._hold = True
        try:
            for plane, axis in AXES.items():
                self.sliders[plane].value = int(position[axis])
        finally:
            self._hold = False
        self.render()

    def _on_view_change(self, change=None) -> None:
        if not self._hold:
            self.render()

    def _on_subject(self, change=None) -> None:
        prof = self.current.profile
        rows = prof.reindex(prof["profile"].abs().sort_values(ascending=False).index)
        rows = rows.head(self.top)
        names = [n for n in rows["name"] if n in self.centroids]
        self._hold = True
        self.region.options = names
        self.region.value = None
        self._hold = False
        cols = [c for c in ("name", "hemisphere", "profile", "centile", "mean_z", "p95_abs_z")
                if c in rows]
        self.table.value = rows[cols].to_html(index=False, float_format=lambda v: f"{v:.2f}",
                                              classes="nbutils-profile")
        self.profile_plot.value = figure_png(plot_profile(prof, top=self.top))
        if names:
            self.move_to(self.centroids[names[0]])
        else:
            self.render()

    def _on_region(self, change=None) -> None:
        if self._hold or self.region.value is None:
            return
        self.move_to(self.centroids[self.region.value])
