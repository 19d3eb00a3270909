"""Tests of deviation maps, calibration, thresholds, detection metrics and regional profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbutils.normative.deviation import (
    auprc,
    best_dice,
    binarise,
    dice,
    fit_voxel_norm,
    frac_abs_z_above,
    leave_one_out_z,
    masked_smooth,
    postprocess,
    residual,
    score_map,
    threshold_at_fpr,
)
from nbutils.normative.regional import (
    fit_regional_reference,
    region_centroids,
    region_statistics,
    top_regions,
)

SHAPE = (14, 18, 12)


@pytest.fixture
def mask():
    m = np.zeros(SHAPE, bool)
    m[1:13, 2:16, 1:11] = True
    return m


def test_residual_is_zero_outside_mask(mask):
    rng = np.random.default_rng(0)
    img, rec = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    r = residual(img, rec, mask)
    assert np.all(r[~mask] == 0)
    np.testing.assert_allclose(r[mask], (img - rec)[mask], atol=1e-5)


def test_masked_smooth_keeps_constant_and_ignores_outside(mask):
    vol = np.where(mask, 3.0, 100.0)  # huge values outside must not leak in
    out = masked_smooth(vol, mask, sigma=1.5)
    np.testing.assert_allclose(out[mask], 3.0, rtol=1e-5)
    assert np.all(out[~mask] == 0)


def test_zscores_calibrated_on_noise(mask):
    """Reference and new subjects drawn from the same voxel-wise Gaussian: ~5 % |z| > 1.96."""
    rng = np.random.default_rng(1)
    mu = rng.normal(size=SHAPE) * 2
    sd = 0.5 + rng.random(SHAPE)
    ref = mu + sd * rng.normal(size=(60, *SHAPE))
    new = mu + sd * rng.normal(size=(20, *SHAPE))
    norm = fit_voxel_norm(ref, mask, sigma=0, map_sigma=0)
    share = frac_abs_z_above(norm.z(new), mask).mean()
    assert 0.04 < share < 0.07
    # a shifted subject is flagged everywhere
    assert frac_abs_z_above(norm.z(mu + 3 * sd), mask)[0] > 0.9


def test_leave_one_out_matches_refit(mask):
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(5, *SHAPE))
    loo = leave_one_out_z(maps, mask, sigma=1.0, map_sigma=1.0)
    refit = fit_voxel_norm(np.delete(maps, 2, axis=0), mask, sigma=1.0, map_sigma=1.0)
    np.testing.assert_allclose(loo[2], refit.z(maps[2]), atol=2e-4)


def test_threshold_at_fpr_on_healthy(mask):
    rng = np.random.default_rng(3)
    healthy = rng.normal(size=(8, *SHAPE))
    for fpr in (0.01, 0.05):
        t = threshold_at_fpr(healthy, mask, fpr)
        assert (healthy[:, mask] > t).mean() == pytest.approx(fpr, abs=0.002)
    with pytest.raises(ValueError, match="fpr"):
        threshold_at_fpr(healthy, mask, 0.0)


def test_score_kinds_and_postprocess(mask):
    z = np.zeros(SHAPE, np.float32)
    z[5, 8, 5] = -4.0  # a single-voxel spike is removed by the median filter
    z[2:9, 3:10, 2:9] += 3.0
    assert score_map(z, "negative").max() == pytest.approx(1.0)
    assert score_map(z, "positive").max() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown score kind"):
        score_map(z, "both")
    spike = np.zeros(SHAPE, np.float32)
    spike[6, 9, 6] = 9.0
    assert postprocess(spike, mask, median_size=3).max() == 0
    rim = np.where(mask, 1.0, 0.0)
    assert postprocess(rim, mask, erode=1).sum() < rim.sum()


@pytest.mark.parametrize("size,erode", [(3, 1), (3, 0), (5, 2), (2, 0), (0, 1)])
def test_postprocess_is_ndimage_median_filter_inside_the_eroded_mask(size, erode):
    """The in-mask median is exactly ndimage's (zero padding, ties), 0 outside; stacks go per scan."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    shape = (7, 8, 9)
    score = rng.normal(size=(2, *shape)).astype(np.float32)
    score[:, 2:4] = 0.5  # ties
    mask = ndimage.gaussian_filter(rng.normal(size=shape), 1) > -0.1
    keep = ndimage.binary_erosion(mask, iterations=erode) if erode else mask
    for s, out in zip(score, postprocess(score, mask, median_size=size, erode=erode), strict=True):
        filtered = ndimage.median_filter(s, size=size, mode="constant") if size > 1 else s
        np.testing.assert_array_equal(out, np.where(keep, filtered, 0.0))


