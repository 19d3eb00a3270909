"""Experiments built from the pieces: k-fold cross-validation and the PIF sample-size study.

Both take images already in memory (``(N, 1, *spatial)``), integer labels and
one subject id per image, plus a *fixed* :class:`~nbutils.classify.splits.SubjectSplit`
whose test subjects are never used for training, early stopping or model
choice. Every training run checks for subject leakage before it starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from nbutils.classify.lightning import fit_classifier, predict_proba
from nbutils.classify.metrics import (
    METRICS,
    classification_metrics,
    confusion_matrix,
    format_mean_sd,
    summarise,
)
from nbutils.classify.splits import (
    SubjectSplit,
    assert_no_leakage,
    stratified_holdout,
    stratified_subset,
)

__all__ = [
    "CVResult",
    "cross_validate",
    "cross_validate_models",
    "fit_options",
    "sample_size_experiment",
    "select",
]


def fit_options(params: Any, n_classes: int) -> dict[str, Any]:
    """Training settings shared by every classifier run of a notebook.

    Parameters
    ----------
    params : validated notebook parameters
        Reads ``max_epochs``, ``patience``, ``min_epochs``, ``val_every``, ``batch_size``,
        ``lr``, ``weight_decay``, ``lr_schedule``, ``voxel_norm_reference``,
        ``accelerator`` and ``devices``.
    n_classes : int
        Output classes.

    Returns
    -------
    dict
        Keyword arguments of :func:`cross_validate` and
        :func:`sample_size_experiment` (passed on to ``fit_classifier``).
    """
    return dict(n_classes=n_classes, max_epochs=params.max_epochs, patience=params.patience,
                min_epochs=params.min_epochs, val_every=params.val_every, batch_size=params.batch_size, lr=params.lr,
                weight_decay=params.weight_decay, lr_schedule=params.lr_schedule,
                norm_reference=params.voxel_norm_reference, accelerator=params.accelerator,
                devices=params.devices)


def select(subjects: Sequence[str], chosen: Sequence[str]) -> np.ndarray:
    """Indices of the images whose subject is in ``chosen``."""
    wanted = set(map(str, chosen))
    return np.array([i for i, s in enumerate(subjects) if str(s) in wanted], dtype=int)


def _channels(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    return images[:, None] if images.ndim in (3, 4) else images  # (N, *spatial) -> (N, 1, *spatial)


@dataclass
class CVResult:
    """Cross-validation of one model type.

    Attributes
    ----------
    name : str
        Model name (e.g. ``"baseline"``).
    folds : pandas.DataFrame
        One row per (fold, partition) with partition ``"val"`` (the fold's
        held-out subjects, used for early stopping) or ``"test"`` (the fixed
        test set), every metric of :data:`~nbutils.classify.metrics.METRICS`,
        ``epochs_run``, ``best_epoch`` and ``seconds``.
    test_index : numpy.ndarray
        Image indices of the test set.
    test_probs : numpy.ndarray
        ``(n_folds, n_test, n_classes)`` test probabilities of each fold's model.
    models, histories : lists
        Each fold's trained network and learning curves.
    confusion : list of numpy.ndarray
        Each fold's test confusion matrix.
    """

    name: str
    folds: pd.DataFrame
    test_index: np.ndarray
    test_y: np.ndarray
    test_probs: np.ndarray
    models: list[nn.Module] = field(default_factory=list)
    histories: list[pd.DataFrame] = field(default_factory=list)
    confusion: list[np.ndarray] = field(default_factory=list)

    def summary(self, partition: str = "test") -> pd.DataFrame:
        """Mean ± SD over folds of every metric (and the early-stopping epoch)."""
        rows = self.folds[self.folds["partition"] == partition]
        return summarise(rows, [*METRICS, "epochs_run", "best_epoch"])

    def mean_sd(self, partition: str = "test") -> pd.Series:
        """``"mean ± sd"`` over folds of every metric, as the notebooks print it."""
        return format_mean_sd(self.summary(partition))

    def headline(self) -> dict[str, float]:
        """The numbers the notebooks report: test balanced accuracy mean/SD, AUC mean, n_test."""
        s = self.summary("test")
        return {
            "balanced_accuracy_mean": float(s.loc["balanced_accuracy", "mean"]),
            "balanced_accuracy_sd": float(s.loc["balanced_accuracy", "sd"]),
            "auc_mean": float(s.loc["roc_auc", "mean"]),
            "n_test": int(len(self.test_index)),
        }

    def ensemble_metrics(self) -> dict[str, float]:
        """Test metrics of the fold models' averaged probabilities."""
        return classification_metrics(self.test_y, self.test_probs.mean(0))


