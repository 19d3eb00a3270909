"""Tests of nbutils.normative.evaluate on tiny synthetic volumes (unequal axes, seeded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nbutils.normative.evaluate import (
    METHODS,
    StabilityResult,
    calibration_by_group,
    detection_summary,
    healthy_thresholds,
    method_scores,
    profile_correlation,
    stability_study,
)
from nbutils.normative.pipeline import deviation_maps, fit_normative_stats, regional_profiles

SHAPE = (7, 8, 9)


def _atlas() -> tuple[np.ndarray, pd.DataFrame]:
    labels = np.zeros(SHAPE, np.int32)
    labels[:4] = 3
    labels[4:, :4] = 5
    labels[4:, 4:] = 8
    regions = pd.DataFrame({"index": [3, 5, 8], "name": ["A", "B", "C"],
                            "hemisphere": ["L", "R", "R"]})  # fmt: skip
    return labels, regions


def _net(weight: float) -> torch.nn.Module:
    """A one-voxel 'autoencoder': reconstruction = weight * image."""
    net = torch.nn.Conv3d(1, 1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(weight)
    return net.eval()


def _healthy(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    mask = np.ones(SHAPE, bool)
    net = _net(0.5)
    stats = fit_normative_stats(net, _healthy(12, 1), _healthy(10, 2), mask, atlas_data=_atlas(),
                                min_region_voxels=2, postprocessing={"median_size": 0, "erode": 0})
    return net, stats


def test_perfect_scores_get_auprc_and_best_dice_one():
    rng = np.random.default_rng(0)
    mask = np.ones(SHAPE, bool)
    truth = np.zeros((3, *SHAPE), bool)
    truth[0, 1:3, 2:5, 3:6] = True
    truth[1, 4:6, 1:3, 0:4] = True
    truth[2, 2:5, 5:8, 6:9] = True
    perfect = truth + 0.1 * rng.random(truth.shape)  # lesions all score above every normal voxel
    noise = rng.random(truth.shape)
    summary, per = detection_summary({"perfect": perfect, "noise": noise},
                                     {"perfect": 0.5, "noise": 0.5}, truth, mask)
    summary = summary.set_index("method")
    assert summary.loc["perfect", "auprc"] == pytest.approx(1.0)
    assert summary.loc["perfect", "best_dice"] == pytest.approx(1.0)
    assert summary.loc["perfect", "dice_at_threshold"] == pytest.approx(1.0)
    assert summary.loc["noise", "auprc"] < 0.3  # about the lesion prevalence
    assert summary.loc["noise", "dice_at_threshold"] < 0.3
    assert len(per) == 6
    got = per[per["method"] == "perfect"].set_index("subject")["lesion_voxels"].to_dict()
    assert got == {0: 18, 1: 16, 2: 27}


def test_detection_summary_counts_only_voxels_inside_the_mask():
    truth = np.zeros((1, *SHAPE), bool)
    truth[0, 2:4, 2:4, 2:4] = True
    mask = np.zeros(SHAPE, bool)
    mask[1:6, 1:7, 1:8] = True
    scores = truth.astype(float)
    scores[0, 0, 0, 0] = 5.0  # a false positive outside the brain does not count
    summary, per = detection_summary({"m": scores}, {"m": 0.5}, truth, mask)
    assert summary.loc[0, "auprc"] == pytest.approx(1.0)
    assert per.loc[0, "dice"] == pytest.approx(1.0)


def test_detection_summary_rejects_mismatched_shapes():
    truth = np.zeros((2, *SHAPE), bool)
    with pytest.raises(ValueError, match="do not match truth"):
        detection_summary({"m": np.zeros((2, 7, 8, 8))}, {"m": 0.5}, truth, np.ones(SHAPE))


def test_method_scores_and_healthy_thresholds_flag_five_percent(fitted):
    net, stats = fitted
    val = method_scores(net, stats, _healthy(12, 1))
    assert set(val) == set(METHODS)
    assert all(v.shape == (12, *SHAPE) for v in val.values())
    np.testing.assert_allclose(val["intensity"], np.abs(_healthy(12, 1)))  # no filtering here
    thr = healthy_thresholds(stats, fpr=0.05)
    assert set(thr) == set(METHODS)
    assert thr["autoencoder"] == stats.thresholds["fpr_0.05"]
    # the intensity threshold comes from the reference scans themselves (here: the validation scans)
    assert np.mean(val["intensity"] > thr["intensity"]) == pytest.approx(0.05, abs=0.005)
    # on new healthy scans every method's rate stays near 5 % (leave-one-out thresholds)
    new = method_scores(net, stats, _healthy(12, 3))
    for name in METHODS:
        assert np.mean(new[name] > thr[name]) == pytest.approx(0.05, abs=0.03)
    assert healthy_thresholds(stats, fpr=0.01)["intensity"] > thr["intensity"]


def test_calibration_by_group_reports_age_tertiles_and_sites():
    z = np.zeros((6, *SHAPE), np.float32)
    z[4:, 0] = 3.0  # the two oldest subjects: one plane of 7 flagged
    table = pd.DataFrame({"age": [20, 30, 40, 50, 60, 70], "site": ["a", "b", "a", "b", "a", "b"]})
    out = calibration_by_group(z, np.ones(SHAPE, bool), table).set_index("group")["share"]
    assert out["all"] == pytest.approx(2 / 6 / 7)
    assert out["age old (60-70 y)"] == pytest.approx(1 / 7) and out["age young (20-30 y)"] == 0
    assert out["site a"] == pytest.approx(1 / 3 / 7)
    full = calibration_by_group(z, np.ones(SHAPE, bool), table).set_index("group")
    old = full.loc["age old (60-70 y)"]
    assert old["ci_low"] == old["ci_high"] == pytest.approx(1 / 7)  # both subjects alike: no spread
    site_b = full.loc["site b"]  # 0, 0 and 1/7: an interval around 1/21 that includes 0
    assert site_b["ci_low"] < 0 < 1 / 21 < site_b["ci_high"]


def test_profile_correlation_identical_and_independent():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(40, 30))
    same = profile_correlation([a, a.copy()])
    assert same.loc[0, "r_all"] == pytest.approx(1.0)
    assert same.loc[0, "r_subject_mean"] == pytest.approx(1.0)
    indep = profile_correlation([a, rng.normal(size=a.shape), rng.normal(size=a.shape)])
    assert list(zip(indep["a"], indep["b"], strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert np.all(np.abs(indep["r_all"]) < 0.1)
    flipped = a.copy()
    flipped[0, 0] = np.nan  # missing values are left out, not propagated
    assert profile_correlation([a, -flipped]).loc[0, "r_all"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        profile_correlation([a, a[:, :5]])


def _subjects() -> pd.DataFrame:
    n = 14
    return pd.DataFrame({
        "participant_id": [f"sub-{i:02d}" for i in range(n)],
        "site": ["s1", "s2"] * (n // 2),
        "age": np.linspace(50, 80, n),
        "diagnosis": ["CN"] * 10 + ["AD", "AD", "CN", "CN"],
        "split": ["train"] * 6 + ["val"] * 4 + ["test"] * 4,
    })  # fmt: skip


class FakeBuilder:
    """Stands in for build_normative_model: a one-voxel model whose weight depends on the seed."""

    def __init__(self, weight_of_seed):
        self.weight_of_seed = weight_of_seed
        self.calls = []

    def __call__(self, table, out_dir, **kw):
        self.calls.append({"table": table, "out_dir": out_dir, **kw})
        net = _net(self.weight_of_seed(kw["seed"]))
        stats = fit_normative_stats(net, _healthy(6, 10 + kw["seed"]), _healthy(4, 20), np.ones(SHAPE, bool),
                                    atlas_data=_atlas(), min_region_voxels=2)  # fmt: skip
        return None, stats, net


def _study(builder, tmp_path, main_profile, seeds=(1, 2, 3)) -> StabilityResult:
    labels, _ = _atlas()
    groups = {"CN": np.array([False, False, True, True]), "AD": np.array([True, True, False, False]),
              "tumour": np.zeros(4, bool)}  # fmt: skip
    training = {"model": {"channels": [4]}, "data": {"split_seed": 0, "batch_size": 2}}
    return stability_study(
        _subjects(), _healthy(4, 30), labels, tmp_path / "stability", list(seeds),
        main_profile=main_profile, epochs=3, minutes=0.5, training=training,
        stats_options={"sigma": 1.0}, data_source="noise", groups=groups, build=builder,
    )  # fmt: skip


def test_stability_study_retrains_each_seed_with_the_same_budget(tmp_path):
    builder = FakeBuilder(lambda s: 0.2 * s)
    main = np.random.default_rng(0).normal(size=(4, 3))
    res = _study(builder, tmp_path, main)
    assert [c["seed"] for c in builder.calls] == [1, 2, 3]
    for c in builder.calls:
        assert c["out_dir"] == tmp_path / "stability" / f"seed-{c['seed']}"
        assert c["max_epochs"] == c["patience"] == 3 and c["max_minutes"] == 0.5
        assert c["data"] == {"batch_size": 2} and c["model"] == {"channels": [4]}
        assert c["stats_options"] == {"sigma": 1.0} and c["data_source"] == "noise" and c["reuse"] is True
        pd.testing.assert_frame_equal(c["table"], _subjects())  # the same reference every time
    assert len(res.profiles) == 3 and all(p.shape == (4, 3) for p in res.profiles)
    assert len(res.correlation) == 3
    assert res.seed_correlation == pytest.approx(res.correlation["r_all"].mean())
    assert set(res.by_group) == {"CN", "AD"}  # no tumour subjects: left out
    expected = np.mean([profile_correlation([main, p])["r_all"].iloc[0] for p in res.profiles])
    assert res.main_correlation == pytest.approx(expected)


def test_stability_study_of_identical_replicates_is_one(tmp_path):
    builder = FakeBuilder(lambda s: 0.5)
    stats = builder(None, None, seed=0)[1]
    _, z = deviation_maps(_net(0.5), stats, _healthy(4, 30))
    labels, _ = _atlas()
    main = regional_profiles(stats, z, labels)[0].to_numpy()
    # replicate statistics differ by seed (their validation scans), so use one seed twice
    res = _study(builder, tmp_path, main, seeds=(0, 0))
    assert res.seed_correlation == pytest.approx(1.0)
    assert res.main_correlation == pytest.approx(1.0)
    assert res.by_group["CN"] == pytest.approx(1.0)
    assert np.isnan(res.member_correlation)  # single models: no member-level figure


def test_stability_study_measures_single_members_of_ensembles_too(tmp_path):
    from nbutils.normative.model import EnsembleAutoencoder

    class EnsembleBuilder(FakeBuilder):
        def __call__(self, table, out_dir, **kw):
            _, stats, _ = super().__call__(table, out_dir, **{**kw, "seed": 0})  # one reference
            # member 0 is the same in every replicate, member 1 changes with the seed
            return None, stats, EnsembleAutoencoder([_net(0.5), _net(self.weight_of_seed(kw["seed"]))])

    main = np.random.default_rng(0).normal(size=(4, 3))
    res = _study(EnsembleBuilder(lambda s: [0.1, 0.9, -0.7][s - 1]), tmp_path, main)
    assert np.isfinite(res.member_correlation) and res.member_correlation < 1.0
    same = _study(EnsembleBuilder(lambda s: 0.3), tmp_path / "same", main)
    assert same.member_correlation == pytest.approx(1.0) and same.seed_correlation == pytest.approx(1.0)


# ----------------------------------------------------------------- against chance


def _profiles(rng, n_subjects=40, n_regions=30, boost=0.0):
    names = [f"r{i}" for i in range(n_regions)]
    values = rng.normal(size=(n_subjects, n_regions))
    values[:, :2] += boost  # the first two regions are the targets
    return pd.DataFrame(values, columns=names)


def test_ad_localisation_right_scores_one_random_scores_chance(rng):
    from nbutils.normative.evaluate import ad_localisation

    targets = ["r0", "r1"]
    right, per = ad_localisation(_profiles(rng, boost=-50.0), targets, k=5)  # strongly negative: |z| counts
    assert right["hit_rate"] == 1.0 and per["hit"].all()
    assert right["chance"] == pytest.approx(1 - (28 * 27 * 26 * 25 * 24) / (30 * 29 * 28 * 27 * 26))
    assert right["p_value"] < 1e-6
    rates = [ad_localisation(_profiles(rng), targets, k=5)[0]["hit_rate"] for _ in range(60)]
    assert np.mean(rates) == pytest.approx(right["chance"], abs=0.05)


def test_target_composite_and_age_matched_auc(rng):
    from nbutils.normative.evaluate import age_matched_auc, target_composite

    prof = _profiles(rng, n_subjects=6)
    comp = target_composite(prof, ["r0", "r1", "not_a_region"])
    assert np.allclose(comp, prof[["r0", "r1"]].abs().mean(axis=1))
    dx = np.array(["AD"] * 20 + ["CN"] * 30)
    age = np.r_[rng.uniform(65, 85, 20), rng.uniform(20, 85, 30)]
    perfect = age_matched_auc(np.r_[np.ones(20) + 1, np.zeros(30)], dx, age, "AD", seed=0)
    assert perfect["auc"] == 1.0 and perfect["n_case"] == 20
    kept = (age[20:] >= age[:20].min() - 5) & (age[20:] <= age[:20].max() + 5)
    assert perfect["n_control"] == kept.sum() < 30  # young controls are not matched
    # a score that is just age separates AD from all CN, but much less from age-matched CN
    all_cn = age_matched_auc(age, dx, age, "AD", margin=100.0)
    matched = age_matched_auc(age, dx, age, "AD")
    assert all_cn["auc"] > matched["auc"]
    noise = age_matched_auc(rng.normal(size=50), dx, age, "AD", seed=1)
    assert noise["ci_low"] < 0.5 < noise["ci_high"]
    assert np.isnan(age_matched_auc(age, dx, age, "MCI")["auc"])


def test_lesion_wise_and_false_positive_clusters():
    from nbutils.normative.evaluate import false_positive_clusters, lesion_wise

    shape = (11, 12, 13)
    truth = np.zeros((2, *shape), bool)
    truth[0, 2:4, 2:4, 2:4] = True
    truth[0, 7:10, 7:10, 7:10] = True
    truth[1, 5:7, 5:7, 5:7] = True
    mask = np.ones(shape, bool)
    right = truth.astype(float)
    half = right.copy()
    half[0, 7:10, 7:10, 7:10] = 0  # misses one of the three lesions
    half[1, 0, 0, 0] = 1  # and adds one false cluster
    table = lesion_wise({"right": right, "half": half}, {"right": 0.5, "half": 0.5}, truth, mask, 8.0)
    rate = table.groupby("method")["detected"].mean()
    assert rate["right"] == 1.0 and rate["half"] == pytest.approx(2 / 3)
    assert set(table["volume_cm3"]) == {8 * 8 / 1000, 27 * 8 / 1000}
    healthy = np.zeros((3, *shape))
    healthy[0, 1:3, 1:3, 1:3] = 1
    healthy[0, 8:10, 8:10, 8:10] = 1
    healthy[2, 5, 5, 5] = 1  # a single voxel: removed by min_size=2
    fp = false_positive_clusters({"m": healthy}, {"m": 0.5}, mask, min_size=2)
    assert fp["components"].tolist() == [2, 0, 0] and fp["voxels"].tolist() == [16, 0, 0]


def test_detection_by_class_scores_a_perfect_map_one_and_reports_chance():
    from nbutils.normative.evaluate import detection_by_class

    shape = (7, 8, 9)
    truth = np.zeros((3, *shape), bool)
    truth[0, 1:3, 1:3, 1:3] = True
    truth[1, 4:6, 4:6, 4:6] = True
    truth[2, 2:5, 2:5, 2:5] = True
    mask = np.ones(shape, bool)
    rng = np.random.default_rng(12345)
    scores = {"right": truth.astype(float), "noise": rng.random((3, *shape))}
    thr = {0.05: {"right": 0.5, "noise": 0.95}, 0.01: {"right": 0.5, "noise": 0.99}}
    table = detection_by_class(scores, thr, truth, ["a", "a", "b"], mask)
    assert set(table["class"]) == {"all", "a", "b"} and set(table["fpr"]) == {0.05, 0.01}
    right = table[table.method == "right"]
    assert np.allclose(right[["auprc", "best_dice", "dice_at_fpr"]], 1.0)
    a = table[(table["class"] == "a") & (table.method == "noise")].iloc[0]
    assert a["auprc_chance"] == pytest.approx(16 / (2 * 7 * 8 * 9))
    assert a["auprc"] < 0.2 and a["dice_at_fpr"] < 0.2  # a random score stays near chance
    ceiling = table[(table["class"] == "b") & (table.fpr == 0.05)]["dice_ceiling"].iloc[0]
    assert ceiling == pytest.approx(2 * 27 / (2 * 27 + 0.05 * (7 * 8 * 9 - 27)))
