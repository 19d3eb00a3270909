"""Patch individual filter (PIF) layers (Eitel et al., 2019).

After spatial normalisation a given voxel shows roughly the same brain region
in every scan, so higher-level filters need not slide over the whole brain.
A PIF layer therefore

1. **splits** the feature map into a regular grid of patches,
2. **processes** each patch with its *own* convolutional block (weights are
   shared inside a patch, never across patches), and
3. **reassembles** the processed patches in the order they were split (or
   returns them one by one, for a head that keeps each patch's position).

Implementation: the patches are stacked along the channel axis and processed
by one *grouped* convolution with ``groups = number of patches``, so every
patch has its own kernels and all patches run in a single conv call.
Batch normalisation then has one (scale, shift) pair per patch and channel,
so a PIF layer has exactly ``n_patches`` times the parameters of one block.

Shapes that are not a multiple of the patch size are **zero-padded at the
high end of each axis** before splitting; with ``padding="same"`` the
reassembled output is cropped back to the input shape, so the padded voxels
never appear in it. Convolutions are padded *inside* each patch (zeros), so
no information crosses a patch border.

With ``patch_size == kernel_size`` and ``padding="valid"`` every patch yields
a single output voxel computed with its own kernel: the layer is then a
locally connected layer (an unshared convolution with stride = kernel size),
the special case named in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["PatchIndividualFilters3d", "patch_grid"]


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        value = (value,) * 3
    value = tuple(int(v) for v in value)
    if len(value) != 3 or min(value) < 1:
        raise ValueError(f"{name} must be a positive int or three positive ints, got {value}")
    return value  # type: ignore[return-value]


def patch_grid(
    shape: Sequence[int], patch_size: int | Sequence[int], offset: int | Sequence[int] = 0
) -> tuple[int, int, int]:
    """Number of patches along each axis for a feature map of spatial ``shape``.

    ``offset`` voxels of zero padding are added at the start of each axis
    (used by the overlapping grid); the rest is padded at the end.
    """
    patch = _triple(patch_size, "patch_size")
    off = (int(offset),) * 3 if isinstance(offset, int) else tuple(int(o) for o in offset)
    return tuple(math.ceil((s + o) / p) for s, o, p in zip(shape, off, patch, strict=True))  # type: ignore[return-value]


class PatchIndividualFilters3d(nn.Module):
    """Split → per-patch Conv-BN-ReLU block → reassemble.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the incoming feature map and of each patch's block.
    input_shape : sequence of 3 ints
        Spatial shape of the incoming feature map (fixed: every patch owns
        its weights, so the number of patches must be known up front).
    patch_size : int or 3 ints
        Patch edge length(s) in voxels of the incoming feature map.
    kernel_size : int
        Kernel of each patch's convolution (odd for ``padding="same"``).
    padding : {"same", "valid"}
        ``"same"``: zero padding inside each patch, patch output has the
        patch's size. ``"valid"``: no padding, patch output has
        ``patch_size - kernel_size + 1`` voxels per axis.
    overlap : bool
        Add a second grid shifted by half a patch along every axis, whose
        patches straddle the borders of the first grid. Its output is
        concatenated along the channel axis (``reassemble=True``) or appended
        after the first grid's patches (``reassemble=False``).
    reassemble : bool
        ``True``: return a feature map ``(B, out_channels * n_grids, *input_shape)``
        (``"same"``) or ``(B, out_channels, *grid * patch_out)`` (``"valid"``).
        ``False``: return per-patch features ``(B, n_patches, out_channels, *patch_out)``
        with patches in C order of the grid (first grid first).
    batch_norm, relu : bool
        Compose each block as Conv(-BN)(-ReLU). Without batch norm the
        convolution has a bias.

    Attributes
    ----------
    n_patches : int
        Total number of patches (both grids).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_shape: Sequence[int],
        patch_size: int | Sequence[int],
        kernel_size: int = 3,
        padding: Literal["same", "valid"] = "same",
        overlap: bool = False,
        reassemble: bool = True,
        batch_norm: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if padding == "same" and kernel_size % 2 == 0:
            raise ValueError(f"padding='same' needs an odd kernel_size, got {kernel_size}")
        self.input_shape = _triple(tuple(input_shape), "input_shape")
        self.patch_size = _triple(patch_size, "patch_size")
        if padding == "valid" and min(self.patch_size) < kernel_size:
            raise ValueError(
                f"padding='valid' needs patch_size >= kernel_size, got {self.patch_size} < {kernel_size}"
            )
        if overlap and padding == "valid" and reassemble:
            raise ValueError("overlap=True with padding='valid' needs reassemble=False")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.padding, self.overlap = int(kernel_size), padding, bool(overlap)
        self.reassemble = bool(reassemble)
        self.offsets: list[tuple[int, int, int]] = [(0, 0, 0)]
        if overlap:
            self.offsets.append(tuple(p // 2 for p in self.patch_size))  # type: ignore[arg-type]
        self.grids = [patch_grid(self.input_shape, self.patch_size, off) for off in self.offsets]
        self.n_patches = sum(math.prod(g) for g in self.grids)
        n = self.n_patches
        self.conv = nn.Conv3d(
            n * in_channels,
            n * out_channels,
            kernel_size,
            padding=kernel_size // 2 if padding == "same" else 0,
            groups=n,
            bias=not batch_norm,
        )
        self.bn = nn.BatchNorm3d(n * out_channels) if batch_norm else nn.Identity()
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()

    @property
    def patch_out_shape(self) -> tuple[int, int, int]:
        """Spatial shape of one processed patch."""
        if self.padding == "same":
            return self.patch_size
        return tuple(p - self.kernel_size + 1 for p in self.patch_size)  # type: ignore[return-value]

    @property
    def n_output_features(self) -> int:
        """Number of values per sample in the output."""
        if self.reassemble:
            if self.padding == "same":
                return self.out_channels * len(self.grids) * math.prod(self.input_shape)
            grid = self.grids[0]
            return self.out_channels * math.prod(g * q for g, q in zip(grid, self.patch_out_shape, strict=True))
        return self.n_patches * self.out_channels * math.prod(self.patch_out_shape)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_shape={self.input_shape}, "
            f"patch_size={self.patch_size}, grids={self.grids}, n_patches={self.n_patches}, "
            f"padding={self.padding!r}, reassemble={self.reassemble}"
        )

    # ------------------------------------------------------------------ stages
    def _split(self, x: torch.Tensor, grid: tuple[int, int, int], offset: tuple[int, int, int]) -> torch.Tensor:
        """``(B, C, *shape)`` → ``(B, P * C, *patch_size)``, patches in C order."""
        pad = []
        for s, o, n, p in reversed(list(zip(x.shape[2:], offset, grid, self.patch_size, strict=True))):
            pad += [o, n * p - s - o]
        x = F.pad(x, pad)
        b, c = x.shape[:2]
        (n0, n1, n2), (p0, p1, p2) = grid, self.patch_size
        x = x.reshape(b, c, n0, p0, n1, p1, n2, p2).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, n0 * n1 * n2 * c, p0, p1, p2)

    def _merge(self, y: torch.Tensor, grid: tuple[int, int, int], offset: tuple[int, int, int]) -> torch.Tensor:
        """``(B, P * C, *q)`` → ``(B, C, *grid * q)``, cropped to the input in ``"same"`` mode."""
        b = y.shape[0]
        (n0, n1, n2), (q0, q1, q2), c = grid, y.shape[2:], self.out_channels
        y = y.reshape(b, n0, n1, n2, c, q0, q1, q2).permute(0, 4, 1, 5, 2, 6, 3, 7)
        y = y.reshape(b, c, n0 * q0, n1 * q1, n2 * q2)
        if self.padding == "same":
            (s0, s1, s2), (o0, o1, o2) = self.input_shape, offset
            y = y[:, :, o0 : o0 + s0, o1 : o1 + s1, o2 : o2 + s2]
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or tuple(x.shape[2:]) != self.input_shape or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PIF layer expects (B, {self.in_channels}, *{self.input_shape}), got {tuple(x.shape)}"
            )
        patches = torch.cat([self._split(x, g, o) for g, o in zip(self.grids, self.offsets, strict=True)], 1)
        y = self.act(self.bn(self.conv(patches)))
        if not self.reassemble:
            return y.reshape(x.shape[0], self.n_patches, self.out_channels, *y.shape[2:])
        outs, start = [], 0
        for grid, offset in zip(self.grids, self.offsets, strict=True):
            stop = start + math.prod(grid) * self.out_channels
            outs.append(self._merge(y[:, start:stop], grid, offset))
            start = stop
        return torch.cat(outs, 1)
