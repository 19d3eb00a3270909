"""Dataset loaders on tiny fake trees in the IXI, BIDS and BraTS layouts."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from nbutils.datasets import COLUMNS, DatasetError, load_bids, load_brats, load_dataset, load_ixi


def _nifti(path, shape=(7, 8, 9), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


# ----------------------------------------------------------------------------- BIDS
@pytest.fixture
def bids_root(tmp_path):
    root = tmp_path / "bids"
    _nifti(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    _nifti(root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.nii.gz")
    _nifti(root / "sub-02" / "ses-2" / "anat" / "sub-02_ses-2_run-1_T1w.nii.gz")
    _nifti(root / "sub-02" / "ses-2" / "anat" / "sub-02_ses-2_T2w.nii.gz")  # other suffix
    _nifti(root / "derivatives" / "x" / "sub-01" / "anat" / "sub-01_T1w.nii.gz")  # not raw
    (root / "participants.tsv").write_text(
        "participant_id\tage\tsex\tsite\tdiagnosis\tmmse\n"
        "sub-01\t71.5\tF\tA\tAD\t22\n"
        "02\t64\tmale\tB\tCN\t30\n"
        "sub-03\t50\tM\tA\tCN\t29\n"
    )
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "toy", "BIDSVersion": "1.8.0"})
    )
    return root


def test_load_bids_table(bids_root):
    table = load_bids(bids_root)
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert table["scan_id"].tolist() == ["sub-01", "sub-02_ses-1", "sub-02_ses-2_run-1"]
    assert table["participant_id"].tolist() == ["sub-01", "sub-02", "sub-02"]
    assert table["session"].isna().tolist() == [True, False, False]
    assert table["session"].iloc[2] == "ses-2"
    assert table["sex"].tolist() == ["F", "M", "M"]
    assert table["age"].tolist() == [71.5, 64.0, 64.0]
    assert table["diagnosis"].tolist() == ["AD", "CN", "CN"]
    assert table["mmse"].tolist() == [22, 30, 30]  # extra column carried, numeric
    assert str(table["run"].iloc[2]) == "1"
    assert (table["dataset"] == "toy").all()
    assert all(p.endswith("_T1w.nii.gz") and "derivatives" not in p for p in table["path"])


def test_load_bids_missing_participant_warns_once(bids_root):
    _nifti(bids_root / "sub-09" / "anat" / "sub-09_T1w.nii.gz")
    with pytest.warns(UserWarning, match="1 subject.*sub-09") as record:
        table = load_bids(bids_root)
    assert len([w for w in record if "demographics" in str(w.message)]) == 1
    row = table.set_index("participant_id").loc["sub-09"]
    assert np.isnan(row["age"]) and pd.isna(row["sex"])


def test_load_bids_without_participants_tsv(bids_root):
    (bids_root / "participants.tsv").unlink()
    with pytest.warns(UserWarning, match="participants.tsv not found"):
        table = load_bids(bids_root)
    assert len(table) == 3 and table["age"].isna().all()


@pytest.mark.parametrize(
    "content, match",
    [
        ("subject\tage\nsub-01\t3\n", "no 'participant_id' column"),
        ("participant_id\tage\nsub-01\t3\nsub-01\t4\n", "repeated"),
    ],
)
def test_load_bids_malformed_participants(bids_root, content, match):
    (bids_root / "participants.tsv").write_text(content)
    with pytest.raises(DatasetError, match=match) as err:
        load_bids(bids_root)
    assert "participants.tsv" in str(err.value)


def test_load_bids_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_bids(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no sub-.*empty"):
        load_bids(tmp_path / "empty")


def test_load_bids_unknown_sex_and_bad_names(bids_root):
    (bids_root / "participants.tsv").write_text("participant_id\tsex\nsub-01\tX\nsub-02\tf\n")
    _nifti(bids_root / "sub-01" / "anat" / "sub-01_acq_T1w.nii.gz")  # malformed entity
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        table = load_bids(bids_root)
    messages = " ".join(str(w.message) for w in record)
    assert "unrecognised sex" in messages and "non-BIDS name" in messages
    assert pd.isna(table["sex"].iloc[0]) and table["sex"].iloc[1] == "F"


# ----------------------------------------------------------------------------- IXI
def _ixi_tree(tmp_path):
    root = tmp_path / "IXI-T1"
    for name in [
        "IXI002-Guys-0828-T1.nii.gz",
        "IXI012-HH-1211-T1.nii.gz",
        "IXI013-HH-1212-T1.nii.gz",
    ]:
        _nifti(root / name)
    _nifti(root / "IXI002-Guys-0828-T2.nii.gz")  # other modality: ignored
    sheet = pd.DataFrame(
        {
            "IXI_ID": [2, 12, 12, 99],
            "SEX_ID (1=m, 2=f)": [2, 1, 1, 1],
            "HEIGHT": [164, 175, 175, 180],
            "WEIGHT": [58, 70, 70, 80],
            "AGE": [35.8, np.nan, 38.8, 40.0],  # IXI012 is duplicated, first row has no age
        }
    )
    return root, sheet


def test_load_ixi_csv_sheet(tmp_path):
    root, sheet = _ixi_tree(tmp_path)
    sheet.to_csv(root / "IXI.csv", index=False)
    with pytest.warns(UserWarning, match="1 subject.*sub-IXI013"):
        table = load_ixi(root)
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert table["participant_id"].tolist() == ["sub-IXI002", "sub-IXI012", "sub-IXI013"]
    assert table["site"].tolist() == ["Guys", "HH", "HH"]
    assert table["sex"].iloc[:2].tolist() == ["F", "M"]
    assert table["age"].iloc[:2].tolist() == [35.8, 38.8]
    assert np.isnan(table["age"].iloc[2]) and pd.isna(table["sex"].iloc[2])
    assert table["height"].iloc[0] == 164 and table["ixi_id"].tolist() == [2, 12, 13]
    assert (table["diagnosis"] == "CN").all() and (table["dataset"] == "IXI").all()


def test_load_ixi_xls_sheet(tmp_path, monkeypatch):
    # No .xls writer is installed; stand in for xlrd and check the .xls path is read with it.
    root, sheet = _ixi_tree(tmp_path)
    (root / "IXI.xls").write_bytes(b"fake")
    seen = []
    monkeypatch.setattr(pd, "read_excel", lambda path: seen.append(path) or sheet.copy())
    with pytest.warns(UserWarning, match="sub-IXI013"):
        table = load_ixi(root)
    assert seen == [root.resolve() / "IXI.xls"]
    assert table["age"].iloc[0] == 35.8 and table["sex"].iloc[0] == "F"


def test_load_ixi_explicit_sheet_and_errors(tmp_path):
    root, sheet = _ixi_tree(tmp_path)
    sheet.to_csv(tmp_path / "demo.tsv", sep="\t", index=False)
    with pytest.warns(UserWarning):
        assert load_ixi(root, demographics=tmp_path / "demo.tsv")["sex"].iloc[0] == "F"
    sheet.drop(columns="AGE").to_csv(tmp_path / "noage.csv", index=False)
    with pytest.raises(DatasetError, match=r"noage.csv.*AGE"):
        load_ixi(root, demographics=tmp_path / "noage.csv")
    (tmp_path / "broken.xls").write_bytes(b"not a spreadsheet")
    with pytest.raises(DatasetError, match="broken.xls"):
        load_ixi(root, demographics=tmp_path / "broken.xls")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_ixi(root, demographics=tmp_path / "missing.csv")
    with pytest.warns(UserWarning, match="no IXI demographics sheet"):
        assert load_ixi(root)["age"].isna().all()
    (tmp_path / "none").mkdir()
    _nifti(tmp_path / "none" / "IXI-bad-T1.nii.gz")
    with pytest.raises(DatasetError, match="no IXI"), pytest.warns(UserWarning, match="skipped"):
        load_ixi(tmp_path / "none")


# ----------------------------------------------------------------------------- BraTS
def _brats_tree(tmp_path):
    root = tmp_path / "brats"
    for case in ["BraTS20_Training_001", "BraTS20_Training_002"]:
        for mod in ["t1", "t1ce", "t2", "flair", "seg"]:
            _nifti(root / case / f"{case}_{mod}.nii.gz")
    case = "BraTS20_Validation_003"  # no segmentation
    for mod in ["t1", "t1ce", "t2", "flair"]:
        _nifti(root / case / f"{case}_{mod}.nii.gz")
    case = "BraTS-GLI-00004-000"  # BraTS 2023 naming
    for mod in ["t1n", "t1c", "t2w", "t2f", "seg"]:
        _nifti(root / case / f"{case}-{mod}.nii.gz")
    pd.DataFrame(
        {"Brats20ID": ["BraTS20_Training_001"], "Age": [60.5], "Survival_days": [289]}
    ).to_csv(root / "survival_info.csv", index=False)
    return root


def test_load_brats_table(tmp_path):
    table = load_brats(_brats_tree(tmp_path))
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert len(table) == 4 and (table["diagnosis"] == "glioma").all()
    by_case = table.set_index("case")
    assert by_case.loc["BraTS20_Training_001", "participant_id"] == "sub-BraTS20Training001"
    assert by_case.loc["BraTS20_Training_001", "age"] == 60.5
    assert by_case.loc["BraTS20_Training_001", "survival_days"] == 289
    assert by_case.loc["BraTS20_Training_002", "seg_path"].endswith("_seg.nii.gz")
    assert pd.isna(by_case.loc["BraTS20_Validation_003", "seg_path"])
    assert by_case.loc["BraTS-GLI-00004-000", "path"].endswith("-t1n.nii.gz")
    assert by_case.loc["BraTS-GLI-00004-000", "t1ce_path"].endswith("-t1c.nii.gz")


def test_load_brats_malformed(tmp_path):
    root = _brats_tree(tmp_path)
    (root / "BraTS20_Training_001" / "BraTS20_Training_001_t1.nii.gz").unlink()
    with pytest.warns(UserWarning, match="without a T1.*BraTS20_Training_001"):
        assert len(load_brats(root)) == 3
    _nifti(root / "BraTS20_Training_002" / "BraTS20_Training_002_t1.nii")
    with pytest.raises(DatasetError, match="BraTS20_Training_002: two t1"):
        load_brats(root)
    (tmp_path / "nothing" / "case").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no BraTS case"):
        load_brats(tmp_path / "nothing")


def test_load_dataset_dispatch(bids_root):
    assert len(load_dataset(bids_root, "bids")) == 3
    with pytest.raises(ValueError, match="unknown dataset kind"):
        load_dataset(bids_root, "adni")
