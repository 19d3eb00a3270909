"""What a notebook run opens: its dataset (one wording of the data source) and its model."""

from types import SimpleNamespace

import pytest

from nbutils.runs import (
    cohort_label,
    extend_dataset,
    model_folder,
    open_dataset,
    open_normative_model,
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
