"""Smooth invertible deformations: random warps, structure fields, tumour mass effect.

All deformations are *pull-backs*: a point ``m`` of the subject maps to the
template point ``y`` it takes its anatomy from. A subject's chain is

``m --mass effect--> m0 --random warp--> m1 --structure fields--> y``

where the structure fields (atrophy, ventricular enlargement) are defined
around template structures, the random warp is a smooth low-resolution field of
a few millimetres, and the mass effect pushes tissue away from a tumour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from nbutils.anatomy import Grid

from .base import StructureField, head_grid, measure_base

__all__ = ["Deformation", "MassEffect", "RandomWarp", "apply", "grid_points", "invert", "soft_label_volumes"]

RANDOM_SPACING_MM = 8.0
#: Largest Jacobian norm of one step of a structure field (keeps each step invertible).
FIELD_STEP_JAC = 0.6


@dataclass(frozen=True)
class RandomWarp:
    """Smooth random displacement (mm) on a coarse grid over the head box."""

    origin: np.ndarray
    spacing: float
    data: np.ndarray  # (3, nx, ny, nz)

    @classmethod
    def draw(cls, rng: np.random.Generator, rms_mm: float, smooth_mm: float = 16.0) -> RandomWarp:
        grid = head_grid(RANDOM_SPACING_MM)
        noise = rng.standard_normal((3, *grid.shape))
        sig = smooth_mm / RANDOM_SPACING_MM
        data = np.stack([ndi.gaussian_filter(c, sig, mode="wrap") for c in noise])
        data *= rms_mm / max(float(np.sqrt((data**2).sum(0).mean())), 1e-9)
        return cls(grid.affine[:3, 3].copy(), RANDOM_SPACING_MM, data.astype(np.float32))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        idx = ((points - self.origin) / self.spacing).T
        return np.stack(
            [ndi.map_coordinates(self.data[k], idx, order=1, mode="nearest", prefilter=False) for k in range(3)],
            axis=1,
        )


@dataclass(frozen=True)
class MassEffect:
    """Radial push of tissue away from a tumour centre.

    Tissue that sat at radius ``ρ`` ends at ``r`` with ``r³ = ρ³ + κR³`` (the
    displaced volume of a sphere of radius ``R``), tapered over ``taper_mm``
    beyond the tumour so the push stays local. ``axes`` stretches the sphere
    into an ellipsoid.
    """

    centre: np.ndarray
    radius: float
    kappa: float
    taper_mm: float
    axes: np.ndarray = field(default_factory=lambda: np.ones(3))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        d = (points - self.centre) / self.axes
        r = np.sqrt((d**2).sum(1))
        near = r < self.radius + 2.5 * self.taper_mm
        out = points.copy()
        if not near.any():
            return out
        rn = np.maximum(r[near], 1e-6)
        rho = np.cbrt(np.maximum(rn**3 - self.kappa * self.radius**3, 0.0))
        shift = (rn - rho) * np.exp(-((np.maximum(rn - self.radius, 0.0) / self.taper_mm) ** 2))
        scale = (rn - shift) / rn
        out[near] = self.centre + d[near] * scale[:, None] * self.axes
        return out


@dataclass
class Deformation:
    """A subject's full pull-back chain (see module docstring)."""

    warp: RandomWarp | None = None
    amplitudes: dict[str, float] = field(default_factory=dict)
    mass: MassEffect | None = None

    def fields(self) -> list[tuple[float, StructureField]]:
        fl = measure_base().fields
        return [(a, fl[name]) for name, a in self.amplitudes.items() if a != 0.0]

    def structural(self, points: np.ndarray) -> np.ndarray:
        """Pull-back without the tumour's mass effect (brain outline, skull, scalp)."""
        m1 = points + self.warp(points) if self.warp is not None else points.copy()
        active = self.fields()
        if not active:
            return m1
        lo = np.min([f.origin for _, f in active], axis=0)
        hi = np.max([f.upper for _, f in active], axis=0)
        sub = np.flatnonzero(np.all((m1 >= lo) & (m1 <= hi), axis=1))
        y = m1[sub]
        for a, f in active:
            # large amplitudes are integrated in small steps (a flow), so the warp stays invertible;
            # a point outside the field's box never moves, so only the points inside it are stepped
            steps = max(1, int(np.ceil(abs(a) * f.max_jac / FIELD_STEP_JAC)))
            inside = np.flatnonzero(np.all((y >= f.origin) & (y <= f.upper), axis=1))
            yi = y[inside]
            for _ in range(steps):
                yi = yi - (a / steps) * f(yi)
            y[inside] = yi
        m1[sub] = y
        return m1

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Full pull-back, including the mass effect."""
        m0 = self.mass(points) if self.mass is not None else points
        return self.structural(m0)


def invert(fn, targets: np.ndarray, n_iter: int = 8) -> np.ndarray:
    """Points ``m`` with ``fn(m) ≈ targets`` by fixed-point iteration (fn near identity)."""
    m = targets.copy()
    for _ in range(n_iter):
        m += targets - fn(m)
    return m


def soft_label_volumes(points_t: np.ndarray, cell_mm3: float, weights: np.ndarray | None = None) -> np.ndarray:
    """Partial-volume region volumes (mm³) of sample points mapped into the template.

    Each point ``m`` (one cell of ``cell_mm3``) is split among the labels of the
    8 template voxels around its pull-back ``points_t`` by trilinear weights, so
    the volumes vary smoothly with the deformation.

    Returns
    -------
    numpy.ndarray
        Volume per label value (index = label).
    """
    mb = measure_base()
    lab = np.pad(mb.labels, 1).ravel()
    shape = np.array(mb.labels.shape) + 2
    idx = (points_t - mb.grid.affine[:3, 3]) / mb.grid.resolution + 1.0
    idx = np.clip(idx, 0, shape - 1.001)
    base = idx.astype(np.int64)
    frac = idx - base
    flat = (base[:, 0] * shape[1] + base[:, 1]) * shape[2] + base[:, 2]
    w_all = np.ones(len(points_t)) if weights is None else np.asarray(weights, float)
    wx = (1 - frac[:, 0], frac[:, 0])
    wy = (1 - frac[:, 1], frac[:, 1])
    wz = (1 - frac[:, 2], frac[:, 2])
    out = np.zeros(mb.n_labels)
    for i, j, k in np.ndindex(2, 2, 2):
        w = wx[i] * wy[j] * wz[k] * w_all
        vals = lab[flat + (i * shape[1] + j) * shape[2] + k]
        out += np.bincount(vals, weights=w, minlength=mb.n_labels)
    return out * cell_mm3


def apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to points ``(N, 3)`` (fast, keeps float32)."""
    return points @ affine[:3, :3].T.astype(points.dtype) + affine[:3, 3].astype(points.dtype)


def grid_points(grid: Grid, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> np.ndarray:
    """World coordinates ``(N, 3)`` of a grid's voxels (optionally a sub-box ``lo:hi``)."""
    lo = np.zeros(3, int) if lo is None else np.asarray(lo)
    hi = np.array(grid.shape) if hi is None else np.asarray(hi)
    axes = [grid.affine[k, 3] + grid.affine[k, k] * np.arange(lo[k], hi[k]) for k in range(3)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)
