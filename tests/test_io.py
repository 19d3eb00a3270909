import json
import stat

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from nbutils.io import atomic_path, save_nifti, write_json, write_table


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("finished earlier")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "finished earlier"
    assert list(tmp_path.iterdir()) == [target]


def test_outputs_are_readable_by_others(tmp_path):
    path = write_json(tmp_path / "sub" / "m.json", {"a": np.float32(0.5), "b": np.arange(3)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2]}
    assert path.stat().st_mode & stat.S_IROTH


def test_table_and_nifti_round_trip(tmp_path, rng):
    df = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    write_table(tmp_path / "t.tsv", df)
    assert pd.read_csv(tmp_path / "t.tsv", sep="\t").equals(df)
    data = rng.normal(size=(7, 8, 9)).astype(np.float32)
    save_nifti(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(nib.load(tmp_path / "v.nii.gz").get_fdata(dtype=np.float32), data)
