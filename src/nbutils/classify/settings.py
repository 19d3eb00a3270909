"""The settings every classification notebook shares, declared once.

Notebooks 05-07 train the same two networks with the same recipe, so their
settings are one typed declaration here rather than the same sixteen lines in
three ``parameters`` cells. A notebook declares ``classifier: dict = {}`` and
validates the overrides it is given (by a profile or ``-p classifier '{...}'``)
with :meth:`ClassifierSettings.from_overrides`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClassifierSettings"]


@dataclass(frozen=True)
class ClassifierSettings:
    """Working grid, split, networks and training of the classification notebooks.

    Attributes
    ----------
    working_resolution : float
        mm of the grid the CNNs see (area-averaged from the cohort grid; not
        finer than it). Quick 4.0, full 2.0.
    test_size : float
        Share of subjects in the fixed, stratified test set.
    n_folds : int
        Cross-validation folds inside the training pool (quick 3, full 5).
    channels : list of int
        Feature maps of the four 3x3x3 conv + BN + ReLU (+ 2x2x2 max-pool)
        blocks of the review's AD protocol.
    hidden, dropout : int, float
        Width and dropout of the fully connected head.
    pooling : str
        Global pooling of the baseline's last block: ``"avg"`` (global
        findings such as atrophy) or ``"max"`` (a local finding anywhere, such
        as a tumour).
    voxel_norm : bool
        Start both networks with voxel-wise z-scoring against each run's
        training images (:class:`~nbutils.classify.models.VoxelStandardise`).
    voxel_norm_reference : str
        Which training images those voxel statistics come from: ``"all"``, or
        ``"controls"`` (class 0: healthy / no tumour; a normative reference).
    pif_channels, pif_patch_size : int
        PIF layer: feature maps per patch and patch edge in voxels of the 4th
        block's map (3 at 4 mm: a 5x6x5 map; 5 at 2 mm: 10x12x10).
    max_epochs, patience, min_epochs : int
        Training length, early-stopping patience, and the epoch before which
        neither stopping nor the best-weights choice happens.
    val_every : int
        Validate every ``val_every``-th epoch, counted back from the last
        (see :func:`~nbutils.classify.lightning.fit_classifier`); 1 = every epoch.
    batch_size, lr, weight_decay : int, float, float
        Adam with L2 as weight decay.
    lr_schedule : str
        ``"constant"`` or ``"onecycle"`` (peak ``lr``, annealed over
        ``max_epochs``; give it a ``patience`` of at least ``max_epochs``).
    accelerator, devices : str, int
        Lightning hardware.
    """

    working_resolution: float = 4.0
    test_size: float = 0.2
    n_folds: int = 3
    channels: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    hidden: int = 32
    dropout: float = 0.3
    pooling: str = "avg"
    voxel_norm: bool = False
    voxel_norm_reference: str = "all"
    pif_channels: int = 8
    pif_patch_size: int = 3
    max_epochs: int = 20
    patience: int = 5
    min_epochs: int = 5
    val_every: int = 1
    batch_size: int = 8
    lr: float = 0.003
    weight_decay: float = 0.001
    lr_schedule: str = "constant"
    accelerator: str = "cpu"
    devices: int = 1

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> ClassifierSettings:
        """The defaults with ``overrides`` applied.

        Raises
        ------
        nbutils.params.ParameterError
            For an unknown name or a value of the wrong type, listing every
            setting and its type.
        """
        from nbutils.params import check_parameters

        return cls(**check_parameters(cls, dict(overrides), require_all=False))
