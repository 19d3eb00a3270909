"""Tests of the anomaly insertion used to choose models on healthy validation scans."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nbutils.normative.inserted import csf_level, insert_anomalies, insert_atrophy

SHAPE = (21, 24, 27)  # unequal axes


def _scans(n=2):
    rng = np.random.default_rng(0)
    mask = np.zeros(SHAPE, bool)
    mask[2:19, 3:21, 3:24] = True
    vols = (rng.normal(size=(n, *SHAPE)) * mask).astype(np.float32)
    return vols, mask


def test_inserts_separate_brighter_and_darker_blobs_inside_the_mask():
    vols, mask = _scans()
    before = vols.copy()
    out = insert_anomalies(vols, mask, per_scan=2, volume_cm3=(0.05, 0.4), voxel_volume_mm3=1.0, seed=3)
    np.testing.assert_array_equal(vols, before)  # input untouched
    assert out.volumes.shape == vols.shape and out.truth.dtype == bool
    assert not (out.truth & ~mask).any()
    diff = out.volumes - vols
    np.testing.assert_array_equal(diff != 0, out.truth)  # changed exactly where the truth says
    t = out.table
    assert len(t) == 4 and set(t["direction"]) == {"brighter", "darker"}
    for row in t.itertuples():
        labels, n = ndimage.label(out.truth[row.scan], np.ones((3, 3, 3)))
        assert n == 2  # two separate lesions per scan
        assert labels[row.centre] > 0  # the centre lies in its (convex) lesion
        lesion = labels == labels[row.centre]
        assert lesion.sum() == row.voxels
        sd = vols[row.scan][mask].std()
        np.testing.assert_allclose(diff[row.scan][lesion], row.delta * sd, rtol=1e-4)
        assert np.sign(row.delta) == (1 if row.direction == "brighter" else -1)
    assert t["voxels"].sum() == out.truth.sum()
    assert np.all(t["volume_cm3"] <= 0.4 * 1.001)  # never above the requested range (clipping shrinks)
    assert np.all(np.abs(t["delta"]).between(0.8, 1.6))


def test_same_seed_same_anomalies_other_seed_other_ones():
    vols, mask = _scans()
    kw = {"volume_cm3": (0.05, 0.3), "voxel_volume_mm3": 1.0}
    a, b = insert_anomalies(vols, mask, seed=1, **kw), insert_anomalies(vols, mask, seed=1, **kw)
    c = insert_anomalies(vols, mask, seed=2, **kw)
    np.testing.assert_array_equal(a.volumes, b.volumes)
    assert not np.array_equal(a.truth, c.truth)


def test_single_volume_and_errors():
    vols, mask = _scans(1)
    out = insert_anomalies(vols[0], mask, per_scan=1, volume_cm3=(0.1, 0.2), voxel_volume_mm3=1.0)
    assert out.volumes.shape == SHAPE and out.truth.any()
    with pytest.raises(ValueError, match="do not match"):
        insert_anomalies(vols, mask[:-1])
    with pytest.raises(ValueError, match="cannot hold"):
        insert_anomalies(vols, mask, volume_cm3=(20.0, 30.0), voxel_volume_mm3=1.0)
    with pytest.raises(ValueError, match="could not place"):
        insert_anomalies(vols, mask, per_scan=40, volume_cm3=(1.0, 1.5), voxel_volume_mm3=1.0, max_tries=20)


# ------------------------------------------------------------------ inserted atrophy


def _labelled(shape=(7, 8, 9)):
    """Two box regions (labels 1, 2) in a CSF-filled field (label 0), intensities tissue ~1, CSF ~0."""
    rng = np.random.default_rng(1)
    labels = np.zeros(shape, int)
    labels[1:6, 1:7, 1:5] = 1
    labels[1:6, 1:7, 5:8] = 2
    vol = np.where(labels > 0, 1.0, 0.0) + 0.01 * rng.normal(size=shape)
    csf_prob = (labels == 0).astype(float)
    return vol.astype(np.float32), labels, csf_prob


def test_csf_level_is_the_median_where_the_map_says_csf():
    vol, _, csf_prob = _labelled()
    assert csf_level(vol, csf_prob) == pytest.approx(float(np.median(vol[csf_prob > 0.9])))
    assert abs(csf_level(vol, csf_prob)) < 0.05
    with pytest.raises(ValueError, match="do not match"):
        csf_level(vol, csf_prob[:-1])
    with pytest.raises(ValueError, match="no voxel has CSF probability"):
        csf_level(vol, np.zeros_like(csf_prob))


def test_insert_atrophy_turns_the_outermost_share_of_one_region_into_csf():
    vol, labels, csf_prob = _labelled()
    before = vol.copy()
    out, changed = insert_atrophy(vol, labels, 1, 0.4, fill=-0.5)
    np.testing.assert_array_equal(vol, before)  # input untouched
    n = int((labels == 1).sum())
    assert changed.sum() == round(0.4 * n)
    assert not (changed & (labels != 1)).any()  # only the chosen region
    assert np.all(out[changed] == np.float32(-0.5))
    np.testing.assert_array_equal(out[~changed], vol[~changed])
    depth = ndimage.distance_transform_edt(labels == 1)
    assert depth[changed].max() <= depth[(labels == 1) & ~changed].min()  # from the surface inwards
    more, _ = insert_atrophy(vol, labels, 1, 0.8, fill=-0.5)
    assert (more != vol).sum() > (out != vol).sum()


def test_insert_atrophy_rejects_bad_input():
    vol, labels, _ = _labelled()
    with pytest.raises(ValueError, match="loss must be a fraction"):
        insert_atrophy(vol, labels, 1, 1.0, fill=0.0)
    with pytest.raises(ValueError, match="label 7 is not"):
        insert_atrophy(vol, labels, 7, 0.2, fill=0.0)
    with pytest.raises(ValueError, match="do not match"):
        insert_atrophy(vol, labels[:-1], 1, 0.2, fill=0.0)