def cross_validate(
    name: str,
    make_model: Callable[[], nn.Module],
    images: np.ndarray,
    y: np.ndarray,
    subjects: Sequence[str],
    split: SubjectSplit,
    *,
    n_classes: int,
    log_dir: str | os.PathLike,
    seed: int = 0,
    progress: bool = True,
    **fit_kwargs,
) -> CVResult:
    """Train one model per fold; evaluate it on its validation fold and on the fixed test set.

    Parameters
    ----------
    name : str
        Model name, used for the log folders (``<log_dir>/<name>/fold<i>``).
    make_model : callable
        Returns a fresh, untrained network (called once per fold).
    images, y, subjects
        All images ``(N, [1,] *spatial)``, labels ``(N,)`` and subject ids.
    split : SubjectSplit
        Fixed test set and folds (by subject).
    n_classes : int
    log_dir : path-like
    seed : int
        Fold ``i`` trains with seed ``seed + i``.
    progress : bool
        Progress bar over folds.
    **fit_kwargs
        Passed to :func:`~nbutils.classify.lightning.fit_classifier`.
    """
    images, y = _channels(images), np.asarray(y, int)
    test_index = select(subjects, split.test)
    rows, probs, models, histories, confusion = [], [], [], [], []
    for i in tqdm(range(split.n_folds), desc=f"{name}: folds", disable=not progress):
        train_subj, val_subj = split.fold(i)  # raises on leakage
        tr, va = select(subjects, train_subj), select(subjects, val_subj)
        result = fit_classifier(
            make_model,
            (images[tr], y[tr]),
            (images[va], y[va]),
            n_classes=n_classes,
            log_dir=Path(log_dir) / name / f"fold{i}",
            seed=seed + i,
            **fit_kwargs,
        )
        extra = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "seconds": result.seconds}
        p_val = predict_proba(result.model, images[va])
        p_test = predict_proba(result.model, images[test_index])
        rows.append({"model": name, "fold": i, "partition": "val", **classification_metrics(y[va], p_val), **extra})
        rows.append(
            {"model": name, "fold": i, "partition": "test", **classification_metrics(y[test_index], p_test), **extra}
        )

        confusion.append(confusion_matrix(y[test_index], p_test.argmax(1), n_classes))
        probs.append(p_test)
        models.append(result.model)
        histories.append(result.history.assign(fold=i, model=name))
    return CVResult(
        name=name,
        folds=pd.DataFrame(rows),
        test_index=test_index,
        test_y=y[test_index],
        test_probs=np.stack(probs),
        models=models,
        histories=histories,
        confusion=confusion,
    )


def cross_validate_models(
    models: Mapping[str, Callable[[], nn.Module]],
    task: Any,
    split: SubjectSplit,
    settings: Any,
    log_dir: str | os.PathLike,
    seed: int = 0,
    prefix: str = "",
) -> dict[str, CVResult]:
    """:func:`cross_validate` every network of ``models`` on one task, with the same folds and settings.

    Parameters
    ----------
    models : mapping
        Name -> zero-argument factory (e.g. from
        :func:`nbutils.classify.models.classifier_factories`).
    task : nbutils.classify.volumes.Task
        Images, labels, subjects and class names.
    split : SubjectSplit
        The fixed test set and the folds.
    settings : ClassifierSettings
        Training settings (see :func:`fit_options`).
    log_dir : path-like
        Each model logs to ``log_dir/<prefix><name>/fold<i>``.
    seed : int
        Fold ``i`` trains with seed ``seed + i``.
    prefix : str
        Prepended to each run's name (its log folder and ``folds["model"]``);
        the returned keys stay the plain names.

    Returns
    -------
    dict
        Name -> :class:`CVResult`.
    """
    fit = fit_options(settings, len(task.class_names))
    return {name: cross_validate(prefix + name, make, task.images, task.y, task.subjects, split,
                                 log_dir=log_dir, seed=seed, **fit)
            for name, make in models.items()}


