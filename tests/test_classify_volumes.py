"""Loading task volumes on a coarser working grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from nbutils.classify.volumes import (
    load_task,
    load_volumes,
    resize_labels,
    upsample_maps,
    working_shape,
)


def _write(tmp_path, rng, n=6, shape=(10, 12, 8)):
    paths = []
    for i in range(n):
        path = tmp_path / f"sub-{i:02d}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
        paths.append(str(path))
    return paths


def test_working_shape():
    assert working_shape((80, 96, 80), 2.0, 3.0) == (53, 64, 53)
    assert working_shape((80, 96, 80), 2.0, 4.0) == (40, 48, 40)
    with pytest.raises(ValueError, match="finer"):
        working_shape((8, 8, 8), 2.0, 1.0)


def test_load_volumes_area_average(tmp_path, rng):
    paths = _write(tmp_path, rng, n=2)
    full = load_volumes(paths, progress=False)
    half = load_volumes(paths, working_resolution=4.0, progress=False)
    assert full.shape == (2, 10, 12, 8) and half.shape == (2, 5, 6, 4)
    np.testing.assert_allclose(half[0, 0, 0, 0], full[0, :2, :2, :2].mean(), rtol=1e-5)
    assert upsample_maps(half, (10, 12, 8)).shape == (2, 10, 12, 8)
    labels = np.arange(10 * 12 * 8).reshape(10, 12, 8)
    assert resize_labels(labels, (5, 6, 4)).dtype == labels.dtype


def test_load_task_selects_classes(tmp_path, rng):
    paths = _write(tmp_path, rng, n=6)
    table = pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(6)], "path": paths,
                          "diagnosis": ["CN", "AD", "CN", "glioma", "CN", "AD"]})
    task = load_task(table, {"CN": ["CN"], "AD": ["AD"]}, working_resolution=4.0, progress=False)
    assert task.class_names == ["CN", "AD"]
    assert task.images.shape == (5, 1, 5, 6, 4)
    assert task.y.tolist() == [0, 0, 0, 1, 1]
    capped = load_task(table, {"CN": ["CN"], "AD": ["AD"]}, max_per_class={"CN": 2}, progress=False)
    assert (capped.y == 0).sum() == 2
    with pytest.raises(ValueError, match="meningioma"):
        load_task(table, {"CN": ["CN"], "M": ["meningioma"]}, progress=False)


def test_region_patterns_pick_the_intended_atlas_labels():
    from nbutils.anatomy import AD_TARGET_PATTERN, load_atlas, standard_grid
    from nbutils.classify.volumes import CORTEX_REGIONS

    atlas = load_atlas("neuromorphometrics", standard_grid(4.0))
    names = atlas.labels.set_index("index")["name"]
    cortex = set(names.loc[atlas.index_of(CORTEX_REGIONS)])
    assert {"Left_PCu_precuneus", "Right_Ent_entorhinal_area", "Left_SFG_superior_frontal_gyrus"} <= cortex
    non_cortical = {"Left_Hippocampus", "Right_Amygdala", "Left_Cerebral_White_Matter", "Right_Lateral_Ventricle",
                    "Left_Inf_Lat_Vent", "Right_Accumbens_Area", "Brain_Stem", "CSF", "Right_vessel",
                    "Left_Thalamus_Proper", "Right_Cerebellum_Exterior"}
    assert not cortex & non_cortical
    assert len(cortex) % 2 == 0 and len(cortex) >= 90  # left/right pairs of the cortical parcellation
    mtl = set(names.loc[atlas.index_of(AD_TARGET_PATTERN)])
    assert {"Left_Hippocampus", "Right_Amygdala", "Left_Lateral_Ventricle", "Right_Inf_Lat_Vent"} <= mtl
    assert len(mtl) == 10 and not mtl & cortex - {"Left_Ent_entorhinal_area", "Right_Ent_entorhinal_area"}
