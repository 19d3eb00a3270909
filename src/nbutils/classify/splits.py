"""Leakage-safe splits: by subject, stratified by label, test set fixed first.

The protocol every classification notebook follows:

1. :func:`subject_split` draws the **test subjects once**, stratified by
   label, before any model is trained or selected;
2. the remaining subjects are split into ``k`` stratified folds for
   cross-validation (train on ``k - 1`` folds, early-stop on the held-out
   fold);
3. :func:`assert_no_leakage` checks that no subject is in two partitions;
   :meth:`SubjectSplit.fold` calls it for every run it hands out.

Splitting works on *subjects*, never on scans or slices: all scans of a
subject land in the same partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "LeakageError",
    "SubjectSplit",
    "assert_no_leakage",
    "stratified_holdout",
    "stratified_subset",
    "subject_labels",
    "subject_split",
]


class LeakageError(AssertionError):
    """A subject appears in more than one partition."""


def assert_no_leakage(**partitions: Iterable[str]) -> None:
    """Raise :class:`LeakageError` if any subject is in two of the named partitions.

    Examples
    --------
    >>> assert_no_leakage(train=["sub-01", "sub-02"], test=["sub-03"])
    >>> assert_no_leakage(train=["sub-01"], val=["sub-01"])
    Traceback (most recent call last):
    ...
    nbutils.classify.splits.LeakageError: subject(s) in more than one partition: train & val: sub-01
    """
    sets = {name: set(map(str, ids)) for name, ids in partitions.items()}
    names = list(sets)
    problems = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(sets[a] & sets[b])
            if shared:
                shown = ", ".join(shared[:10]) + (f" (+{len(shared) - 10} more)" if len(shared) > 10 else "")
                problems.append(f"{a} & {b}: {shown}")
    if problems:
        raise LeakageError("subject(s) in more than one partition: " + "; ".join(problems))


def subject_labels(subjects: Sequence[str], labels: Sequence) -> pd.Series:
    """One label per subject (index = subject), checking every subject has a single label."""
    table = pd.DataFrame({"subject": list(map(str, subjects)), "label": list(labels)})
    n_labels = table.groupby("subject")["label"].nunique()
    bad = n_labels[n_labels > 1]
    if len(bad):
        raise ValueError(f"subjects with more than one label cannot be stratified: {', '.join(bad.index[:10])}")
    return table.drop_duplicates("subject").set_index("subject")["label"]


def _stratified_take(per_subject: pd.Series, fraction: float, rng: np.random.Generator) -> list[str]:
    """Take ``round(fraction * n_c)`` subjects of each class c (at least one if n_c >= 2)."""
    taken: list[str] = []
    for label in sorted(per_subject.unique(), key=str):
        members = np.array(sorted(per_subject.index[per_subject == label]))
        n = int(round(fraction * len(members)))
        if len(members) >= 2:
            n = min(max(n, 1), len(members) - 1)
        taken += list(rng.permutation(members)[:n])
    return sorted(taken)


def _stratified_folds(per_subject: pd.Series, k: int, rng: np.random.Generator) -> list[list[str]]:
    """Deal the subjects of each class round-robin into ``k`` folds (balanced sizes)."""
    folds: list[list[str]] = [[] for _ in range(k)]
    start = 0
    for label in sorted(per_subject.unique(), key=str):
        members = rng.permutation(np.array(sorted(per_subject.index[per_subject == label])))
        for i, subject in enumerate(members):
            folds[(start + i) % k].append(str(subject))
        start = (start + len(members)) % k  # next class starts at the next fold: sizes stay even
    return [sorted(f) for f in folds]


@dataclass(frozen=True)
class SubjectSplit:
    """A fixed test set and ``k`` cross-validation folds over the remaining subjects.

    Attributes
    ----------
    test : list of str
        Held-out test subjects (fixed before any training).
    folds : list of list of str
        Validation subjects of each fold; fold ``i`` trains on the others.
    labels : pandas.Series
        Label of every subject (index = subject id).
    """

    test: list[str]
    folds: list[list[str]]
    labels: pd.Series

    @property
    def train_pool(self) -> list[str]:
        """All non-test subjects (union of the folds)."""
        return sorted(s for f in self.folds for s in f)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def fold(self, i: int) -> tuple[list[str], list[str]]:
        """``(train, val)`` subjects of fold ``i``, checked for leakage against each other and the test set."""
        val = self.folds[i]
        train = sorted(s for j, f in enumerate(self.folds) if j != i for s in f)
        assert_no_leakage(train=train, val=val, test=self.test)
        return train, val

    def table(self) -> pd.DataFrame:
        """Counts of subjects per partition and label (test and each validation fold)."""
        rows = {"test": self.labels.loc[self.test].value_counts()}
        for i, f in enumerate(self.folds):
            rows[f"fold {i}"] = self.labels.loc[f].value_counts()
        return pd.DataFrame(rows).T.fillna(0).astype(int)


def subject_split(
    subjects: Sequence[str], labels: Sequence, test_size: float = 0.2, n_folds: int = 5, seed: int = 0
) -> SubjectSplit:
    """Fix a stratified test set of subjects, then ``n_folds`` stratified folds of the rest.

    Parameters
    ----------
    subjects, labels : sequences of equal length
        One entry per scan; a subject with several scans must have one label.
    test_size : float
        Fraction of each class's subjects held out for testing (at least one
        per class when the class has two or more subjects).
    n_folds : int
        Cross-validation folds inside the training subjects (>= 2).
    seed : int
        Seed of the shuffles (same seed, same split).

    Returns
    -------
    SubjectSplit
    """
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    per_subject = subject_labels(subjects, labels)
    rng = np.random.default_rng(seed)
    test = _stratified_take(per_subject, test_size, rng)
    rest = per_subject.drop(index=test)
    if len(rest) < n_folds:
        raise ValueError(f"{len(rest)} training subjects cannot make {n_folds} folds")
    split = SubjectSplit(test=test, folds=_stratified_folds(rest, n_folds, rng), labels=per_subject)
    assert_no_leakage(test=split.test, train=split.train_pool)
    return split


def stratified_subset(subjects: Sequence[str], labels: Sequence, fraction: float, seed: int = 0) -> list[str]:
    """A stratified random ``fraction`` of the subjects (e.g. the PIF paper's 20 % subset)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    per_subject = subject_labels(subjects, labels)
    if fraction == 1:
        return sorted(per_subject.index)
    rng = np.random.default_rng(seed)
    taken: list[str] = []
    for label in sorted(per_subject.unique(), key=str):
        members = np.array(sorted(per_subject.index[per_subject == label]))
        n = max(1, int(round(fraction * len(members))))
        taken += list(rng.permutation(members)[:n])
    return sorted(taken)


def stratified_holdout(
    subjects: Sequence[str], labels: Sequence, fraction: float, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split subjects into ``(kept, held_out)`` with ``fraction`` of each class held out.

    Every class with two or more subjects keeps at least one and holds out at
    least one. Used for the validation set of a single training run.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    per_subject = subject_labels(subjects, labels)
    held = _stratified_take(per_subject, fraction, np.random.default_rng(seed))
    kept = sorted(set(per_subject.index) - set(held))
    assert_no_leakage(kept=kept, held_out=held)
    return kept, held
