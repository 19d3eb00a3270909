"""Classifiers for spatially normalised volumes: a plain CNN and a PIF network.

:class:`BaselineCNN` follows the review's AD protocol (protocol 2): blocks of
3×3×3 convolution + BatchNorm + ReLU + 2×2×2 max-pooling, global average
pooling, a fully connected layer, dropout; L2 regularisation is the
optimiser's weight decay (see :mod:`nbutils.classify.lightning`). It also
works on 2D slices (``spatial_dims=2``).

:class:`PIFNet` is the model of Eitel et al.: four Conv-BN-ReLU blocks, then
one :class:`~nbutils.classify.pif.PatchIndividualFilters3d` layer, then a head
that keeps every patch's features in their own input slots (so the classifier
knows *where* a feature came from).

Both expose ``features`` (the convolutional encoder, an ``nn.Sequential``)
and ``head``; ``features.<i>`` are the names Grad-CAM needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from nbutils.classify.pif import PatchIndividualFilters3d

__all__ = ["BaselineCNN", "PIFNet", "VoxelStandardise", "conv_block", "encoder_output_shape", "separable_input_norm"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
#: Channels-last memory layout of image tensors by spatial dimension. oneDNN's CPU convolutions are faster
#: in it: a training step of the quick tumour networks (8-16-32-64, batch 8, 40x48x40, one thread) took
#: 0.55-0.70x the time (`benchmarks/bench_memory_format.py`, two runs on 2026-12-02). The layout changes where numbers sit in
#: memory, not what they are, so shapes, indexing and state dicts are as before.
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def channels_last(module: nn.Module, spatial_dims: int) -> nn.Module:
    """Store ``module``'s convolution weights channels-last (in place; returns the module)."""
    return module.to(memory_format=CHANNELS_LAST[spatial_dims])


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, *spatial) in the channels-last layout (a no-op if it already is)."""
    return x.contiguous(memory_format=CHANNELS_LAST[x.ndim - 2])


def conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    spatial_dims: int = 3,
    pool: bool = True,
    batch_norm: bool = True,
) -> nn.Sequential:
    """Conv(k, 'same' padding) + BatchNorm + ReLU, then optional 2× max-pooling.

    The convolution has no bias when batch norm follows (the shift is BN's).
    """
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    layers: list[nn.Module] = [
        _CONV[spatial_dims](in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(_BN[spatial_dims](out_channels))
    layers.append(nn.ReLU(inplace=True))
    if pool:
        layers.append(_POOL[spatial_dims](2))
    return nn.Sequential(*layers)


def encoder_output_shape(input_shape: Sequence[int], n_pool: int) -> tuple[int, ...]:
    """Spatial shape after ``n_pool`` 2× max-poolings (floor division, as PyTorch)."""
    shape = tuple(int(s) for s in input_shape)
    for _ in range(n_pool):
        shape = tuple(s // 2 for s in shape)
    if min(shape) < 1:
        raise ValueError(f"input of shape {tuple(input_shape)} is too small for {n_pool} poolings")
    return shape


class VoxelStandardise(nn.Module):
    """Voxel-wise z-scoring against the training images, clipped: ``clip((x - mean) / sd)``.

    After spatial normalisation a voxel shows the same place in every scan, so
    each voxel can be compared with the same voxel of the *training* subjects
    (a normative view): anatomy shared by everyone drops out and what differs
    — a tumour, or a brain outline unlike the others — stands out. The
    statistics are buffers set by :meth:`fit` on the training images of a run
    (never validation or test images; ``fit_classifier`` does this, from every
    training image or, with ``norm_reference="controls"``, from the training
    images of the control class only: the normative reference proper, which a
    tumour in some training images cannot inflate), so the network takes raw
    images everywhere else (Grad-CAM, occlusion, MC dropout).
    Until fitted it is the identity. The SD is floored at its 10th percentile
    over voxels with any variation, so near-constant background voxels do not
    blow up.
    """

    def __init__(self, shape: Sequence[int], clip: float = 5.0) -> None:
        super().__init__()
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(1, 1, *shape))
        self.register_buffer("scale", torch.ones(1, 1, *shape))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> VoxelStandardise:
        """Set the voxel means and SDs from training images ``(N, 1, *shape)``."""
        images = torch.as_tensor(images, dtype=torch.float32)
        if tuple(images.shape[1:]) != tuple(self.mean.shape[1:]):
            raise ValueError(f"expected images (N, {tuple(self.mean.shape[1:])}), got {tuple(images.shape)}")
        sd = images.std(0, unbiased=False, keepdim=True)
        varying = sd[sd > 0]
        floor = torch.quantile(varying, 0.1) if varying.numel() else torch.tensor(1.0)
        self.mean.copy_(images.mean(0, keepdim=True))
        self.scale.copy_(torch.clamp(sd, min=float(floor)))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x - self.mean) / self.scale, -self.clip, self.clip)


def separable_input_norm(model: nn.Module) -> nn.Module | None:
    """The model's ``input_norm`` layer if the rest can run without it (``forward_normalised``), else None.

    Training flips and occlusion act on what the network compares (the normalised input), not the raw
    image, for such models.
    """
    norm = getattr(model, "input_norm", None)
    return norm if norm is not None and hasattr(model, "forward_normalised") else None


def _input_norm(voxel_norm: bool, shape: Sequence[int] | None) -> nn.Module:
    if not voxel_norm:
        return nn.Identity()
    if shape is None:
        raise ValueError("voxel_norm=True needs the input shape")
    return VoxelStandardise(shape)


def _head(n_in: int, hidden: int, n_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(n_in, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_classes),
    )


class BaselineCNN(nn.Module):
    """Plain CNN: ``len(channels)`` Conv-BN-ReLU-MaxPool blocks, GAP, FC head.

    Parameters
    ----------
    n_classes : int
        Number of output logits.
    channels : sequence of int
        Output channels of each block (depth = its length). The protocol's
        network has four blocks.
    in_channels : int
        Input channels (1 for a T1 image).
    hidden : int
        Units of the fully connected layer (the protocol uses 512; small
        cohorts do better with fewer).
    dropout : float
        Dropout rate before both linear layers (protocol: 0.5).
    spatial_dims : int
        3 for volumes, 2 for slices.
    pooling : {"avg", "max"}
        Global pooling of the last block: the average (the default; a global
        property such as atrophy) or the maximum over positions (a *local*
        finding such as a tumour anywhere in the brain, whose features an
        average over the whole volume dilutes).
    voxel_norm : bool
        Start with a :class:`VoxelStandardise` layer (needs ``input_shape``).
    input_shape : sequence of int, optional
        Spatial shape of the input (only for ``voxel_norm``).
    """

    def __init__(
        self,
        n_classes: int = 2,
        channels: Sequence[int] = (8, 16, 32, 64),
        in_channels: int = 1,
        hidden: int = 64,
        dropout: float = 0.5,
        spatial_dims: int = 3,
        pooling: str = "avg",
        voxel_norm: bool = False,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.input_norm = _input_norm(voxel_norm, input_shape)
        if not channels:
            raise ValueError("channels must name at least one block")
        widths = [in_channels, *channels]
        self.features = nn.Sequential(
            *(conv_block(a, b, spatial_dims=spatial_dims) for a, b in zip(widths, widths[1:], strict=False))
        )
        pools = {"avg": (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), "max": (nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)}
        if pooling not in pools:
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        pool = pools[pooling][spatial_dims == 3](1)
        self.head = nn.Sequential(pool, *_head(channels[-1], hidden, n_classes, dropout))
        channels_last(self, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_normalised(self.input_norm(x))

    def forward_normalised(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of an input already passed through ``input_norm`` (training augments it there)."""
        return self.head(self.features(as_channels_last(z)))


class PIFNet(nn.Module):
    """Four Conv-BN-ReLU blocks + one PIF layer + a position-aware head.

    The first ``n_pool`` blocks are followed by 2× max-pooling (3 by default,
    so the PIF layer still sees a map of several patches). The PIF layer
    returns per-patch features; each patch is average-pooled to
    ``out_channels`` numbers and the concatenation (``n_patches × out_channels``,
    in a fixed order) feeds the fully connected head.

    Parameters
    ----------
    input_shape : 3 ints
        Spatial shape of the input volume (fixed, as the patches own weights).
    n_classes : int
        Number of output logits.
    channels : 4 ints
        Channels of the four shared blocks.
    pif_channels : int
        Output channels of each patch's block.
    patch_size : int or 3 ints
        Patch size in voxels *of the PIF layer's input* (after ``n_pool`` poolings).
    overlap : bool
        Add the half-shifted second patch grid.
    n_pool, hidden, dropout, in_channels
        As for :class:`BaselineCNN`.
    voxel_norm : bool
        Start with a :class:`VoxelStandardise` layer.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int = 2,
        channels: Sequence[int] = (8, 16, 32, 64),
        pif_channels: int = 16,
        patch_size: int | Sequence[int] = 3,
        overlap: bool = False,
        n_pool: int = 3,
        in_channels: int = 1,
        hidden: int = 64,
        dropout: float = 0.5,
        voxel_norm: bool = False,
    ) -> None:
        super().__init__()
        self.input_norm = _input_norm(voxel_norm, input_shape)
        if not 0 <= n_pool <= len(channels):
            raise ValueError(f"n_pool must be between 0 and {len(channels)}, got {n_pool}")
        widths = [in_channels, *channels]
        self.features = nn.Sequential(
            *(
                conv_block(a, b, pool=i < n_pool)
                for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False))
            )
        )
        self.input_shape = tuple(int(s) for s in input_shape)
        self.pif_input_shape = encoder_output_shape(self.input_shape, n_pool)
        self.pif = PatchIndividualFilters3d(
            channels[-1],
            pif_channels,
            self.pif_input_shape,
            patch_size,
            overlap=overlap,
            reassemble=False,
        )
        self.head = _head(self.pif.n_patches * pif_channels, hidden, n_classes, dropout)
        channels_last(self, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_normalised(self.input_norm(x))

    def forward_normalised(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of an input already passed through ``input_norm`` (training augments it there)."""
        patches = self.pif(self.features(as_channels_last(z)))  # (B, P, C, *patch)
        return self.head(patches.mean(dim=(3, 4, 5)))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad)


