"""Evaluation yardsticks: lesion-wise detection, FP clusters, Dice ceiling, top-k vs chance, AUC."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from nbutils.classify.metrics import binary_auc, roc_auc
from nbutils.evaluation import (
    age_matched,
    auc_with_ci,
    detection_rate_by,
    dice_ceiling,
    false_positive_components,
    lesion_components,
    lesion_detection,
    scan_dice_ceiling,
    size_bin_labels,
    topk_chance,
    topk_hit,
    topk_summary,
)
from nbutils.normative.deviation import dice


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def _two_lesions(shape=(7, 8, 9)):
    """A 2x2x2 lesion (8 voxels) and a 3x3x3 lesion (27 voxels), far apart."""
    truth = np.zeros(shape, bool)
    truth[1:3, 1:3, 1:3] = True
    truth[4:7, 5:8, 5:8] = True
    return truth


# ---------------------------------------------------------------- components and detection


def test_lesion_components_respect_connectivity():
    t = np.zeros((11, 12, 13), bool)
    t[2, 2, 2] = t[3, 3, 3] = True  # corner neighbours
    t[8, 8, 8] = True
    assert lesion_components(t, 26)[1] == 2
    assert lesion_components(t, 6)[1] == 3
    labels, n = lesion_components(t, 18)
    assert n == 3 and labels.shape == t.shape and labels.max() == 3


def test_perfect_detector_finds_every_lesion_without_false_clusters():
    truth = _two_lesions()
    table = lesion_detection(truth, truth, voxel_volume_mm3=8.0)
    assert len(table) == 2
    assert table["detected"].all()
    assert sorted(table["voxels"]) == [8, 27]
    assert sorted(table["volume_cm3"]) == pytest.approx([0.064, 0.216])
    assert detection_rate_by(table, None)["detection_rate"].iloc[0] == 1.0
    assert false_positive_components(truth, truth) == 0


def test_missing_one_of_two_lesions_scores_half():
    truth = _two_lesions((11, 12, 13))
    seg = np.zeros_like(truth)
    seg[5, 6, 6] = True  # one voxel inside the large lesion only
    table = lesion_detection(seg, truth, voxel_volume_mm3=1.0)
    overall = detection_rate_by(table, None).iloc[0]
    assert overall["n_lesions"] == 2 and overall["n_detected"] == 1
    assert overall["detection_rate"] == 0.5
    assert overall["ci_lo"] < 0.5 < overall["ci_hi"]
    assert table.set_index("voxels").loc[27, "detected"]
    assert not table.set_index("voxels").loc[8, "detected"]


def test_detection_in_a_batch_by_size_and_class():
    truth = np.zeros((3, 11, 12, 13), bool)
    truth[0, 1:3, 1:3, 1:3] = True  # 8 voxels -> 1 cm3 at 125 mm3 voxels: bin 1-10
    truth[1, 0, 0, 0] = True  # 1 voxel = 0.125 cm3: bin < 1
    truth[1, 2:12, 2:12, 2:12] = True  # 1000 voxels = 125 cm3: bin >= 10
    # scan 2 has no lesion
    seg = np.zeros_like(truth)
    seg[1, 5, 5, 5] = True
    seg[2, 5, 5, 5] = True  # a false cluster on a lesion-free scan
    table = lesion_detection(seg, truth, voxel_volume_mm3=125.0, subjects=["a", "b", "c"])
    assert list(table["subject"]) == ["a", "b", "b"]
    by_size = detection_rate_by(table, "size_bin")
    assert list(by_size.index) == size_bin_labels((1, 10))
    assert list(by_size["n_lesions"]) == [1, 1, 1]
    assert list(by_size["detection_rate"]) == [0.0, 0.0, 1.0]
    table["class"] = table["subject"].map({"a": "glioma", "b": "meningioma"})
    by_class = detection_rate_by(table, "class")
    assert by_class.loc["glioma", "detection_rate"] == 0.0
    assert by_class.loc["meningioma", "detection_rate"] == 0.5
    assert list(false_positive_components(seg, truth)) == [0, 0, 1]


def test_empty_size_bin_is_reported_with_zero_lesions():
    truth = _two_lesions()
    table = lesion_detection(truth, truth, voxel_volume_mm3=1.0)
    rates = detection_rate_by(table)
    assert rates.loc["≥ 10 cm³", "n_lesions"] == 0
    assert np.isnan(rates.loc["≥ 10 cm³", "detection_rate"])
    assert rates.loc["< 1 cm³", "n_lesions"] == 2


def test_no_lesions_give_an_empty_typed_table():
    table = lesion_detection(np.zeros((7, 8, 9)), np.zeros((7, 8, 9)), voxel_volume_mm3=8.0)
    assert table.empty
    assert table["voxels"].dtype.kind == "i" and table["volume_cm3"].dtype.kind == "f"
    overall = detection_rate_by(table, None).iloc[0]
    assert overall["n_lesions"] == 0 and np.isnan(overall["detection_rate"])


def test_false_positive_components_count_clusters_away_from_lesions():
    truth = _two_lesions((11, 12, 13))
    seg = truth.copy()
    seg[0, 11, 0] = True  # isolated false cluster
    seg[9:11, 0:2, 0:2] = True  # another one
    seg[3, 3, 3] = True  # touches the small lesion diagonally: same component, not false
    assert false_positive_components(seg, truth) == 2
    healthy = np.zeros_like(seg)
    assert false_positive_components(seg) == 4  # no truth: every component counts
    assert false_positive_components(healthy) == 0
    assert list(false_positive_components(np.stack([seg, healthy]))) == [4, 0]


# ---------------------------------------------------------------- Dice ceiling


def test_dice_ceiling_hand_numbers():
    # 100 lesion voxels in a 10,100-voxel mask at 5 % FPR: FP = 0.05 * 10,000 = 500
    assert dice_ceiling(100, 0.05, 10_100) == pytest.approx(200 / 700)
    # 1,000 lesion voxels, 1 % FPR, 101,000-voxel mask: FP = 1,000 -> 2000 / 3000
    assert dice_ceiling(1000, 0.01, 101_000) == pytest.approx(2 / 3)
    got = dice_ceiling(np.array([0, 100, 1000]), 0.0, 10_100)
    assert list(got) == [1.0, 1.0, 1.0]
    assert dice_ceiling(0, 0.05, 1000) == 0.0
    assert dice_ceiling(100, 1.0, 100) == 1.0  # no healthy voxel left to mislabel


def test_dice_ceiling_matches_dice_of_a_perfectly_sensitive_segmentation():
    mask = np.ones((11, 12, 13), bool)
    truth = np.zeros_like(mask)
    truth[2:5, 2:5, 2:5] = True  # 27 voxels
    healthy = np.flatnonzero(~truth)
    fpr = 0.05
    n_fp = round(fpr * healthy.size)
    seg = truth.copy()
    seg.flat[healthy[:n_fp]] = True
    expected = dice(seg, truth)
    assert dice_ceiling(int(truth.sum()), n_fp / healthy.size, mask.size) == pytest.approx(expected)
    per_scan = scan_dice_ceiling(np.stack([truth, truth[::-1]]), mask, n_fp / healthy.size)
    assert per_scan.shape == (2,)
    assert per_scan == pytest.approx([expected, expected])


def test_scan_dice_ceiling_counts_only_lesion_inside_the_mask():
    truth = np.ones((7, 8, 9), bool)
    mask = np.zeros_like(truth)
    mask[:2] = True  # 144 voxels, all lesion
    assert scan_dice_ceiling(truth, mask, 0.5) == pytest.approx([1.0])
    mask[2:4] = True
    truth[2:4] = False  # now 144 lesion of 288 voxels
    assert scan_dice_ceiling(truth, mask, 0.5) == pytest.approx([288 / (288 + 72)])


# ---------------------------------------------------------------- top-k against chance


@pytest.mark.parametrize("n", range(1, 8))
def test_topk_chance_equals_enumeration(n):
    regions = range(n)
    for t in range(n + 1):
        targets = set(range(t))
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(regions, k))
            exact = sum(bool(targets & set(s)) for s in subsets) / len(subsets)
            assert topk_chance(n, t, k) == pytest.approx(exact, abs=1e-12)


def test_topk_chance_vectorised_and_by_hand():
    assert topk_chance(10, 1, 3) == pytest.approx(0.3)
    assert topk_chance(10, 2, 1) == pytest.approx(0.2)
    assert topk_chance(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert list(topk_chance(10, np.array([1, 2]), 1)) == pytest.approx([0.1, 0.2])


def test_random_rankings_hit_at_chance(rng):
    n_sub, n_reg, k = 4000, 12, 3
    names = [f"r{i}" for i in range(n_reg)]
    targets = ["r0", "r5"]
    hits = topk_hit(rng.normal(size=(n_sub, n_reg)), names, targets, k)
    chance = topk_chance(n_reg, len(targets), k)
    tolerance = 4 * math.sqrt(chance * (1 - chance) / n_sub)
    assert abs(hits.mean() - chance) < tolerance
    summary = topk_summary(hits, chance)
    assert summary["n"] == n_sub and summary["chance"] == pytest.approx(chance)
    assert summary["p_value"] > 1e-3  # random rankings are not "significant"


def test_informative_profile_beats_chance_and_ties_do_not_favour_targets(rng):
    names = ["hippocampus", "amygdala", "putamen", "caudate", "thalamus", "cerebellum"]
    profile = rng.normal(size=(40, 6))
    profile[:30, 0] += 10  # 30 of 40 subjects: hippocampus clearly top
    hits = topk_hit(pd.DataFrame(profile, columns=names), None, ["hippocampus"], 1)
    assert hits[:30].all()
    summary = topk_summary(hits, topk_chance(6, 1, 1))
    assert summary["hit_rate"] >= 0.75
    assert summary["p_value"] < 1e-10
    flat = np.zeros((1, 6))  # all tied: stable order puts the first region on top
    assert not topk_hit(flat, names, ["thalamus"], 2)[0]
    assert topk_hit(flat, names, ["amygdala"], 2)[0]
    nan_top = np.array([np.nan, 0, 0, 0, 0, 1.0])
    assert not topk_hit(nan_top, names, ["hippocampus"], 5)[0]  # NaN ranks last


def test_topk_per_subject_targets_and_poisson_binomial_p_value():
    names = ["a", "b", "c", "d"]
    profile = np.array([[4, 3, 2, 1], [1, 2, 3, 4]], float)
    hits = topk_hit(profile, names, [["a"], ["a", "b"]], 1)
    assert list(hits) == [True, False]
    chance = topk_chance(4, np.array([1, 2]), 1)
    out = topk_summary(hits, chance)
    # P(at least one hit) = 1 - (1 - 1/4) * (1 - 1/2)
    assert out["p_value"] == pytest.approx(1 - 0.75 * 0.5)
    assert out["chance"] == pytest.approx(0.375)


# ---------------------------------------------------------------- AUC and matching


def test_binary_auc_is_public_and_keeps_roc_auc_behaviour():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert binary_auc(y, s) == pytest.approx(0.75)
    assert binary_auc([0, 1], [0.5, 0.5]) == 0.5  # lists work, ties count half
    assert roc_auc(y, np.c_[1 - s, s]) == pytest.approx(0.75)


def test_auc_with_ci_separating_random_and_reversed(rng):
    auc, lo, hi = auc_with_ci(rng.normal(5, 1, 30), rng.normal(0, 1, 40), n_boot=300)
    assert (auc, lo, hi) == (1.0, 1.0, 1.0)
    auc, lo, hi = auc_with_ci(rng.normal(size=60), rng.normal(size=80), n_boot=500, seed=1)
    assert abs(auc - 0.5) < 0.15
    assert lo < 0.5 < hi and lo < auc < hi
    assert hi - lo < 0.4
    assert auc_with_ci([0.0, 0.1], [1.0, 2.0], n_boot=50)[0] == 0.0
    assert auc_with_ci(np.arange(20.0), np.arange(20.0) - 0.5, n_boot=200, seed=3) == auc_with_ci(
        np.arange(20.0), np.arange(20.0) - 0.5, n_boot=200, seed=3
    )


def test_age_matching_keeps_controls_in_the_cases_age_range():
    controls = [20.0, 59.0, 61.0, 70.0, 88.0, 91.5]
    assert age_matched(controls, [64.0, 80.0, 86.0], margin_years=5).tolist() == [
        False, True, True, True, True, False]  # fmt: skip
    assert age_matched(controls, [70.0], margin_years=0).tolist() == [False] * 3 + [True] + [False] * 2
    assert not age_matched(controls, []).any()


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: lesion_detection(np.zeros((7, 8, 9)), np.zeros((7, 8, 8)), 1.0), "does not match truth"),
        (lambda: lesion_detection(np.zeros((7, 8)), np.zeros((7, 8)), 1.0), "volume"),
        (lambda: lesion_detection(np.zeros((0, 7, 8, 9)), np.zeros((0, 7, 8, 9)), 1.0), "empty"),
        (lambda: lesion_detection(np.zeros((2, 7, 8, 9)), np.zeros((2, 7, 8, 9)), 1.0, subjects=["a"]), "subject ids"),
        (lambda: lesion_detection(np.zeros((7, 8, 9)), np.zeros((7, 8, 9)), voxel_volume_mm3=0), "voxel_volume"),
        (lambda: lesion_components(np.zeros((7, 8, 9)), connectivity=8), "connectivity"),
        (lambda: false_positive_components(np.zeros((7, 8, 9)), np.zeros((11, 12, 13))), "does not match"),
        (lambda: detection_rate_by(pd.DataFrame({"detected": [True]}), "size_bin"), "size_bin"),
        (lambda: size_bin_labels((10, 1)), "increasing"),
        (lambda: dice_ceiling(200, 0.05, 100), "exceeds mask_voxels"),
        (lambda: dice_ceiling(10, 1.5, 100), "fpr"),
        (lambda: dice_ceiling([], 0.05, 100), "empty"),
        (lambda: scan_dice_ceiling(np.zeros((7, 8, 9)), np.zeros((7, 8, 9)), 0.05), "mask is empty"),
        (lambda: scan_dice_ceiling(np.zeros((7, 8, 9)), np.ones((11, 12, 13)), 0.05), "mask shape"),
        (lambda: topk_chance(5, 1, 6), "k must be"),
        (lambda: topk_chance(5, 6, 1), "n_targets"),
        (lambda: topk_hit(np.zeros((2, 3)), ["a", "b"], ["a"], 1), "region names for 3"),
        (lambda: topk_hit(np.zeros((2, 3)), ["a", "b", "c"], ["z"], 1), "not among the region names"),
        (lambda: topk_hit(np.zeros((2, 3)), ["a", "b", "c"], "a", 1), "not one string"),
        (lambda: topk_hit(np.zeros((2, 3)), ["a", "b", "c"], [["a"]], 1), "target lists for 2"),
        (lambda: topk_summary([], 0.1), "hits is empty"),
        (lambda: topk_summary([True, False], [0.1, 0.2, 0.3]), "chance levels for 2"),
        (lambda: auc_with_ci([], [1.0]), "at least one positive"),
        (lambda: auc_with_ci([np.nan], [1.0]), "finite"),
        (lambda: age_matched([1.0], [np.nan]), "finite"),
        (lambda: age_matched([1.0], [1.0], margin_years=-1), "margin_years"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
