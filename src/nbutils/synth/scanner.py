"""Scanner sites: T1 contrast curves, voxel sizes, orientations, bias fields and noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SITES", "Site", "add_rician_noise", "bias_field", "partial_volume_blur"]


@dataclass(frozen=True)
class Site:
    """One synthetic scanner.

    Attributes
    ----------
    name : str
        Site label used in ``participants.tsv``.
    description : str
        Human-readable description (field strength, sequence flavour).
    csf, gm, wm, fat : float
        Tissue intensities before the contrast curve (WM = 1).
    gamma : float
        Exponent of the monotone contrast curve ``I -> I**gamma``.
    scale : float
        Scanner units of white matter in native images.
    voxel_mm : tuple of float
        Voxel size along the stored array axes.
    orientation : str
        Axis codes of the stored array (nibabel ``aff2axcodes`` convention).
    """

    name: str
    description: str
    csf: float
    gm: float
    wm: float
    fat: float
    gamma: float
    scale: float
    voxel_mm: tuple[float, float, float]
    orientation: str


SITES: dict[str, Site] = {
    s.name: s
    for s in (
        Site("siteA", "1.5 T spoiled gradient echo, axial 0.94x0.94x1.2 mm, LPS", 0.26, 0.62, 1.0, 1.15, 1.0, 900.0, (0.94, 0.94, 1.2), "LPS"),
        Site("siteB", "3 T MPRAGE, sagittal 1.0x1.0x1.2 mm, PIR", 0.12, 0.48, 1.0, 0.95, 0.8, 2400.0, (1.0, 1.0, 1.2), "PIR"),
        Site("siteC", "1.5 T MPRAGE, isotropic 1.1 mm, LAS", 0.32, 0.68, 1.0, 1.25, 1.25, 600.0, (1.1, 1.1, 1.1), "LAS"),
    )
}


def contrast_curve(intensity: np.ndarray, site: Site) -> np.ndarray:
    """Apply the site's monotone contrast curve (order of tissues is preserved)."""
    return np.power(np.clip(intensity, 0.0, None), site.gamma, dtype=np.float32)


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative bias ``exp(b)``, ``b`` a 4x4x4 random field upsampled, RMS ``strength``."""
    coarse = rng.standard_normal((4, 4, 4))
    coarse -= coarse.mean()
    coarse *= strength / max(float(coarse.std()), 1e-9)
    zoom = [s / 4 for s in shape]
    b = ndi.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)[: shape[0], : shape[1], : shape[2]]
    return np.exp(b).astype(np.float32)


def partial_volume_blur(img: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Point-spread blur (Gaussian, ``sigma_vox`` voxels)."""
    return ndi.gaussian_filter(img, sigma_vox) if sigma_vox > 0 else img


def add_rician_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (Rician), ``sigma`` per channel."""
    re = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)
