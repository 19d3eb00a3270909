import nibabel as nib
import numpy as np
import pytest

from nbutils import anatomy


def test_standard_grid_default_is_80x96x80_at_2mm():
    g = anatomy.standard_grid()
    assert g.shape == (80, 96, 80)
    assert g.resolution == 2.0
    np.testing.assert_allclose(np.diag(g.affine)[:3], [2, 2, 2])
    assert all(n % 16 == 0 for n in g.shape)


@pytest.mark.parametrize("res", [1.5, 2.0, 3.0, 4.0])
def test_grid_holds_the_whole_brain_box(res):
    g = anatomy.standard_grid(res)
    lo = g.world_coords([0, 0, 0])
    hi = g.world_coords(np.array(g.shape) - 1)
    for axis, (a, b) in enumerate(anatomy.BRAIN_BOX_MM):
        assert lo[axis] <= a and hi[axis] >= b
    assert all(n % 16 == 0 for n in g.shape)


def test_world_and_voxel_coords_are_inverse(rng):
    g = anatomy.standard_grid(3.0)
    ijk = rng.uniform(0, 40, size=(5, 3))
    np.testing.assert_allclose(g.voxel_coords(g.world_coords(ijk)), ijk, atol=1e-9)


def test_grid_image_checks_shape():
    g = anatomy.standard_grid(4.0)
    assert g.image(np.zeros(g.shape, np.float32)).shape == g.shape
    with pytest.raises(ValueError, match="does not match grid shape"):
        g.image(np.zeros((7, 8, 9)))


def test_template_tissue_and_mask_line_up():
    g = anatomy.standard_grid(4.0)
    t1 = anatomy.load_template(g)
    mask = anatomy.load_brain_mask(g).get_fdata() > 0
    tissues = {k: v.get_fdata() for k, v in anatomy.load_tissue_maps(g).items()}
    assert t1.shape == g.shape and np.allclose(t1.affine, g.affine)
    total = tissues["gm"] + tissues["wm"] + tissues["csf"]
    np.testing.assert_allclose(total[mask], 1.0, atol=1e-5)
    assert np.all(total[~mask] == 0)
    # brain of the MNI152 template: ~1.9 litres at this mask
    assert 1.5e6 < mask.sum() * g.voxel_volume < 2.3e6
    # WM is brighter than GM on the T1 template
    t = t1.get_fdata()
    assert t[tissues["wm"] > 0.9].mean() > t[tissues["gm"] > 0.9].mean()


def test_neuromorphometrics_table_and_regions():
    atlas = anatomy.load_atlas("neuromorphometrics", anatomy.standard_grid(2.0))
    assert list(atlas.labels.columns) == ["index", "name", "hemisphere"]
    hippo = atlas.labels[atlas.labels["name"].str.contains("Hippocampus")]
    assert set(hippo["hemisphere"]) == {"L", "R"}
    data = atlas.data()
    assert np.issubdtype(data.dtype, np.integer)
    assert set(np.unique(data)) - {0} == set(atlas.labels["index"])
    vols = atlas.volumes_mm3()
    # left hippocampus of the MNI152 brain: a few cm³
    assert 2000 < vols["Left_Hippocampus"] < 6000
    assert atlas.index_of("lateral_ventricle") == sorted(atlas.index_of("Lateral_Ventricle"))


def test_probabilistic_atlas_becomes_labels():
    atlas = anatomy.load_atlas("harvard_oxford", anatomy.standard_grid(4.0))
    assert atlas.data().ndim == 3
    assert atlas.labels["index"].min() >= 1


def test_unknown_atlas_lists_choices():
    with pytest.raises(ValueError, match="choose one of .*neuromorphometrics"):
        anatomy.load_atlas("nope")


def test_resample_labels_keeps_labels_integral(rng):
    labels = rng.integers(0, 5, size=(7, 8, 9)).astype(np.int16) * 10
    img = nib.Nifti1Image(labels, _affine(20.0, (-70, -80, -90)))
    out = anatomy.resample_labels_to_grid(img, anatomy.standard_grid(4.0))
    data = np.asarray(out.dataobj)
    assert np.issubdtype(data.dtype, np.integer)
    assert set(np.unique(data)) <= set(np.unique(labels)) | {0}


def test_resample_labels_refuses_fractional_values():
    img = nib.Nifti1Image(np.full((7, 8, 9), 0.5, np.float32), np.eye(4))
    with pytest.raises(ValueError, match="non-integer"):
        anatomy.resample_labels_to_grid(img, anatomy.standard_grid(4.0))


def test_resample_image_is_linear_between_samples():
    # a ramp along x is reproduced exactly by linear interpolation
    g = anatomy.standard_grid(4.0)
    affine = _affine(2.0, (-60, -60, -60))
    x = np.arange(61)[:, None, None] * np.ones((61, 61, 61))
    out = anatomy.resample_to_grid(nib.Nifti1Image(x.astype(np.float32), affine), g).get_fdata()
    i, j, k = np.rint(g.voxel_coords([11.0, -20.0, 5.0])).astype(int)
    x_mm = g.world_coords([i, j, k])[0]
    assert out[i, j, k] == pytest.approx((x_mm + 60) / 2.0, abs=1e-4)


def _affine(zoom, origin):
    m = np.diag([zoom, zoom, zoom, 1.0])
    m[:3, 3] = origin
    return m


def test_analysis_mask_adds_a_rim_and_the_sellar_region():
    grid = anatomy.standard_grid(4.0)
    brain = np.asarray(anatomy.load_brain_mask(grid).dataobj) > 0
    analysed = np.asarray(anatomy.load_analysis_mask(grid).dataobj) > 0
    assert np.all(analysed[brain]), "the brain is analysed"
    assert 1.05 < analysed.sum() / brain.sum() < 1.4, "a thin rim, not the whole box"
    sella = anatomy.sella_position()
    assert abs(sella[0]) < 4 and -40 < sella[2] < -20, sella  # midline, below the chiasm
    i, j, k = np.round(grid.voxel_coords([sella])[0]).astype(int)
    assert analysed[i, j, k] and not brain[i, j, k], "the pituitary fossa lies outside the brain mask"
