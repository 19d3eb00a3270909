"""Subject-level splits without leakage, and metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbutils.classify.metrics import (
    classification_metrics,
    confusion_matrix,
    read_learning_curves,
    summarise,
)
from nbutils.classify.splits import (
    LeakageError,
    assert_no_leakage,
    stratified_subset,
    subject_split,
)


def _cohort(rng, n_cn=30, n_ad=13, scans_per_subject=2):
    subjects = [f"sub-{i:03d}" for i in range(n_cn + n_ad)]
    labels = ["CN"] * n_cn + ["AD"] * n_ad
    order = rng.permutation(len(subjects))
    subj = [subjects[i] for i in order for _ in range(scans_per_subject)]
    lab = [labels[i] for i in order for _ in range(scans_per_subject)]
    return subj, lab


def test_split_is_stratified_by_subject_and_leak_free(rng):
    subj, lab = _cohort(rng)
    split = subject_split(subj, lab, test_size=0.2, n_folds=5, seed=3)
    per = split.labels
    assert len(per) == 43
    assert (per.loc[split.test] == "CN").sum() == 6  # round(0.2 * 30)
    assert (per.loc[split.test] == "AD").sum() == 3  # round(0.2 * 13)
    assert sorted(split.test + split.train_pool) == sorted(set(subj))
    sizes = [len(f) for f in split.folds]
    assert max(sizes) - min(sizes) <= 1
    for i in range(5):
        train, val = split.fold(i)
        assert not set(train) & set(val)
        assert not set(val) & set(split.test)
        n_ad = (per.loc[val] == "AD").sum()
        assert n_ad in (2, 1)  # 10 AD over 5 folds
    table = split.table()
    assert table.loc["test", "AD"] == 3


def test_split_is_reproducible_and_seed_dependent(rng):
    subj, lab = _cohort(rng)
    a = subject_split(subj, lab, seed=1)
    b = subject_split(subj, lab, seed=1)
    c = subject_split(subj, lab, seed=2)
    assert a.test == b.test and a.folds == b.folds
    assert a.test != c.test


def test_leakage_assertion_fires():
    assert_no_leakage(train=["a", "b"], val=["c"], test=["d"])
    with pytest.raises(LeakageError, match="train & test: b"):
        assert_no_leakage(train=["a", "b"], val=["c"], test=["b"])


def test_fold_checks_leakage_every_time(rng):
    subj, lab = _cohort(rng)
    split = subject_split(subj, lab, n_folds=3)
    tampered = type(split)(test=split.test + [split.folds[0][0]], folds=split.folds, labels=split.labels)
    with pytest.raises(LeakageError):
        tampered.fold(1)


def test_subject_with_two_labels_is_rejected():
    with pytest.raises(ValueError, match="sub-1"):
        subject_split(["sub-1", "sub-1", "sub-2", "sub-3"], ["CN", "AD", "CN", "AD"], n_folds=2)


def test_stratified_subset(rng):
    subj, lab = _cohort(rng, scans_per_subject=1)
    sub = stratified_subset(subj, lab, 0.2, seed=0)
    per = dict(zip(subj, lab, strict=True))
    assert sum(per[s] == "CN" for s in sub) == 6 and sum(per[s] == "AD" for s in sub) == 3
    assert stratified_subset(subj, lab, 0.2, seed=0) == sub


def test_binary_metrics_by_hand():
    # true: 4 negatives, 2 positives; predicted: one FP, one FN
    y = [0, 0, 0, 0, 1, 1]
    p1 = np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.4])
    m = classification_metrics(y, np.c_[1 - p1, p1])
    assert m["sensitivity"] == pytest.approx(1 / 2)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(1 / 2)
    # AUC: positives 0.8, 0.4 vs negatives 0.1 0.2 0.7 0.3 -> 0.8 beats 4, 0.4 beats 3 => 7/8
    assert m["roc_auc"] == pytest.approx(7 / 8)


def test_multiclass_metrics_by_hand():
    y = [0, 0, 1, 1, 2, 2, 2]
    pred = [0, 1, 1, 1, 2, 0, 2]
    prob = np.eye(3)[pred] * 0.8 + 0.2 / 3
    cm = confusion_matrix(y, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    m = classification_metrics(y, prob)
    recall = [1 / 2, 1, 2 / 3]
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recall))
    assert m["sensitivity"] == pytest.approx(np.mean(recall))
    assert m["accuracy"] == pytest.approx(5 / 7)
    precision = [1 / 2, 2 / 3, 1]
    assert m["precision"] == pytest.approx(np.mean(precision))
    spec = [4 / 5, 4 / 5, 4 / 4]  # TN / (TN + FP) per class
    assert m["specificity"] == pytest.approx(np.mean(spec))
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall, strict=True)]
    assert m["f1"] == pytest.approx(np.mean(f1))
    # one-vs-rest AUCs: class 0 scores: true {0,0} -> 0.8667, 0.0667; others 0.0667 x3, 0.8667 (y=2 pred 0)...
    from sklearn.metrics import roc_auc_score

    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, prob, multi_class="ovr", average="macro"))


def test_metrics_with_missing_class_do_not_crash():
    m = classification_metrics([0, 0], np.array([[0.9, 0.1], [0.4, 0.6]]))
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert np.isnan(m["roc_auc"])


def test_summarise_mean_sd():
    table = pd.DataFrame({"balanced_accuracy": [0.5, 0.7, 0.9], "accuracy": [1.0, 1.0, 1.0]})
    s = summarise(table)
    assert s.loc["balanced_accuracy", "mean"] == pytest.approx(0.7)
    assert s.loc["balanced_accuracy", "sd"] == pytest.approx(0.2)
    assert s.loc["accuracy", "sd"] == 0


def test_read_learning_curves(tmp_path):
    csv = tmp_path / "version_0" / "metrics.csv"
    csv.parent.mkdir()
    csv.write_text("epoch,step,train_loss,val_loss\n0,1,,0.9\n0,1,1.0,\n1,3,,0.7\n1,3,0.8,\n")
    curves = read_learning_curves(tmp_path)
    assert curves["epoch"].tolist() == [0, 1]
    assert curves["val_loss"].tolist() == [0.9, 0.7]
    assert curves["train_loss"].tolist() == [1.0, 0.8]
