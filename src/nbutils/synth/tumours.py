"""Tumours shaped like their real counterparts.

* **glioma** — intra-axial (centre in cerebral white matter), irregular
  outline, necrotic core in larger ones, oedema spreading into white matter,
  T1-hypointense, partial mass effect;
* **meningioma** — extra-axial, based on the dura of the convexity or the
  falx, smooth and well circumscribed, full mass effect compressing the cortex;
* **pituitary** adenoma — sellar, growing upwards (suprasellar) when large.

Labels: 1 necrotic/cystic core, 2 enhancing/solid tumour, 3 oedema.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from .base import measure_base
from .fields import MassEffect

__all__ = ["TUMOUR_CLASSES", "Tumour", "draw_tumour"]

TUMOUR_CLASSES = ("glioma", "meningioma", "pituitary")


@dataclass(frozen=True)
class Tumour:
    """One tumour in subject (MNI-aligned) millimetres.

    Attributes
    ----------
    kind : str
        ``glioma``, ``meningioma`` or ``pituitary``.
    centre : numpy.ndarray
        Centre (mm).
    radius : float
        Outer radius of the solid tumour (mm, before irregularity).
    core_fraction : float
        Radius of the necrotic/cystic core as a fraction of ``radius`` (0 = none).
    oedema_mm : float
        Thickness of surrounding oedema (0 = none).
    axes : numpy.ndarray
        Ellipsoid stretch per axis.
    irregularity : float
        Relative amplitude of the random outline.
    kappa : float
        Fraction of the tumour volume that displaces tissue (mass effect).
    location : str
        Where it sits (``cerebral white matter``, ``convexity``, ``falx``, ``sellar``).
    noise : numpy.ndarray
        Smooth unit-variance random field (local box) shaping the outline.
    """

    kind: str
    centre: np.ndarray
    radius: float
    core_fraction: float
    oedema_mm: float
    axes: np.ndarray
    irregularity: float
    kappa: float
    location: str
    noise: np.ndarray

    @property
    def extent_mm(self) -> float:
        """Half-width of the box that contains every label."""
        return float((self.radius * (1 + 2.5 * self.irregularity) + self.oedema_mm) * self.axes.max() + 4.0)

    def mass_effect(self) -> MassEffect:
        return MassEffect(self.centre, self.radius, self.kappa, 0.6 * self.radius + 8.0, self.axes)

    def _noise_at(self, points: np.ndarray) -> np.ndarray:
        n = self.noise.shape[0]
        idx = (points - self.centre + self.extent_mm) / (2 * self.extent_mm) * (n - 1)
        return ndi.map_coordinates(self.noise, idx.T, order=1, mode="nearest", prefilter=False)

    def near(self, points: np.ndarray) -> np.ndarray:
        """Boolean: points inside the tumour's bounding box."""
        return np.all(np.abs(points - self.centre) <= self.extent_mm, axis=1)

    def labels(self, points: np.ndarray, wm: np.ndarray, icv: np.ndarray) -> np.ndarray:
        """Tumour labels (uint8) at subject points.

        Parameters
        ----------
        points : numpy.ndarray
            ``(N, 3)`` subject mm (ideally only those where :meth:`near` holds).
        wm : numpy.ndarray
            White-matter fraction at the points (after warping); oedema follows it.
        icv : numpy.ndarray
            Intracranial mask (0–1) at the points; extra-axial tumours stay inside it.
        """
        d = (points - self.centre) / self.axes
        r = np.sqrt((d**2).sum(1))
        n = self._noise_at(points)
        r_eff = r / (1.0 + self.irregularity * n)
        out = np.zeros(len(points), np.uint8)
        if self.oedema_mm > 0:
            oed = r_eff < self.radius + self.oedema_mm * (1.0 + 0.6 * n)
            if self.kind == "glioma":
                oed &= (wm > 0.25) | (r_eff < self.radius + 2.0)
            oed &= icv > 0.5
            out[oed] = 3
        solid = r_eff < self.radius
        if self.kind == "meningioma":
            solid &= icv > 0.5
        out[solid] = 2
        if self.core_fraction > 0:
            out[solid & (r_eff < self.radius * self.core_fraction * (1.0 + 0.5 * n))] = 1
        return out


