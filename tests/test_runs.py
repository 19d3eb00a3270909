"""What a notebook run opens: its dataset (one wording of the data source) and its model."""

from types import SimpleNamespace

import pytest

from nbutils.runs import (
    cohort_label,
    extend_dataset,
    model_folder,
    open_dataset,
    open_normative_model,
    open_prep_dataset,
    prep_label,
)


def params(tmp_path, **kw):
    base = dict(data_dir=str(tmp_path), profile="tiny", cohort_seed=3, n_healthy=2, n_mci=0, n_ad=1,
                n_tumour=0, resolution=4.0, n_native_healthy=1, n_native_tumour=0)
    return SimpleNamespace(**{**base, **kw})


def test_one_wording_of_the_data_source():
    assert cohort_label("quick", 0, "mni", 2.0) == (
        "synthetic cohort (quick profile, cohort_seed 0, MNI space, 2 mm grid)")
    assert cohort_label("full", 1, "native") == "synthetic cohort (full profile, cohort_seed 1, native whole-head scans)"


def test_a_notebook_without_cohort_sizes_needs_notebook_00_first(tmp_path):
    later = SimpleNamespace(data_dir=str(tmp_path), profile="tiny", cohort_seed=3)
    with pytest.raises(FileNotFoundError, match=r"run notebook 00 with profile 'tiny'"):
        open_dataset(later)


@pytest.mark.slow
def test_notebook_00_generates_once_and_the_others_open_it(tmp_path):
    p = params(tmp_path)
    first = open_dataset(p)
    assert first.root == tmp_path / "synthetic" / "tiny-mni"
    assert sorted(first.table["diagnosis"]) == ["AD", "CN", "CN"]
    assert first.source == cohort_label("tiny", 3, "mni", 4.0) and first.resolution == 4.0
    stamp = (first.root / "participants.tsv").stat().st_mtime_ns
    later = SimpleNamespace(data_dir=str(tmp_path), profile="tiny", cohort_seed=3)
    again = open_dataset(later)
    assert (again.root / "participants.tsv").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert again.table.equals(first.table) and again.resolution == 4.0
    with pytest.raises(ValueError, match="cohort_seed 3"):
        open_dataset(SimpleNamespace(data_dir=str(tmp_path), profile="tiny", cohort_seed=4))


def test_missing_model_names_the_notebook_and_profile(tmp_path):
    p = params(tmp_path)
    assert model_folder(p) == tmp_path / "models" / "tiny" / "normative_ae"
    with pytest.raises(FileNotFoundError, match=r"run notebook 02 with profile 'tiny'"):
        open_normative_model(p)


