"""2D slice path on a generated fixture: loader, duplicates, patient split, no-ID warning."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nbutils.classify.slices2d import (
    NoPatientIdWarning,
    drop_duplicates,
    export_slices,
    find_duplicates,
    load_slice_folder,
    load_slice_images,
    normalise_label,
    split_slices,
)


def _blob_image(rng, shape=(40, 36)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(8, 28, 2)
    img = 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(20, 80))
    img += rng.normal(0, 20, shape)
    return np.clip(img + 60, 0, 255).astype(np.uint8)


@pytest.fixture
def slice_dataset(tmp_path, rng):
    """Training/<class>/ folders, 3 patients per class x 2 slices, plus planted duplicates."""
    root = tmp_path / "slices"
    for folder in ("glioma_tumor", "meningioma", "notumor"):
        for p in range(3):
            for s in range(2):
                path = root / "Training" / folder / f"P{folder[:2]}{p}_s{s}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_blob_image(rng)).save(path)
    src = root / "Training" / "glioma_tumor" / "Pgl0_s0.png"
    Image.open(src).save(root / "Training" / "glioma_tumor" / "Pgl9_copy.png")  # exact copy, new "patient"
    near = np.asarray(Image.open(src), np.int16) + 1  # brightness +1: same perceptual hash
    Image.fromarray(np.clip(near, 0, 255).astype(np.uint8)).save(root / "Training" / "notumor" / "Pno9_s0.png")
    return root


def test_loader_reads_labels_split_and_patient(slice_dataset):
    table = load_slice_folder(slice_dataset, patient_pattern=r"^(?P<patient>P[a-z]{2}\d)_")
    assert len(table) == 20
    assert set(table["label"]) == {"glioma", "meningioma", "no_tumour"}
    assert (table["source_split"] == "Training").all()
    assert table.loc[table.path.str.endswith("Pgl0_s1.png"), "patient_id"].item() == "Pgl0"
    assert normalise_label("pituitary_tumor") == "pituitary"
    with pytest.raises(FileNotFoundError):
        load_slice_folder(slice_dataset / "missing")


def test_duplicates_found_exact_and_near(slice_dataset):
    table = load_slice_folder(slice_dataset)
    pairs = find_duplicates(table, max_distance=4, progress=False)
    names = {frozenset((a.split("/")[-1], b.split("/")[-1])): k for a, b, k in
             zip(pairs.path_i, pairs.path_j, pairs.kind, strict=True)}
    assert names[frozenset(("Pgl0_s0.png", "Pgl9_copy.png"))] == "exact"
    assert names[frozenset(("Pgl0_s0.png", "Pno9_s0.png"))] == "near"
    cross = pairs[~pairs.same_label]
    assert len(cross) >= 1  # the planted near-duplicate crosses classes
    kept, dropped = drop_duplicates(table, pairs)
    # the cluster {Pgl0_s0, Pgl9_copy, Pno9_s0} has two labels: all three dropped
    assert len(kept) == len(table) - 3
    assert set(dropped["reason"]) == {"label conflict"}


def test_patient_split_keeps_patients_together(slice_dataset):
    table = load_slice_folder(slice_dataset, patient_pattern=r"^(?P<patient>P[a-z]{2}\d)_")
    split, groups = split_slices(table, test_size=0.3, n_folds=2, seed=0)
    assert len(set(groups)) == 11  # 9 patients + 2 planted "patients"
    test_rows = np.isin(groups, split.test)
    for patient in set(groups):
        rows = groups == patient
        assert test_rows[rows].all() or not test_rows[rows].any()
    split.fold(0)  # leakage check passes


def test_no_patient_id_warns_and_keeps_duplicates_together(slice_dataset):
    table = load_slice_folder(slice_dataset)
    pairs = find_duplicates(table, progress=False)
    with pytest.warns(NoPatientIdWarning, match="No patient IDs"):
        split, groups = split_slices(table, pairs, test_size=0.3, n_folds=2)
    names = table.path.str.split("/").str[-1].to_numpy()
    g = {n: groups[k] for k, n in enumerate(names)}
    assert g["Pgl0_s0.png"] == g["Pgl9_copy.png"] == g["Pno9_s0.png"]
    assert len(set(groups)) == 18


def test_export_and_load_images(tmp_path, rng):
    vols = rng.normal(size=(2, 10, 12, 9)).astype(np.float32)
    table = export_slices(vols, ["sub-01", "sub-02"], ["glioma", "no_tumour"], tmp_path / "ex", n_slices=3)
    assert len(table) == 6
    loaded = load_slice_folder(tmp_path / "ex", patient_pattern=r"^(sub-\d+)_")
    assert sorted(loaded.patient_id.unique()) == ["sub-01", "sub-02"]
    images = load_slice_images(loaded.path.tolist(), size=(16, 20), progress=False)
    assert images.shape == (6, 16, 20)
    assert abs(images.mean()) < 1e-4