def sample_size_experiment(
    make_models: Mapping[str, Callable[[], nn.Module]],
    images: np.ndarray,
    y: np.ndarray,
    subjects: Sequence[str],
    split: SubjectSplit,
    *,
    n_classes: int,
    log_dir: str | os.PathLike,
    fractions: Sequence[float] = (1.0, 0.2),
    repeats: int = 10,
    val_size: float = 0.2,
    seed: int = 0,
    progress: bool = True,
    **fit_kwargs,
) -> pd.DataFrame:
    """The PIF paper's experiment: each model on the full training pool and on a subset, repeated.

    In repeat ``r`` and for each fraction, one stratified subset of the
    training subjects is drawn (seed ``seed + r``), a stratified validation
    set is held out of it for early stopping, and **every model trains on the
    same subjects** (a paired comparison). All are tested on ``split.test``.

    Returns
    -------
    pandas.DataFrame
        One row per (model, subset, repeat): ``balanced_accuracy``,
        ``roc_auc``, ``epochs_run``, ``best_epoch``, ``n_train``, ``n_val``,
        ``seconds``. ``subset`` is e.g. ``"100%"`` / ``"20%"``.
    """
    images, y = _channels(images), np.asarray(y, int)
    labels = split.labels
    test_index = select(subjects, split.test)
    pool = split.train_pool
    rows = []
    jobs = [(r, f) for r in range(repeats) for f in fractions]
    bar = tqdm(total=len(jobs) * len(make_models), desc="sample-size runs", disable=not progress)
    for r, fraction in jobs:
        subset = stratified_subset(pool, labels.loc[pool].tolist(), fraction, seed=seed + r)
        train_subj, val_subj = stratified_holdout(subset, labels.loc[subset].tolist(), val_size, seed=seed + r)
        assert_no_leakage(train=train_subj, val=val_subj, test=split.test)
        tr, va = select(subjects, train_subj), select(subjects, val_subj)
        for name, make_model in make_models.items():
            result = fit_classifier(
                make_model,
                (images[tr], y[tr]),
                (images[va], y[va]),
                n_classes=n_classes,
                log_dir=Path(log_dir) / name / f"{int(round(fraction * 100))}pct" / f"repeat{r}",
                seed=seed + r,
                **fit_kwargs,
            )
            m = classification_metrics(y[test_index], predict_proba(result.model, images[test_index]))
            rows.append(
                {
                    "model": name,
                    "subset": f"{int(round(fraction * 100))}%",
                    "repeat": r,
                    "balanced_accuracy": m["balanced_accuracy"],
                    "roc_auc": m["roc_auc"],
                    "epochs_run": result.epochs_run,
                    "best_epoch": result.best_epoch,
                    "n_train": len(train_subj),
                    "n_val": len(val_subj),
                    "seconds": result.seconds,
                }
            )
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def sample_size_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± SD per (model, subset) of balanced accuracy and early-stopping epoch (Table 1 layout)."""
    grouped = runs.groupby(["model", "subset"], sort=False)
    table = grouped.agg(
        balanced_accuracy_mean=("balanced_accuracy", "mean"),
        balanced_accuracy_sd=("balanced_accuracy", lambda v: v.std(ddof=1)),
        early_stop_epoch_mean=("epochs_run", "mean"),
        early_stop_epoch_sd=("epochs_run", lambda v: v.std(ddof=1)),
        repeats=("repeat", "nunique"),
    )
    return table.reset_index()


__all__ += ["sample_size_table"]
