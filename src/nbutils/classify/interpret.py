"""Where does a classifier look, and how sure is it?

* :func:`grad_cam` and :func:`occlusion_map` (MONAI's ``monai.visualize``)
  give a saliency volume per subject, the size of the input;
* :func:`saliency_mass` measures the share of (positive) saliency inside a
  set of regions, to compare with the share of brain volume those regions
  occupy (the chance level);
* :func:`mc_dropout_predict` keeps dropout active at test time (batch norm
  stays in eval mode) and returns the mean prediction and its entropy over
  ``n_passes`` stochastic passes; :func:`error_by_uncertainty` bins the
  subjects by entropy to show whether uncertain predictions are more often
  wrong.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = [
    "dilate_mm",
    "enable_mc_dropout",
    "error_by_uncertainty",
    "grad_cam",
    "lesion_saliency",
    "mc_dropout_predict",
    "occlusion_map",
    "predictive_entropy",
    "saliency_mass",
]


def _batch(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def grad_cam(
    model: nn.Module, x: np.ndarray | torch.Tensor, target_layer: str, class_idx: int | None = None
) -> np.ndarray:
    """Grad-CAM maps ``(B, *spatial)`` (upsampled to the input, each scaled to [0, 1]).

    Parameters
    ----------
    model : nn.Module
        The classifier (put in eval mode here).
    x : array ``(B, 1, *spatial)``
    target_layer : str
        Name of the layer whose activations and gradients are combined,
        e.g. ``"features.3"`` (the last block of the encoder).
    class_idx : int, optional
        Class explained; default the predicted class of each sample.
    """
    from monai.visualize import GradCAM

    model.eval()
    cam = GradCAM(nn_module=model, target_layers=target_layer)
    with torch.enable_grad():
        out = cam(_batch(x), class_idx=class_idx)
    return out[:, 0].detach().cpu().numpy()


class _FromNormalised(nn.Module):
    """A classifier with a voxel-wise input norm, fed inputs that are already normalised."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.forward_normalised(z)


def occlusion_map(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    mask_size: int | Sequence[int] = 8,
    class_idx: int | None = None,
    overlap: float = 0.5,
    n_batch: int = 16,
) -> np.ndarray:
    """Occlusion sensitivity ``(B, *spatial)``: drop of the class probability when a cube is masked.

    Positive values mark voxels whose occlusion *lowers* the probability of
    ``class_idx`` (default the predicted class): evidence for that class.

    A cube is filled with the image's mean. A network that starts with a
    voxel-wise z-score against a reference (``input_norm`` =
    :class:`~nbutils.classify.models.VoxelStandardise`) is occluded in that
    z space instead, with 0: the cube then reads "as the reference". A constant
    in image space would turn into a strong artificial deviation after the
    norm: a fake lesion wherever the reference's mean differs from the fill.
    """
    from monai.visualize import OcclusionSensitivity

    from nbutils.classify.models import VoxelStandardise, separable_input_norm

    model.eval()
    x = _batch(x)
    net, fill = model, "mean_img"
    norm = separable_input_norm(model)
    if isinstance(norm, VoxelStandardise):
        with torch.no_grad():
            x = norm(x)
        net, fill = _FromNormalised(model).eval(), 0.0
    # activate=False: MONAI would apply a sigmoid per class (it picks sigmoid for a one-channel *image*), and
    # the softmax below would then act on probabilities, adding a near-constant offset to every voxel's map
    occ = OcclusionSensitivity(nn_module=net, mask_size=mask_size, n_batch=n_batch, overlap=overlap, verbose=False,
                               mode=fill, activate=False)
    with torch.no_grad():
        probs = net(x).softmax(1)
    classes = probs.argmax(1) if class_idx is None else torch.full((len(x),), int(class_idx))
    maps = []
    for i in range(len(x)):
        with warnings.catch_warnings():  # MONAI indexes with lists (a torch deprecation warning)
            warnings.simplefilter("ignore", UserWarning)
            occ_map, _ = occ(x[i : i + 1])  # (1, n_classes, *spatial): logits with the mask applied
        occluded = occ_map.softmax(1)[0, int(classes[i])]
        maps.append((probs[i, int(classes[i])] - occluded).numpy())
    return np.stack(maps)