def test_masked_smooth_of_a_stack_equals_each_volume_smoothed_alone(mask):
    from scipy import ndimage

    rng = np.random.default_rng(6)
    stack = rng.normal(size=(3, *SHAPE)).astype(np.float32)
    other = mask.copy()
    other[5:7] = False  # a second mask: the cached denominator must not be reused for it
    for m in (mask, other, mask):
        together = masked_smooth(stack, m, sigma=1.2)
        for v, t in zip(stack, together, strict=True):
            w = m.astype(np.float32)
            num = ndimage.gaussian_filter(v * w, 1.2, mode="constant")
            den = np.maximum(ndimage.gaussian_filter(w, 1.2, mode="constant"), 1e-6)
            np.testing.assert_array_equal(t, np.where(m, num / den, 0.0).astype(np.float32))


def test_binarise_min_size():
    s = np.zeros(SHAPE)
    s[1:4, 1:4, 1:4] = 5  # 27 voxels
    s[10, 10, 10] = 5  # 1 voxel
    assert binarise(s, 1).sum() == 28
    assert binarise(s, 1, min_size=2).sum() == 27


def test_dice_hand_cases():
    a = np.array([1, 1, 0, 0], bool)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(a, np.array([1, 0, 0, 0], bool)) == pytest.approx(2 / 3)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_auprc_hand_cases():
    labels = np.array([0, 0, 1, 1])
    assert auprc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    # ranking pos, neg, pos, neg: AP = (1/1 + 2/3) / 2
    assert auprc(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="positive"):
        auprc(np.ones(3), np.zeros(3))