def _prep_folder(tmp_path, participants: bool = True):
    """A folder shaped like `nbutils prep` output: prep.tsv, two done scans and one failed, 6x7x8 grid."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    out = tmp_path / "my-prep"
    rows = []
    for k, pid in enumerate(["sub-01", "sub-02", "sub-03"]):
        img = out / pid / "anat" / f"{pid}_space-MNI152_res-3_desc-preproc_T1w.nii.gz"
        img.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.full((6, 7, 8), k, np.float32), np.diag([3.0, 3.0, 3.0, 1.0])), img)
        rows.append({"participant_id": pid, "session": "", "scan_id": pid, "path": f"/raw/{pid}_T1w.nii.gz",
                     "dataset": "mine", "status": "failed" if k == 2 else "done", "error": "",
                     "preproc_path": str(img), "xfm_path": ""})
    pd.DataFrame(rows).to_csv(out / "prep.tsv", sep="\t", index=False)
    if participants:
        (out / "participants.tsv").write_text("participant_id\tage\tsex\tsite\tdiagnosis\n"
                                              "sub-01\t30\tF\tA\tCN\n02\t41\tm\tB\tglioma\n")
    return out


def test_a_prep_folder_is_a_dataset_named_in_one_wording(tmp_path):
    folder = _prep_folder(tmp_path)
    with pytest.warns(UserWarning, match="1 scan\\(s\\) failed preprocessing"):
        data = open_dataset(params(tmp_path, dataset=str(folder)))
    assert data.kind == "prep" and data.root == folder.resolve() and data.resolution == 3.0
    assert data.source == prep_label(folder, 2) == "preprocessed dataset my-prep (2 scans, prep.tsv)"
    assert list(data.table["participant_id"]) == ["sub-01", "sub-02"]
    assert list(data.table["diagnosis"]) == ["CN", "glioma"] and list(data.table["sex"]) == ["F", "M"]
    assert data.table["path"].iloc[1].endswith("sub-02_space-MNI152_res-3_desc-preproc_T1w.nii.gz")
    assert data.table["raw_path"].iloc[0] == "/raw/sub-01_T1w.nii.gz"
    assert not data.has_truth
    masks, why = data.lesion_masks(["sub-02"])
    assert masks is None and "no lesion ground truth" in why and "sub-02" in why


def test_a_prep_folder_without_demographics_or_prep_tsv_says_what_to_write(tmp_path):
    with pytest.raises(FileNotFoundError, match="nbutils prep --out"):
        open_prep_dataset(tmp_path)
    folder = _prep_folder(tmp_path, participants=False)
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match="participants.tsv with participant_id"):
        open_prep_dataset(folder)
    (folder / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t30\tF\n")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"lacks column\(s\) \['site', 'diagnosis'\]"):
        open_prep_dataset(folder)


def test_brats_seg_labels_become_lesion_masks_on_the_model_grid(tmp_path):
    """A prep folder from BraTS: seg labels (1, 2, 4) follow the scan's saved transform onto the grid."""
    import ants
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from nbutils.anatomy import standard_grid

    folder = _prep_folder(tmp_path)
    grid = standard_grid(8.0)
    seg = np.zeros(grid.shape, np.uint8)
    seg[10:14, 12:15, 9:12], seg[14:16, 12:15, 9:12] = 2, 4  # oedema + enhancing core
    native = grid.image(seg)
    flipped = nib.Nifti1Image(seg[::-1].copy(), native.affine @ np.array(  # stored in LAS voxel order
        [[-1, 0, 0, grid.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    nib.save(flipped, tmp_path / "case_seg.nii.gz")
    xfm = tmp_path / "sub-02_from-T1w_to-MNI152_mode-image_xfm.mat"
    ants.write_transform(ants.create_ants_transform(transform_type="AffineTransform", dimension=3), str(xfm))
    prep = pd.read_csv(folder / "prep.tsv", sep="\t")
    prep["xfm_path"] = str(xfm)
    prep.to_csv(folder / "prep.tsv", sep="\t", index=False)
    demo = pd.read_csv(folder / "participants.tsv", sep="\t")
    demo["seg_path"] = ["", str(tmp_path / "case_seg.nii.gz")]
    demo.to_csv(folder / "participants.tsv", sep="\t", index=False)
    with pytest.warns(UserWarning):
        data = open_prep_dataset(folder)
    data = type(data)(data.root, data.table, data.source, 8.0, data.kind)  # the model grid of this test
    assert data.has_truth
    masks, why = data.lesion_masks(["sub-02"])
    assert "BraTS seg" in why and masks.shape == (1, *grid.shape)
    np.testing.assert_array_equal(masks[0], seg > 0)
    none, why = data.lesion_masks(["sub-01", "sub-02"])
    assert none is None and "1 of 2" in why


@pytest.mark.slow
def test_extension_adds_the_missing_subjects_with_new_ids_and_is_cached(tmp_path):
    base = open_dataset(params(tmp_path, n_tumour=3))  # 2 CN, 1 AD, one of each tumour class
    p = SimpleNamespace(data_dir=str(tmp_path), profile="tiny", cohort_seed=3)
    more = extend_dataset(p, base, {"CN": 3, "glioma": 2, "pituitary": 1})
    counts = more.table.groupby("diagnosis")["participant_id"].nunique()
    assert counts["CN"] == 3 and counts["glioma"] == 2 and counts["pituitary"] >= 1
    assert more.table["participant_id"].is_unique  # new ids after the cohort's last
    assert sorted(more.table["participant_id"])[:6] == sorted(base.table["participant_id"])
    ext_root = tmp_path / "synthetic" / "tiny-mni-extra"
    assert set(more.table.loc[~more.table["participant_id"].isin(base.table["participant_id"]), "root"]) == {
        str(ext_root)}
    assert more.extension["args"]["first_index"] == 6 and more.extension["n_subjects"] == 4  # 1 CN + 3 tumours
    assert "extended by 4 generated subjects" in more.source
    stamp = (ext_root / "participants.tsv").stat().st_mtime_ns
    again = extend_dataset(p, base, {"CN": 3, "glioma": 2, "pituitary": 1})
    assert (ext_root / "participants.tsv").stat().st_mtime_ns == stamp and again.table.equals(more.table)
    assert extend_dataset(p, base, {"CN": 2}).extension is None  # nothing missing, nothing generated
    with pytest.raises(ValueError, match="cannot generate diagnoses"):
        extend_dataset(p, base, {"stroke": 1})
