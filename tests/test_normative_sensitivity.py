"""Tests of the inserted-atrophy sensitivity study (notebook 04, section 3b)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from nbutils.normative.sensitivity import atrophy_regions, atrophy_sensitivity, sensitivity_summary

matplotlib.use("Agg")

SHAPE = (7, 8, 9)


def _atlas():
    labels = np.zeros(SHAPE, int)
    labels[1:6, 1:4, 1:8] = 1
    labels[1:6, 4:7, 1:4] = 2
    labels[1:6, 4:7, 4:8] = 3
    labels[0, :, :] = 4  # "CSF"
    regions = pd.DataFrame({"index": [1, 2, 3, 4], "name": ["Left_A", "B", "C", "CSF"]})
    regions["n_voxels"] = [int((labels == i).sum()) for i in regions["index"]]
    return labels, regions


def _scans(labels, n=3, seed=0):
    rng = np.random.default_rng(seed)
    base = np.where((labels > 0) & (labels < 4), 1.0, 0.0)
    return (base + 0.02 * rng.normal(size=(n, *SHAPE))).astype(np.float32)


def _mean_profiler(labels, regions, ref_mean, ref_sd):
    """A z of each region's mean intensity against a fixed healthy mean and SD."""

    def profile(volumes, covariates):
        means = np.stack([[v[labels == i].mean() for i in regions["index"]] for v in volumes])
        return pd.DataFrame((means - ref_mean) / ref_sd, columns=regions["name"])

    return profile


def test_atrophy_regions_keeps_tissue_targets_and_draws_others_reproducibly():
    _, regions = _atlas()
    chosen = atrophy_regions(regions, ["Left_A", "CSF"], n_other=1, seed=3, min_voxels=10)
    assert chosen[0] == "Left_A" and "CSF" not in chosen and len(chosen) == 2
    assert chosen == atrophy_regions(regions, ["Left_A", "CSF"], n_other=1, seed=3, min_voxels=10)
    assert set(atrophy_regions(regions, ["Left_A"], n_other=2, seed=0, min_voxels=10)) == {"Left_A", "B", "C"}
    with pytest.raises(ValueError, match="only 2 tissue regions"):
        atrophy_regions(regions, ["Left_A"], n_other=3, seed=0, min_voxels=10)


def test_shrunk_region_is_found_more_often_as_more_is_lost():
    labels, regions = _atlas()
    vols = _scans(labels)
    ref = np.stack([[v[labels == i].mean() for i in regions["index"]] for v in _scans(labels, 5, seed=9)])
    profiler = _mean_profiler(labels, regions, ref.mean(0), ref.std(0) + 0.01)
    csf_prob = (labels == 4).astype(float)
    before = vols.copy()
    table = atrophy_sensitivity({"mean": profiler}, vols, None, labels, regions, ["Left_A", "B"],
                                [0.05, 0.5], csf_prob, progress=False)
    np.testing.assert_array_equal(vols, before)
    assert len(table) == 3 * (2 + 2 * 2)  # per scan: 2 regions unmodified + 2 regions x 2 losses
    big = table[table["loss"] == 0.5]
    assert (big["rank"] == 1).all() and (big["z"] < -1.96).all()  # a region half CSF tops its profile
    assert (big["changed_voxels"] > table[table["loss"] == 0.05]["changed_voxels"].max()).all()
    summary = sensitivity_summary(table, ["Left_A"], k=1, n_regions=4)
    assert summary.loc[("mean", "target", 0.5), "top_k_rate"] == 1.0
    assert summary.loc[("mean", "target", 0.5), "chance"] == pytest.approx(0.25)
    assert summary.loc[("mean", "other", 0.5), "below_range_rate"] == 1.0
    assert summary.loc[("mean", "target", 0.5), "p_value"] == pytest.approx(0.25**3)
    assert summary.loc[("mean", "target", 0.0), "median_z"] > summary.loc[("mean", "target", 0.5), "median_z"]
    from nbutils.normative.plots import plot_atrophy_sensitivity

    fig = plot_atrophy_sensitivity(summary, k=1, title="synthetic test")
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3  # two groups + chance


def test_atrophy_sensitivity_rejects_bad_input():
    labels, regions = _atlas()
    vols = _scans(labels)
    profiler = _mean_profiler(labels, regions, 0.0, 1.0)
    csf_prob = (labels == 4).astype(float)
    with pytest.raises(ValueError, match="losses must be fractions"):
        atrophy_sensitivity({"m": profiler}, vols, None, labels, regions, ["B"], [0.0], csf_prob, progress=False)
    with pytest.raises(ValueError, match="not in the region table"):
        atrophy_sensitivity({"m": profiler}, vols, None, labels, regions, ["Z"], [0.2], csf_prob, progress=False)
    with pytest.raises(ValueError, match="covariate rows"):
        atrophy_sensitivity({"m": profiler}, vols, pd.DataFrame({"age": [1.0]}), labels, regions, ["B"], [0.2],
                            csf_prob, progress=False)
    with pytest.raises(ValueError, match="empty"):
        sensitivity_summary(pd.DataFrame(columns=["region", "rank", "z", "loss", "method"]), ["B"], 1, 4)


def test_combined_profile_keeps_healthy_regions_unit_variance():
    from nbutils.normative.evaluate import combined_profile

    rng = np.random.default_rng(0)
    cols = [f"r{i}" for i in range(40)]
    a = rng.normal(size=(300, 40))
    b = 0.6 * a + 0.8 * rng.normal(size=(300, 40))  # correlation 0.6, unit variance
    ae, nn = pd.DataFrame(a, columns=cols), pd.DataFrame(b, columns=cols)
    healthy = np.arange(300) < 200
    out, rho = combined_profile(ae, nn, healthy)
    assert rho == pytest.approx(0.6, abs=0.03)
    assert out.to_numpy()[healthy].std() == pytest.approx(1.0, abs=0.03)  # a naive mean would be 0.89
    same, rho_same = combined_profile(ae, ae, healthy)
    assert rho_same == pytest.approx(1.0) and np.allclose(same, ae)
    fixed, _ = combined_profile(ae, nn, rho=0.0)
    np.testing.assert_allclose(fixed, (a + b) / np.sqrt(2))
    with pytest.raises(ValueError, match="differ in shape"):
        combined_profile(ae, nn.iloc[:, :3], healthy)
    with pytest.raises(ValueError, match="healthy rows"):
        combined_profile(ae, nn)
