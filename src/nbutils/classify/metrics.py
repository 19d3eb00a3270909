"""Classification metrics per fold, summaries as mean ± SD, learning curves.

Binary tasks (two classes, positive = the second class, e.g. AD in CN/AD):
``sensitivity`` is the positive class's recall, ``specificity`` the negative
class's recall, ``precision`` and ``f1`` are the positive class's, ``roc_auc``
uses the positive class's probability.

Multi-class tasks: every per-class metric is computed one-vs-rest and
macro-averaged over the classes present in ``y_true``; ``roc_auc`` is the
macro one-vs-rest AUC.

Balanced accuracy (mean recall over classes) is the headline: it is not
fooled by class imbalance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "METRICS",
    "binary_auc",
    "classification_metrics",
    "confusion_matrix",
    "format_mean_sd",
    "read_learning_curves",
    "roc_auc",
    "summarise",
]

#: Metric names returned by :func:`classification_metrics`, headline first.
METRICS = [
    "balanced_accuracy",
    "accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "roc_auc",
]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    cm = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC: probability a positive scores above a negative (ties count half).

    ``y`` holds 1 for positives and 0 for negatives; NaN when either class is absent.
    """
    y, score = np.asarray(y), np.asarray(score)
    pos, neg = score[y == 1], score[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def roc_auc(y_true: Sequence[int], y_prob: np.ndarray) -> float:
    """Binary AUC of ``y_prob[:, 1]``, or macro one-vs-rest AUC over the classes present."""
    y = np.asarray(y_true, int)
    prob = np.asarray(y_prob, float)
    if prob.shape[1] == 2:
        return binary_auc(y, prob[:, 1])
    aucs = [binary_auc((y == c).astype(int), prob[:, c]) for c in np.unique(y)]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def classification_metrics(y_true: Sequence[int], y_prob: np.ndarray) -> dict[str, float]:
    """All metrics of :data:`METRICS` from true labels and class probabilities.

    Parameters
    ----------
    y_true : sequence of int
        True class indices ``0 .. n_classes - 1``.
    y_prob : array of shape (n_samples, n_classes)
        Predicted class probabilities; the prediction is their argmax.

    Returns
    -------
    dict
        Metric name → value (NaN when undefined, e.g. AUC with one class).
    """
    prob = np.asarray(y_prob, float)
    if prob.ndim != 2 or prob.shape[1] < 2:
        raise ValueError(f"y_prob must have shape (n_samples, n_classes >= 2), got {prob.shape}")
    y = np.asarray(y_true, int)
    if len(y) != len(prob):
        raise ValueError(f"{len(y)} labels but {len(prob)} probability rows")
    n_classes = prob.shape[1]
    cm = confusion_matrix(y, prob.argmax(1), n_classes)
    tp = np.diag(cm).astype(float)
    support = cm.sum(1).astype(float)
    predicted = cm.sum(0).astype(float)
    total = cm.sum()
    present = support > 0
    recall = np.array([_ratio(tp[c], support[c]) for c in range(n_classes)])
    tn = total - support - predicted + tp
    spec = np.array([_ratio(tn[c], total - support[c]) for c in range(n_classes)])
    prec = np.array([_ratio(tp[c], predicted[c]) if predicted[c] else 0.0 for c in range(n_classes)])
    f1 = np.array(
        [_ratio(2 * prec[c] * recall[c], prec[c] + recall[c]) if prec[c] + recall[c] else 0.0 for c in range(n_classes)]
    )
    out = {
        "balanced_accuracy": float(np.nanmean(recall[present])) if present.any() else float("nan"),
        "accuracy": _ratio(tp.sum(), total),
    }
    if n_classes == 2:
        out.update(sensitivity=recall[1], specificity=recall[0], precision=prec[1], f1=f1[1])
    else:
        out.update(
            sensitivity=float(np.nanmean(recall[present])),
            specificity=float(np.nanmean(spec[present])),
            precision=float(np.mean(prec[present])),
            f1=float(np.mean(f1[present])),
        )
    out["roc_auc"] = roc_auc(y, prob)
    return {k: float(out[k]) for k in METRICS}


def summarise(per_fold: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, SD (ddof=1) and n over the rows (folds / repeats) of each metric column."""
    columns = [c for c in (columns or METRICS) if c in per_fold]
    values = per_fold[columns].astype(float)
    return pd.DataFrame({"mean": values.mean(), "sd": values.std(ddof=1), "n": values.count()})


def format_mean_sd(summary: pd.DataFrame, digits: int = 3) -> pd.Series:
    """``"mean ± sd"`` strings, one per row of a :func:`summarise` table."""
    return summary.apply(lambda r: f"{r['mean']:.{digits}f} ± {r['sd']:.{digits}f}", axis=1)


def read_learning_curves(log_dir: str | os.PathLike) -> pd.DataFrame:
    """Per-epoch metrics from a Lightning ``CSVLogger`` folder (or its ``metrics.csv``).

    Rows logged at different steps of the same epoch are merged, so each row
    is one epoch with e.g. ``train_loss``, ``val_loss``, ``val_balanced_accuracy``.
    """
    path = Path(log_dir)
    if path.is_dir():
        found = sorted(path.rglob("metrics.csv"))
        if not found:
            raise FileNotFoundError(f"no metrics.csv under {path}")
        path = found[-1]
    table = pd.read_csv(path)
    if "epoch" not in table:
        raise ValueError(f"{path} has no 'epoch' column; is it a Lightning CSVLogger file?")
    table = table.drop(columns=[c for c in ("step",) if c in table])
    return table.groupby("epoch", as_index=False).mean(numeric_only=True)
