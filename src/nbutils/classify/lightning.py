"""One Lightning training and evaluation path for every classifier.

:class:`ClassifierModule` wraps any ``nn.Module`` that maps a batch of images
to class logits (:class:`~nbutils.classify.models.BaselineCNN`,
:class:`~nbutils.classify.models.PIFNet`, a 2D CNN ...). :func:`fit_classifier`
trains it with Adam (L2 regularisation through ``weight_decay``; a constant
learning rate or a one-cycle schedule), class-weighted cross-entropy, random
left-right flips, early stopping on the validation loss and a ``CSVLogger``;
the returned model carries the weights of the validated epoch with the lowest
validation loss. Validation can run every k-th epoch only (counted back from
the last, which is always validated): with small training sets the BatchNorm
re-estimation and validation passes cost a third of every epoch.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from nbutils.classify.metrics import classification_metrics, read_learning_curves
from nbutils.classify.models import separable_input_norm
from nbutils.quiet import quiet_lightning

__all__ = ["ClassifierModule", "FitResult", "balanced_class_weights", "fit_classifier", "predict_proba"]

#: Learning-rate schedules of :class:`ClassifierModule`.
LR_SCHEDULES = ("constant", "onecycle")
#: What :func:`fit_classifier` fits an ``input_norm`` layer on: every training image, or the
#: training images of class 0 (the controls: healthy / no tumour).
NORM_REFERENCES = ("all", "controls")


def balanced_class_weights(y: Sequence[int], n_classes: int) -> list[float]:
    """``n / (n_classes * count_c)`` per class (sklearn's "balanced").

    A class absent from ``y`` gets weight 1: it does not affect the training
    loss, and the validation loss stays finite if the validation fold has it.
    """
    counts = np.bincount(np.asarray(y, int), minlength=n_classes).astype(float)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 1.0)
    return [float(v) for v in w]


class ClassifierModule(pl.LightningModule):
    """Lightning wrapper: cross-entropy training, validation loss and balanced accuracy.

    Parameters
    ----------
    model : nn.Module
        Maps ``(B, C, *spatial)`` to ``(B, n_classes)`` logits.
    n_classes : int
        Number of classes.
    lr, weight_decay : float
        Adam learning rate and L2 penalty.
    class_weights : list of float, optional
        Cross-entropy class weights (see :func:`balanced_class_weights`).
    flip_axes : sequence of int
        Spatial axes (0 = first spatial axis, left-right on the RAS grid)
        flipped at random (p = 0.5 each) during training. A model with a
        ``forward_normalised`` method is flipped *after* its ``input_norm``
        layer: a voxel-wise z-map is flipped, rather than a flipped image being
        compared with voxel statistics of unflipped images (any left-right
        asymmetry of the reference would then appear as a false finding that
        no validation or test image shows).
    lr_schedule : {"constant", "onecycle"}
        ``"onecycle"``: :class:`torch.optim.lr_scheduler.OneCycleLR` peaking at
        ``lr`` over all ``max_epochs`` (warm-up, then annealing to ~0; pair it
        with a patience of at least ``max_epochs`` so early stopping does not
        cut the annealing off).
    """

    def __init__(
        self,
        model: nn.Module,
        n_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        class_weights: Sequence[float] | None = None,
        flip_axes: Sequence[int] = (0,),
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weight", weight, persistent=False)
        self._val_probs: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=self.class_weight)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        for axis in self.hparams.flip_axes:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            if flip.any():
                x = x.clone()
                x[flip] = x[flip].flip(axis + 2)
        return x

    def _augmented_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the randomly flipped batch (flipped after the model's input norm, if it has one)."""
        norm = separable_input_norm(self.model)
        if norm is not None:
            return self.model.forward_normalised(self._augment(norm(x)))
        return self(self._augment(x))

    def training_step(self, batch, batch_idx):  # noqa: D102
        x, y = batch
        loss = self._loss(self._augmented_logits(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: D102
        x, y = batch
        logits = self(x)
        self.log("val_loss", self._loss(logits, y), on_step=False, on_epoch=True, batch_size=len(y))
        self._val_probs.append(logits.softmax(1).detach().cpu())
        self._val_targets.append(y.detach().cpu())

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        if self._val_probs:
            probs = torch.cat(self._val_probs).numpy()
            y = torch.cat(self._val_targets).numpy()
            scores = classification_metrics(y, probs)
            self.log("val_balanced_accuracy", scores["balanced_accuracy"])
        self._val_probs.clear()
        self._val_targets.clear()

    def predict_step(self, batch, batch_idx):  # noqa: D102
        return self(batch[0]).softmax(1)

    def configure_optimizers(self):  # noqa: D102
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_schedule == "constant":
            return optimizer
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class _BestWeights(Callback):
    """Keep (in memory) the weights of the epoch with the lowest validation loss (from ``min_epochs`` on)."""

    def __init__(self, min_epochs: int = 1) -> None:
        self.min_epochs = int(min_epochs)
        self.best = float("inf")
        self.best_epoch = 0
        self.state: dict | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        if trainer.current_epoch + 1 < self.min_epochs and trainer.current_epoch + 1 < trainer.max_epochs:
            return
        if loss is not None and float(loss) < self.best:
            self.best = float(loss)
            self.best_epoch = trainer.current_epoch + 1
            self.state = copy.deepcopy(pl_module.model.state_dict())


class _ValidateEvery(Callback):
    """Validate at epochs ``max_epochs``, ``max_epochs - every``, ... (1-based) and at no others.

    Lightning's ``check_val_every_n_epoch`` counts from the first epoch and may
    skip the last one, whose weights a one-cycle schedule has just annealed;
    this sets it per epoch instead, so the last epoch is always validated.
    """

    def __init__(self, every: int, max_epochs: int) -> None:
        self.every = int(every)
        self.max_epochs = int(max_epochs)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        due = (self.max_epochs - (trainer.current_epoch + 1)) % self.every == 0
        trainer.check_val_every_n_epoch = 1 if due else self.max_epochs + 1


class _RecalibrateBatchNorm(Callback):
    """Recompute BatchNorm statistics on the training images before every validation.

    With a few small batches per epoch and weights that still move fast, the
    running means and variances lag far behind the current network: on the
    quick tumour task a model that classified its own training set perfectly
    with batch statistics scored 0.38 in eval mode. One forward pass over the
    (un-augmented) training images with a cumulative average, as
    :func:`torch.optim.swa_utils.update_bn` does for SWA, makes eval-mode
    outputs match the weights being validated.
    """

    def __init__(self, images: torch.Tensor, batch_size: int) -> None:
        self.loader = DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=False)

    def on_validation_start(self, trainer, pl_module) -> None:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules()):
            # update_bn runs the network in train mode, so dropout draws random numbers: draw them from a
            # forked generator, or how often one validates would change the training that follows.
            with torch.random.fork_rng(devices=[]):
                torch.optim.swa_utils.update_bn(self.loader, pl_module.model, device=pl_module.device)


@dataclass
class FitResult:
    """Outcome of :func:`fit_classifier`.

    Attributes
    ----------
    model : nn.Module
        Trained network with the best-validation-loss weights, in eval mode.
    epochs_run : int
        Epochs trained before early stopping (or ``max_epochs``): the
        "early-stopping iteration" of the PIF paper.
    best_epoch : int
        Epoch (1-based) with the lowest validation loss.
    best_val_loss : float
    history : pandas.DataFrame
        Per-epoch ``train_loss``, ``val_loss``, ``val_balanced_accuracy``.
    seconds : float
        Wall-clock training time.
    log_dir : pathlib.Path
        The CSVLogger folder.
    """

    model: nn.Module
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    history: pd.DataFrame
    seconds: float
    log_dir: Path


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)