def saliency_mass(
    saliency: np.ndarray, labels: np.ndarray, region_indices: Sequence[int], brain: np.ndarray | None = None
) -> dict[str, float]:
    """Share of positive saliency inside ``region_indices``, and the chance level.

    Parameters
    ----------
    saliency : array
        A saliency volume; negative values are set to zero.
    labels : int array, same shape
        Region labels (e.g. the subject's atlas segmentation).
    region_indices : sequence of int
        Labels of the regions of interest.
    brain : bool array, optional
        Voxels counted as brain; default ``labels > 0``.

    Returns
    -------
    dict
        ``mass`` (fraction of the saliency inside the brain that falls in the
        regions), ``chance`` (fraction of brain voxels in the regions),
        ``ratio`` = mass / chance (> 1 means the map favours those regions)
        ``outside_brain`` (fraction of *all* positive saliency that lies
        outside the brain: reported, not hidden, since ``mass`` ignores it) and
        ``outside_brain_chance`` (the share of the volume outside the brain: what
        a uniform map, or a coarse map upsampled over the whole box, would
        put there).
    """
    saliency = np.clip(np.asarray(saliency, float), 0, None)
    labels = np.asarray(labels)
    if saliency.shape != labels.shape:
        raise ValueError(f"saliency shape {saliency.shape} differs from labels shape {labels.shape}")
    brain = labels > 0 if brain is None else np.asarray(brain, bool)
    inside = np.isin(labels, list(region_indices)) & brain
    total = saliency[brain].sum()
    everywhere = saliency.sum()
    chance = inside.sum() / max(brain.sum(), 1)
    mass = saliency[inside].sum() / total if total > 0 else float("nan")
    return {"mass": float(mass), "chance": float(chance), "ratio": float(mass / chance) if chance else float("nan"),
            "outside_brain": float(1 - total / everywhere) if everywhere > 0 else float("nan"),
            "outside_brain_chance": float(1 - brain.sum() / brain.size)}


def dilate_mm(mask: np.ndarray, mm: float, voxel_mm: float) -> np.ndarray:
    """``mask`` grown by ``mm`` millimetres (a ball of ``round(mm / voxel_mm)`` voxels; 0 keeps it)."""
    from scipy import ndimage as ndi

    mask = np.asarray(mask, bool)
    if mm < 0 or voxel_mm <= 0:
        raise ValueError(f"need mm >= 0 and voxel_mm > 0, got mm={mm}, voxel_mm={voxel_mm}")
    r = int(round(mm / voxel_mm))
    if r == 0 or not mask.any():
        return mask
    ball = np.sum(np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1] ** 2, axis=0) <= r * r
    return ndi.binary_dilation(mask, ball)


def lesion_saliency(
    saliency: np.ndarray, lesion: np.ndarray, brain: np.ndarray, margin_mm: float, voxel_mm: float
) -> dict[str, float]:
    """:func:`saliency_mass` inside a lesion grown by ``margin_mm``, among brain ∪ lesion voxels.

    The chance level is the grown lesion's share of those voxels; an
    extra-axial or sellar tumour partly outside the brain mask still counts
    as inside (the brain is the mask *or* the lesion).
    """
    lesion = np.asarray(lesion, bool)
    brain = np.asarray(brain, bool) | lesion
    grown = dilate_mm(lesion, margin_mm, voxel_mm) & brain
    return saliency_mass(saliency, grown.astype(np.int8) + brain, [2], brain)


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Eval mode everywhere (batch norm uses its running statistics) except dropout layers."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
    return model


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of class probabilities."""
    p = np.clip(np.asarray(probs, float), 1e-12, 1)
    return -(p * np.log(p)).sum(-1)


@torch.no_grad()
def mc_dropout_predict(
    model: nn.Module, x: np.ndarray | torch.Tensor, n_passes: int = 20, seed: int = 0, batch_size: int = 16
) -> dict[str, np.ndarray]:
    """Monte-Carlo dropout: ``n_passes`` stochastic forward passes with dropout on.

    Returns
    -------
    dict
        ``probs`` mean probabilities ``(N, C)``, ``entropy`` predictive
        entropy of the mean ``(N,)``, ``samples`` all passes ``(n_passes, N, C)``.
        The model is left in eval mode.
    """
    if n_passes < 1:
        raise ValueError(f"n_passes must be >= 1, got {n_passes}")
    x = _batch(x)
    enable_mc_dropout(model)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        samples = torch.stack(
            [
                torch.cat([model(x[i : i + batch_size]).softmax(1) for i in range(0, len(x), batch_size)])
                for _ in range(n_passes)
            ]
        ).numpy()
    finally:
        torch.random.set_rng_state(gen_state)
        model.eval()
    mean = samples.mean(0)
    return {"probs": mean, "entropy": predictive_entropy(mean), "samples": samples}


def error_by_uncertainty(entropy: np.ndarray, correct: np.ndarray, n_bins: int = 3) -> pd.DataFrame:
    """Error rate of the subjects in each entropy quantile bin (low → high uncertainty).

    Also gives the error rate when only the ``k`` most certain subjects are
    kept (``retained``), the curve usually shown for MC dropout.
    """
    entropy = np.asarray(entropy, float)
    correct = np.asarray(correct, bool)
    order = np.argsort(entropy, kind="stable")
    bins = np.array_split(order, min(n_bins, len(order)))
    rows = [
        {
            "bin": i,
            "entropy_min": float(entropy[b].min()),
            "entropy_max": float(entropy[b].max()),
            "n": len(b),
            "error_rate": float(1 - correct[b].mean()),
        }
        for i, b in enumerate(bins)
        if len(b)
    ]
    return pd.DataFrame(rows)


def retained_error_curve(entropy: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    """Error rate among the ``k`` most certain subjects, for k = 1 .. N."""
    order = np.argsort(np.asarray(entropy, float), kind="stable")
    errors = 1 - np.asarray(correct, bool)[order]
    k = np.arange(1, len(order) + 1)
    return pd.DataFrame({"fraction_retained": k / len(order), "error_rate": np.cumsum(errors) / k})


__all__ += ["retained_error_curve"]
