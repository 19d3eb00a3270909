"""A 3D convolutional autoencoder without skip connections, and its LightningModule.

Why no skip connections: a U-Net style skip copies the input's fine detail,
anomalies included, straight to the output, so the reconstruction error
would no longer show them (Baur et al. 2021). Here everything the decoder
sees passes through the bottleneck (``latent_channels`` feature maps at
``1 / 2**len(channels)`` of the input size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = [
    "ConvAutoencoder",
    "EnsembleAutoencoder",
    "NormativeAutoencoder",
    "members_of",
    "reconstruct",
    "ssim_3d",
]


def ssim_3d(x: torch.Tensor, y: torch.Tensor, data_range: float, window: int = 7) -> torch.Tensor:
    """Mean structural similarity of two batches ``(B, C, X, Y, Z)`` with a uniform cubic window.

    Same formula and constants as MONAI's ``SSIMMetric(kernel_type="uniform")``
    (``k1 = 0.01``, ``k2 = 0.03``, no padding), but the window mean is three
    separable 1D average poolings: on this CPU several times faster than MONAI's
    full 3D kernel, which made an SSIM term cost 4-8 times the rest of a training
    step at 80x96x80. SSIM's luminance term assumes non-negative intensities.
    """
    def mean(v: torch.Tensor) -> torch.Tensor:
        for d in range(3):
            v = torch.nn.functional.avg_pool3d(v, [window if a == d else 1 for a in range(3)], stride=1)
        return v

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
    ssim = ((2 * mx * my + c1) / (mx * mx + my * my + c1)) * ((2 * cxy + c2) / (vx + vy + c2))
    return ssim.mean()


class ConvAutoencoder(nn.Module):
    """Plain 3D convolutional autoencoder built from MONAI ``Convolution`` blocks.

    Each encoder level halves the size with a stride-2 convolution followed by
    ``convs_per_level - 1`` stride-1 convolutions; a 1x1x1 convolution maps to
    ``latent_channels`` (the bottleneck); the decoder mirrors the encoder with
    transposed convolutions. There is no connection from encoder to decoder
    other than the latent.

    Parameters
    ----------
    in_channels : int
        Input (and output) channels.
    channels : sequence of int
        Feature maps per level; its length is the number of down-samplings.
    latent_channels : int
        Channels of the bottleneck.
    convs_per_level : int
        Convolutions per level (the first one strided).
    norm : str
        MONAI norm name ("instance", "batch") or "none".
    act : str
        MONAI activation name.
    head_channels : int
        0: the last up-sampling goes straight to the image (fastest). Otherwise it
        goes to ``head_channels`` feature maps at full resolution, followed by a
        stride-1 convolution and a 1x1x1 convolution to the image (a sharper
        output, still skip-free).

    Examples
    --------
    >>> ae = ConvAutoencoder(channels=(8, 16), latent_channels=4)
    >>> ae(torch.zeros(1, 1, 8, 12, 8)).shape
    torch.Size([1, 1, 8, 12, 8])
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        latent_channels: int = 32,
        convs_per_level: int = 1,
        norm: str = "instance",
        act: str = "PRELU",
        head_channels: int = 0,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one level")
        if convs_per_level < 1:
            raise ValueError(f"convs_per_level must be >= 1, got {convs_per_level}")
        if head_channels < 0:
            raise ValueError(f"head_channels must be >= 0, got {head_channels}")
        self.levels = len(channels)

        def norm_arg(c: int):
            if norm in (None, "none"):
                return None
            if norm == "instance":
                # the same maths as InstanceNorm3d (no affine, no running statistics, so the
                # same state dict), but PyTorch's CPU group norm is faster: 0.74x the forward
                # and 0.85x the training-step time of the default autoencoder (2026-12-01)
                return ("group", {"num_groups": c, "affine": False})
            return norm

        def block(cin: int, cout: int, stride: int = 1, transposed: bool = False, conv_only=False):
            return Convolution(
                spatial_dims=3,
                in_channels=cin,
                out_channels=cout,
                strides=stride,
                kernel_size=3,
                norm=norm_arg(cout),
                act=act,
                is_transposed=transposed,
                conv_only=conv_only,
            )

        enc: list[nn.Module] = []
        cin = in_channels
        for c in channels:
            enc.append(block(cin, c, stride=2))
            enc.extend(block(c, c) for _ in range(convs_per_level - 1))
            cin = c
        self.encoder = nn.Sequential(*enc)
        self.to_latent = Convolution(3, cin, latent_channels, kernel_size=1, norm=norm_arg(latent_channels),
                                     act=act)
        self.from_latent = Convolution(3, latent_channels, cin, kernel_size=1, norm=norm_arg(cin), act=act)
        dec: list[nn.Module] = []
        for c in channels[-2::-1]:
            dec.append(block(cin, c, stride=2, transposed=True))
            dec.extend(block(c, c) for _ in range(convs_per_level - 1))
            cin = c
        self.decoder = nn.Sequential(*dec)
        if head_channels:
            self.head = nn.Sequential(
                block(cin, head_channels, stride=2, transposed=True),
                block(head_channels, head_channels),
                Convolution(3, head_channels, in_channels, kernel_size=1, conv_only=True),
            )
        else:  # last up-sampling straight to the image: no full-resolution feature maps (speed)
            self.head = block(cin, in_channels, stride=2, transposed=True, conv_only=True)

    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise a clear error if the spatial ``shape`` cannot pass the down-samplings."""
        factor = 2**self.levels
        bad = [s for s in shape if s % factor]
        if bad:
            raise ValueError(
                f"volume shape {tuple(shape)} must be divisible by 2**{self.levels}={factor} "
                "on every axis (use nbutils.anatomy.standard_grid, or fewer levels)"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch ``(B, C, X, Y, Z)`` to its latent feature maps."""
        self.check_shape(x.shape[2:])
        return self.to_latent(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Map latent feature maps back to image space."""
        return self.head(self.decoder(self.from_latent(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class NormativeAutoencoder(pl.LightningModule):
    """LightningModule training :class:`ConvAutoencoder` with an L1 (+ optional SSIM) loss.

    Batches are dicts with ``"image"`` ``(B, 1, X, Y, Z)`` and, optionally,
    ``"mask"`` (same shape); with a mask the loss is averaged inside it. A batch
    with an ``"input"`` (a corrupted copy of the image, see the ``noise_*`` options
    of :class:`~nbutils.normative.data.VolumeDataset`) trains a *denoising*
    autoencoder: the network sees the input and must reconstruct the clean image
    (Kascenas et al. 2022).
    All hyper-parameters are plain Python types, saved with
    ``save_hyperparameters`` so checkpoints load with ``weights_only=True``.

    Parameters
    ----------
    channels, latent_channels, convs_per_level, norm, act, head_channels
        Passed to :class:`ConvAutoencoder`.
    lr, weight_decay : float
        AdamW settings.
    ssim_weight : float
        Weight of a 3D SSIM loss term (``1 - SSIM``) added to L1 (0 disables it).
        The images are z-scored within the brain, so SSIM is computed on
        ``x + ssim_range / 2`` with data range ``ssim_range``: its luminance term
        needs non-negative intensities, and ``ssim_range = 8`` covers +-4 SD.
    ssim_range : float
        Data range of the SSIM term (see above).
    ssim_window : int
        Gaussian window of the SSIM term in voxels (see :func:`ssim_3d`).
    masked_loss : bool
        Average the loss within the brain mask only.
    """

    def __init__(
        self,
        channels: list[int] | tuple[int, ...] = (16, 32, 64, 128),
        latent_channels: int = 32,
        convs_per_level: int = 1,
        norm: str = "instance",
        act: str = "PRELU",
        lr: float = 2e-3,
        weight_decay: float = 1e-5,
        ssim_weight: float = 0.0,
        masked_loss: bool = True,
        head_channels: int = 0,
        ssim_range: float = 8.0,
        ssim_window: int = 7,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        self.save_hyperparameters(
            {
                "channels": channels,
                "latent_channels": int(latent_channels),
                "convs_per_level": int(convs_per_level),
                "norm": str(norm),
                "act": str(act),
                "lr": float(lr),
                "weight_decay": float(weight_decay),
                "ssim_weight": float(ssim_weight),
                "masked_loss": bool(masked_loss),
                "head_channels": int(head_channels),
                "ssim_range": float(ssim_range),
                "ssim_window": int(ssim_window),
            }
        )
        self.net = ConvAutoencoder(1, channels, latent_channels, convs_per_level, norm, act, head_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """L1 reconstruction loss (within the mask if configured) plus optional SSIM.

        The network reconstructs ``batch["input"]`` if present (denoising), else the
        image; the target is always the clean ``batch["image"]``.
        """
        x = batch["image"]
        y = self(batch.get("input", x))
        err = (y - x).abs()
        mask = batch.get("mask")
        if self.hparams.masked_loss and mask is not None:
            loss = (err * mask).sum() / mask.sum().clamp_min(1.0)
        else:
            loss = err.mean()
        if self.hparams.ssim_weight > 0:
            r = self.hparams.ssim_range
            ssim = ssim_3d(y + r / 2, x + r / 2, data_range=r, window=self.hparams.ssim_window)
            loss = loss + self.hparams.ssim_weight * (1.0 - ssim)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch["image"].shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch["image"].shape[0], sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


class EnsembleAutoencoder(nn.Module):
    """Autoencoders trained on different cross-fitting folds, used together.

    ``forward`` returns the mean reconstruction (for display); deviation maps
    combine the members' z-maps (:func:`nbutils.normative.pipeline.ensemble_z`),
    and the spread of the members' z is the ensemble's uncertainty.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def members_of(model: nn.Module) -> list[nn.Module]:
    """The member models of an ensemble, or ``[model]``."""
    return list(model.members) if isinstance(model, EnsembleAutoencoder) else [model]


def reconstruct(
    model: nn.Module, volumes: np.ndarray, batch_size: int = 4, progress: bool = False
) -> np.ndarray:
    """Reconstruct volumes ``(N, X, Y, Z)`` (or one ``(X, Y, Z)``) with ``model`` on the CPU.

    Runs in evaluation mode without gradients and returns float32 arrays of the
    same shape.
    """
    from tqdm.auto import tqdm

    single = volumes.ndim == 3
    vols = volumes[None] if single else volumes
    model.eval()
    device = next(model.parameters()).device
    out = np.empty(vols.shape, dtype=np.float32)
    with torch.inference_mode():
        starts = range(0, len(vols), batch_size)
        for s in tqdm(starts, desc="reconstructing", disable=not progress):
            x = torch.as_tensor(np.asarray(vols[s : s + batch_size], dtype=np.float32))[:, None]
            out[s : s + batch_size] = model(x.to(device))[:, 0].cpu().numpy()
    return out[0] if single else out
