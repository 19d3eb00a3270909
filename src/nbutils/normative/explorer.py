"""The ipywidgets deviation explorer.

:class:`DeviationExplorer` wires the pure drawing functions of
:mod:`nbutils.normative.plots` (:func:`~nbutils.normative.plots.slice_at`,
:func:`~nbutils.normative.plots.overlay_rgba`,
:func:`~nbutils.normative.plots.render_planes`,
:func:`~nbutils.normative.plots.figure_png`) to widgets; in a papermill run (no
live kernel) use the static :func:`~nbutils.normative.plots.plot_planes` /
:func:`~nbutils.normative.plots.plot_profile` figures, which notebooks always
show as well.

Widgets carry stable descriptions and CSS classes (``nbutils-explorer``,
``nbutils-subject-select``, ``nbutils-sagittal-slider``,
``nbutils-coronal-slider``, ``nbutils-axial-slider``, ``nbutils-z-threshold``,
``nbutils-opacity``, ``nbutils-region-select``, ``nbutils-view``,
``nbutils-profile-table``, ``nbutils-profile-plot``, ``nbutils-centile-chart``,
``nbutils-guard-warning``: the scan guard's warning, empty for a scan like the reference) for
browser tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .plots import AXES, figure_png, plot_centile_chart, plot_profile, render_planes

__all__ = ["DeviationExplorer", "ExplorerSubject"]

@dataclass(frozen=True)
class ExplorerSubject:
    """What the explorer shows for one subject."""

    image: np.ndarray
    z: np.ndarray
    profile: pd.DataFrame
    covariates: dict | None = None  # age, sex, site: enables the centile chart of a region
    warning: str = ""  # the scan guard's warning (nbutils.normative.guard), shown above the view


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
    regional_model : RegionalModel, optional
        With it, choosing a region also draws its centile chart (healthy centiles
        against age, the subject as a dot) for subjects with ``covariates``.
    measure : str
        The profile column holding the region score of the chart.

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
        regional_model=None,
        measure: str = "mean_z",
    ) -> None:
        import ipywidgets as w

        if not subjects:
            raise ValueError("the explorer needs at least one subject")
        self.subjects = dict(subjects)
        self.centroids = {k: tuple(int(v) for v in c) for k, c in centroids.items()}
        self.top = top
        self.regional_model, self.measure = regional_model, measure
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
        self.centile_plot = w.Image(format="png")
        self.centile_plot.add_class("nbutils-centile-chart")
        self.subject.add_class("nbutils-subject-select")
        self.threshold.add_class("nbutils-z-threshold")
        self.opacity.add_class("nbutils-opacity")
        self.region.add_class("nbutils-region-select")
        self.view.add_class("nbutils-view")
        self.table.add_class("nbutils-profile-table")
        self.profile_plot.add_class("nbutils-profile-plot")
        controls = w.VBox([self.subject, *self.sliders.values(), self.threshold, self.opacity,
                           self.region], layout=w.Layout(flex="0 0 370px"))
        self.alert = w.HTML()
        self.alert.add_class("nbutils-guard-warning")
        self.widget = w.VBox([
            self.alert,
            w.HBox([controls, self.view]),
            w.HBox([self.profile_plot, self.table]),
            self.centile_plot,
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
        import html

        warning = self.current.warning
        self.alert.value = (f'<div role="alert" style="border:3px solid #b00;background:#fff0f0;color:#700;'
                            f'padding:6px 10px;font-weight:600">{html.escape(warning)}</div>' if warning else "")
        prof = self.current.profile
        rows = prof.reindex(prof["profile"].abs().sort_values(ascending=False).index)
        rows = rows.head(self.top)
        names = [n for n in rows["name"] if n in self.centroids]
        self._hold = True
        self.region.options = names
        self.region.value = None
        self._hold = False
        cols = [c for c in ("name", "hemisphere", "profile", "centile", "direction", "mean_z")
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
        self.chart(self.region.value)

    def chart(self, region: str) -> bytes | None:
        """PNG of ``region``'s centile chart for the subject on screen (``None`` without covariates)."""
        s, cov = self.current, self.current.covariates
        if self.regional_model is None or not cov:
            return None
        score = float(s.profile.set_index("name").loc[region, self.measure])
        fig = plot_centile_chart(self.regional_model, region, str(cov["site"]),
                                 subject={"age": float(cov["age"]), "sex": str(cov["sex"]), "score": score,
                                          "label": self.subject.value})  # fmt: skip
        png = figure_png(fig)
        self.centile_plot.value = png
        return png