__all__ += ["classifier_factories", "count_parameters", "describe_classifiers"]


def classifier_factories(
    params: Any, shape: Sequence[int], n_classes: int
) -> dict[str, Callable[[], nn.Module]]:
    """The two networks every classification notebook compares, as zero-argument factories.

    Parameters
    ----------
    params : validated notebook parameters
        Reads ``channels``, ``hidden``, ``dropout``, ``pooling`` (baseline),
        ``voxel_norm``, ``pif_channels`` and ``pif_patch_size``.
    shape : sequence of int
        Spatial shape of the input volumes (the PIF layer's patch grid depends on it).
    n_classes : int
        Output classes.

    Returns
    -------
    dict
        ``{"baseline": make_baseline, "pif": make_pif}``; each call builds a
        freshly initialised network (one per fold or repeat).
    """

    def make_baseline() -> nn.Module:
        return BaselineCNN(n_classes=n_classes, channels=params.channels, hidden=params.hidden,
                           dropout=params.dropout, pooling=params.pooling, voxel_norm=params.voxel_norm,
                           input_shape=shape)

    def make_pif() -> nn.Module:
        return PIFNet(shape, n_classes=n_classes, channels=params.channels,
                      pif_channels=params.pif_channels, patch_size=params.pif_patch_size,
                      hidden=params.hidden, dropout=params.dropout, voxel_norm=params.voxel_norm)

    return {"baseline": make_baseline, "pif": make_pif}


def describe_classifiers(factories: dict[str, Callable[[], nn.Module]]) -> pd.DataFrame:
    """Trainable parameters of each network; prints how the PIF layer splits its input."""
    models = {name: make() for name, make in factories.items()}
    for model in models.values():
        if isinstance(model, PIFNet):
            layer = model.pif
            print(f"PIF layer input {layer.input_shape} split into {layer.grids[0]} patches of "
                  f"{layer.patch_size} voxels ({layer.n_patches} patches, each with its own conv block)")
    return pd.DataFrame({name: {"parameters": count_parameters(m)} for name, m in models.items()})