@lru_cache(maxsize=1)
def _candidates() -> dict[str, np.ndarray]:
    mb = measure_base()
    g, lab = mb.grid, mb.labels
    mask = lab > 0
    mask = ndi.binary_fill_holes(ndi.binary_closing(mask, iterations=2))
    depth = ndi.distance_transform_edt(mask, sampling=g.resolution)
    world = g.world_coords(np.argwhere(np.ones(lab.shape, bool)).astype(float)).reshape(*lab.shape, 3)
    wm = np.isin(lab, (44, 45))
    cerebrum = (lab >= 100) | wm
    glioma = wm & (depth >= 12)
    smooth = ndi.gaussian_filter(mask.astype(float), 2.0)
    normal = np.stack(np.gradient(smooth), -1)
    surface = mask & ~ndi.binary_erosion(mask) & (world[..., 2] > -5)
    surface &= ndi.binary_dilation(cerebrum, iterations=2)
    falx = mask & (np.abs(world[..., 0]) <= 1.5) & (world[..., 2] > 10) & (depth >= 6)
    falx &= (world[..., 1] > -75) & (world[..., 1] < 45)
    chiasm = world[lab == 69].mean(0)
    nrm = -normal[surface]
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
    return {
        "glioma": world[glioma],
        "glioma_depth": depth[glioma],
        "convexity": world[surface],
        "convexity_normal": nrm,
        "falx": world[falx],
        "sella": chiasm + np.array([0.0, -1.0, -10.0]),
    }


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _noise(rng: np.random.Generator, n: int = 12, smooth: float = 1.6) -> np.ndarray:
    f = ndi.gaussian_filter(rng.standard_normal((n, n, n)), smooth, mode="wrap")
    return (f / max(float(f.std()), 1e-9)).astype(np.float32)


def draw_tumour(kind: str, rng: np.random.Generator) -> Tumour:
    """Draw one tumour of ``kind`` (size, place, shape) from ``rng``."""
    cand = _candidates()
    if kind == "glioma":
        radius = _log_uniform(rng, 5.0, 26.0)
        ok = np.flatnonzero(cand["glioma_depth"] >= min(radius * 0.6 + 6.0, 26.0))
        centre = cand["glioma"][rng.choice(ok)] + rng.uniform(-1, 1, 3)
        core = float(rng.uniform(0.35, 0.7)) if radius > 10 else 0.0
        return Tumour(
            kind, centre, radius, core, float(rng.uniform(0.3, 1.0) * radius + 3.0),
            np.exp(rng.normal(0, 0.12, 3)), float(rng.uniform(0.12, 0.25)),
            float(rng.uniform(0.3, 0.7)), "cerebral white matter", _noise(rng),
        )
    if kind == "meningioma":
        radius = _log_uniform(rng, 5.0, 24.0)
        if rng.uniform() < 0.7:
            i = int(rng.integers(len(cand["convexity"])))
            centre = cand["convexity"][i] + cand["convexity_normal"][i] * (0.3 * radius)
            location = "convexity"
        else:
            centre = cand["falx"][int(rng.integers(len(cand["falx"])))].copy()
            centre[0] = rng.uniform(-1.5, 1.5)
            location = "falx"
        oedema = float(rng.uniform(2.0, 6.0)) if rng.uniform() < 0.3 else 0.0
        return Tumour(
            kind, centre, radius, 0.0, oedema, np.exp(rng.normal(0, 0.06, 3)), 0.04, 1.0, location,
            _noise(rng, smooth=2.5),
        )
    if kind == "pituitary":
        radius = _log_uniform(rng, 3.0, 14.0)
        centre = cand["sella"] + np.array([rng.uniform(-2, 2), rng.uniform(-2, 2), 0.65 * radius])
        core = float(rng.uniform(0.3, 0.6)) if radius > 8 and rng.uniform() < 0.4 else 0.0
        return Tumour(
            kind, centre, radius, core, 0.0, np.array([1.1, 0.95, 1.25]), 0.05, 1.0, "sellar",
            _noise(rng, smooth=2.5),
        )
    raise ValueError(f"unknown tumour class {kind!r}; choose one of {', '.join(TUMOUR_CLASSES)}")