def test_auprc_equals_sklearns_average_precision_with_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(7)
    for _ in range(20):
        labels = rng.random(500) < 0.1
        labels[0] = True
        scores = np.round(rng.normal(size=500) + labels, 1)  # many ties
        assert auprc(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_best_dice_hand_cases():
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    labels = np.array([1, 0, 1, 0])
    d, t = best_dice(scores, labels)
    # top-1: 2/3; top-3: 2*2/(3+2)=0.8; top-2: 0.5
    assert d == pytest.approx(0.8) and t == pytest.approx(0.7)
    # ties are never split
    d, _ = best_dice(np.array([1.0, 1.0, 0.0]), np.array([1, 0, 0]))
    assert d == pytest.approx(2 / 3)


@pytest.fixture
def atlas():
    labels = np.zeros(SHAPE, np.int32)
    labels[0:7, :, :] = 3
    labels[7:14, 0:9, :] = 5
    labels[7:14, 9:18, :] = 8
    labels[7:9, 0:2, 0:2] = 9  # tiny region, below min_voxels
    regions = pd.DataFrame({"index": [3, 5, 8, 9], "name": ["A", "B", "C", "D"],
                            "hemisphere": ["L", "R", "R", "R"]})
    return labels, regions


def test_region_statistics_of_a_stack_equal_each_map_alone_bit_for_bit(atlas):
    labels, _ = atlas
    rng = np.random.default_rng(8)
    z = (rng.normal(size=(4, *SHAPE)) * 3).astype(np.float32)
    mask = rng.random(SHAPE) > 0.2
    stack = region_statistics(z, labels, [3, 5, 8, 42], mask)
    for i, zi in enumerate(z):
        alone = region_statistics(zi, labels, [3, 5, 8, 42], mask)
        for m, values in alone.items():
            np.testing.assert_array_equal(stack[m][i], values)


def test_region_statistics_hand_atlas(atlas):
    labels, regions = atlas
    z = np.zeros(SHAPE, np.float32)
    z[labels == 3] = 1.0
    z[labels == 5] = -2.0
    z[7:14, 9:18, 0] = 10.0  # one slab of region C
    st = region_statistics(z, labels, [3, 5, 8, 42])
    assert st["mean_z"][0] == pytest.approx(1.0) and st["mean_z"][1] == pytest.approx(-2.0)
    assert st["mean_abs_z"][1] == pytest.approx(2.0)
    assert st["mean_z"][2] == pytest.approx(10.0 / 12)
    assert st["p95_abs_z"][2] == pytest.approx(10.0)
    assert np.isnan(st["mean_z"][3])  # label absent
    stack = region_statistics(np.stack([z, -z]), labels, [3, 5])
    assert stack["mean_z"].shape == (2, 2) and stack["mean_z"][1, 0] == pytest.approx(-1.0)


def test_region_centroids(atlas):
    labels, _ = atlas
    c = region_centroids(labels, [3, 8, 42])
    assert np.abs(c[0] - [3, 8.5, 5.5]).max() <= 0.5  # centre of [0:7, 0:18, 0:12]
    assert tuple(c[1]) == (10, 13, 6)  # centre of [7:14, 9:18, 0:12], rounded
    assert tuple(c[2]) == (-1, -1, -1)


def test_regional_reference_profile_and_total(atlas):
    labels, regions = atlas
    rng = np.random.default_rng(4)
    healthy = rng.normal(size=(20, *SHAPE)).astype(np.float32)
    ref = fit_regional_reference(healthy, labels, regions, measure="mean_z", min_voxels=10)
    assert list(ref.regions.name) == ["A", "B", "C"]  # D is too small
    patient = rng.normal(size=SHAPE).astype(np.float32)
    patient[labels == 5] -= 1.0  # region B deviates
    st = region_statistics(patient, labels, ref.regions["index"])
    table = ref.profile_table(st)
    assert table.loc[0, "name"] == "B" and table.loc[0, "profile"] < -5
    assert bool(table.loc[0, "outside_range"])
    assert top_regions(ref.region_z(st), ref.regions.name, k=1) == ["B"]
    # healthy totals are standardised; the patient's total stands out
    hs = region_statistics(healthy, labels, ref.regions["index"])
    totals = ref.total_deviation(ref.region_z(hs))
    assert abs(totals.mean()) < 1e-6
    assert ref.total_deviation(table.sort_values("index")["profile"].to_numpy()) > 3


def test_stats_roundtrip(tmp_path, atlas, mask):
    import torch

    from nbutils.normative.model import ConvAutoencoder
    from nbutils.normative.pipeline import analyse_volume, fit_normative_stats
    from nbutils.normative.stats import load_stats, save_stats

    labels, regions = atlas
    shape = (16, 24, 16)
    lab = np.zeros(shape, np.int32)
    lab[:, :, :] = 3
    lab[8:, :12] = 5
    mask = np.zeros(shape, bool)
    mask[2:14, 2:22, 2:14] = True
    torch.manual_seed(0)
    ae = ConvAutoencoder(channels=(4, 8), latent_channels=2)
    rng = np.random.default_rng(5)
    vols = (rng.normal(size=(6, *shape)) * mask).astype(np.float32)
    stats = fit_normative_stats(ae, vols[:4], vols[4:], mask, atlas_data=(lab, regions),
                                resolution=8.0, provenance={"data_source": "noise"})
    assert set(stats.thresholds) == {"fpr_0.01", "fpr_0.05"}
    assert stats.thresholds["fpr_0.01"] > stats.thresholds["fpr_0.05"]
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    save_stats(stats, ckpt)
    back = load_stats(ckpt)
    np.testing.assert_array_equal(back.residual.sd, stats.residual.sd)
    assert back.thresholds == stats.thresholds
    assert back.provenance["data_source"] == "noise"
    pd.testing.assert_frame_equal(back.regional.regions, stats.regional.regions)
    res = analyse_volume(ae, back, vols[0], labels=lab)
    assert res.z.shape == shape and res.segmentation.dtype == bool
    assert set(res.profile["name"]) == {"A", "B"}
    with pytest.raises(FileNotFoundError, match="normative_stats"):
        load_stats(tmp_path / "elsewhere" / "best.ckpt")


def test_ensemble_z_stays_calibrated_when_members_are_correlated():
    from nbutils.normative.pipeline import ensemble_z

    rng = np.random.default_rng(0)
    shape = (7, 8, 9)
    mask = np.zeros(shape, bool)
    mask[1:6, 1:7, 1:8] = True
    rho, k, n = 0.6, 3, 40
    shared = rng.standard_normal((n, *shape))
    own = rng.standard_normal((k, n, *shape))
    members = (np.sqrt(rho) * shared + np.sqrt(1 - rho) * own).astype(np.float32)  # each N(0, 1)
    plain = members.mean(axis=0)[:, mask]
    combined = ensemble_z(members, mask)
    assert combined.shape == (n, *shape) and combined.dtype == np.float32
    assert plain.std() < 0.9  # the plain mean is under-dispersed: sqrt((1 + 2 * 0.6) / 3) = 0.86
    assert abs(combined[:, mask].std() - 1.0) < 0.05
    assert abs(np.mean(np.abs(combined[:, mask]) > 1.96) - 0.05) < 0.01
    np.testing.assert_array_equal(ensemble_z(members[:1], mask), members[0])
    with pytest.raises(ValueError, match="member z-maps"):
        ensemble_z(members[0], mask)