def _as_tensors(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    return x, torch.as_tensor(np.asarray(y), dtype=torch.long)


def fit_classifier(
    model: nn.Module | Callable[[], nn.Module],
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    n_classes: int,
    log_dir: str | os.PathLike,
    max_epochs: int = 50,
    patience: int = 8,
    min_epochs: int = 1,
    val_every: int = 1,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-3,
    class_weights: str | Sequence[float] | None = "balanced",
    flip_axes: Sequence[int] = (0,),
    lr_schedule: str = "constant",
    norm_reference: str = "all",
    seed: int = 0,
    accelerator: str = "cpu",
    devices: int | str = 1,
    progress: bool = False,
) -> FitResult:
    """Train ``model`` with early stopping on the validation loss.

    Parameters
    ----------
    model : nn.Module or callable
        Fresh network mapping ``(B, C, *spatial)`` images to logits, or a
        function returning one (preferred: it is then built *after* seeding,
        so its initial weights are reproducible too).
    train, val : (images, labels)
        Images ``(N, C, *spatial)`` float arrays, labels ``(N,)`` ints. The
        caller has split them by subject (see :mod:`nbutils.classify.splits`).
    n_classes : int
        Number of classes.
    log_dir : path-like
        Where the ``CSVLogger`` writes ``metrics.csv`` (``<log_dir>/version_0``).
    max_epochs, patience : int
        Epoch limit; epochs without val-loss improvement before stopping
        (rounded up to whole validation intervals).
    min_epochs : int
        Train at least this many epochs, and choose the best weights only
        among them and later ones: on tiny validation sets the untrained
        network's loss (near the class prior) is often the lowest value seen,
        which would otherwise stop training before it starts.
    val_every : int
        Validate (re-estimate BatchNorm statistics, score the validation
        images, consider the weights as the best) every ``val_every``-th epoch,
        counted back from ``max_epochs`` so that the last epoch is always
        validated. 1 = every epoch. Larger values save time when validation
        only picks the best weights (a one-cycle schedule without early
        stopping); they coarsen the early-stopping epoch to that interval.
    batch_size, lr, weight_decay : training settings (weight decay = L2).
    class_weights : "balanced", list or None
        Cross-entropy weights; "balanced" computes them from the training labels.
    flip_axes : sequence of int
        Spatial axes flipped at random during training (``()`` for none).
    lr_schedule : {"constant", "onecycle"}
        See :class:`ClassifierModule`.
    norm_reference : {"all", "controls"}
        A network with an ``input_norm`` layer that has a ``fit`` method (e.g.
        :class:`~nbutils.classify.models.VoxelStandardise`) has it fitted
        before training on every training image (``"all"``) or on the training
        images of class 0, the controls (``"controls"``: a normative reference
        that patients' lesions do not inflate). Never on validation images.
    seed : int
        ``seed_everything(seed, workers=True)``: same seed, same run.
    accelerator, devices
        Passed to :class:`pytorch_lightning.Trainer`.
    progress : bool
        Show Lightning's progress bar.

    Returns
    -------
    FitResult
    """
    if int(val_every) < 1:
        raise ValueError(f"val_every must be a whole number of epochs >= 1, got {val_every!r}")
    pl.seed_everything(seed, workers=True, verbose=False)
    if not isinstance(model, nn.Module):
        model = model()
    x_tr, y_tr = _as_tensors(*train)
    x_va, y_va = _as_tensors(*val)
    norm = getattr(model, "input_norm", None)
    if hasattr(norm, "fit"):  # voxel statistics from (some of) the training images only
        norm.fit(_norm_reference(x_tr, y_tr, norm_reference))
    if class_weights == "balanced":
        class_weights = balanced_class_weights(y_tr.numpy(), n_classes)
    module = ClassifierModule(
        model, n_classes, lr=lr, weight_decay=weight_decay, class_weights=class_weights, flip_axes=flip_axes,
        lr_schedule=lr_schedule,
    )
    best = _BestWeights(min_epochs)
    logger = CSVLogger(save_dir=str(log_dir), name="", version=0)
    trainer = _classifier_trainer(
        logger, best, x_tr, batch_size=batch_size, max_epochs=max_epochs, min_epochs=min_epochs,
        patience=patience, val_every=val_every, accelerator=accelerator, devices=devices, progress=progress,
    )  # fmt: skip
    start = time.perf_counter()
    with quiet_lightning():
        trainer.fit(
            module,
            train_dataloaders=_loader(x_tr, y_tr, batch_size, True, seed),
            val_dataloaders=_loader(x_va, y_va, batch_size, False, seed),
        )
    seconds = time.perf_counter() - start
    return _fit_result(model, trainer, best, logger, seconds)


def _norm_reference(x_train: torch.Tensor, y_train: torch.Tensor, reference: str) -> torch.Tensor:
    """The training images an ``input_norm`` layer is fitted on (see ``fit_classifier``'s ``norm_reference``)."""
    if reference not in NORM_REFERENCES:
        raise ValueError(f"norm_reference must be one of {NORM_REFERENCES}, got {reference!r}")
    if reference == "all":
        return x_train
    controls = x_train[y_train == 0]
    if len(controls) < 2:
        raise ValueError(f"norm_reference='controls' needs at least 2 training images of class 0 (the controls), "
                         f"got {len(controls)}")
    return controls


def _classifier_trainer(
    logger: CSVLogger,
    best: _BestWeights,
    x_train: torch.Tensor,
    *,
    batch_size: int,
    max_epochs: int,
    min_epochs: int,
    patience: int,
    val_every: int,
    accelerator: str,
    devices: int | str,
    progress: bool,
) -> pl.Trainer:
    """Trainer with BatchNorm recalibration, early stopping on ``val_loss`` and best-weight keeping.

    Early stopping counts validation checks, so ``patience`` epochs become
    ``ceil(patience / val_every)`` checks.
    """
    checks = -(-int(patience) // int(val_every))
    with quiet_lightning():
        return pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            max_epochs=max_epochs,
            min_epochs=min(min_epochs, max_epochs),
            callbacks=[
                _ValidateEvery(val_every, max_epochs),
                _RecalibrateBatchNorm(x_train, batch_size),
                EarlyStopping(monitor="val_loss", mode="min", patience=checks, check_on_train_epoch_end=False),
                best,
            ],
            logger=logger,
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            deterministic="warn",
        )


def _fit_result(
    model: nn.Module, trainer: pl.Trainer, best: _BestWeights, logger: CSVLogger, seconds: float
) -> FitResult:
    """Load the best epoch's weights into ``model`` (eval mode) and gather the run's record."""
    if best.state is not None:
        model.load_state_dict(best.state)
    model.eval()
    history = read_learning_curves(Path(logger.log_dir))
    return FitResult(
        model=model,
        epochs_run=int(trainer.current_epoch),
        best_epoch=int(best.best_epoch),
        best_val_loss=float(best.best),
        history=history,
        seconds=float(seconds),
        log_dir=Path(logger.log_dir),
    )


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """Class probabilities ``(N, n_classes)`` with the model in eval mode."""
    model.eval()
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    out = [model(x[i : i + batch_size]).softmax(1) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))
