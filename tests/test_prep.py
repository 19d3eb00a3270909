"""Pre-processing: input validation, steps, batch bookkeeping, CLI (fast), and one real end-to-end run (slow)."""

from __future__ import annotations

import argparse
import gzip
import hashlib

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from nbutils import anatomy
from nbutils.datasets import load_bids
from nbutils.prep import PrepConfig, PrepError, pipeline, run_prep, steps
from nbutils.prep.cli import register
from nbutils.prep.evaluate import dice


def _save(path, data, affine=None, zooms=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    if zooms is not None:
        img.header.set_zooms(zooms)
    nib.save(img, path)
    return path


def _good(rng, shape=(7, 8, 9)):
    return rng.random(shape).astype(np.float32) + 0.1


@pytest.fixture
def bad_corpus(tmp_path):
    """Each broken file and the phrase its error must contain."""
    rng = np.random.default_rng(0)
    d = tmp_path / "bad"
    good = _save(d / "good.nii.gz", _good(rng))
    trunc = d / "truncated.nii.gz"
    trunc.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    nan = _good(rng)
    nan[1, 2, 3] = np.nan
    zero_vox = _save(d / "zerovox.nii", _good(rng))
    raw = bytearray(zero_vox.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])))
    hdr["pixdim"][2] = 0.0  # zero voxel size along y, written straight into the header
    raw[:348] = hdr.binaryblock
    zero_vox.write_bytes(bytes(raw))
    (d / "notnifti.nii.gz").write_bytes(gzip.compress(b"this is not an image"))
    (d / "text.txt").write_text("hello")
    return {
        trunc: "truncated or corrupt",
        _save(
            d / "four_d.nii.gz", rng.random((7, 8, 9, 3)).astype(np.float32)
        ): "expected a 3D image",
        _save(d / "nan.nii.gz", nan): "non-finite",
        _save(d / "zeros.nii.gz", np.zeros((7, 8, 9), np.float32)): "constant image",
        _save(d / "flat2d.nii.gz", rng.random((7, 8)).astype(np.float32)): "expected a 3D image",
        _save(d / "slice.nii.gz", rng.random((7, 8, 1)).astype(np.float32)): "single slice",
        d / "notnifti.nii.gz": "not a readable NIfTI",
        d / "text.txt": "not a readable NIfTI",
        zero_vox: "invalid voxel size",
        d / "missing.nii.gz": "file not found",
    }


def test_load_and_validate_rejects_bad_files(bad_corpus, tmp_path):
    for path, phrase in bad_corpus.items():
        with pytest.raises(PrepError, match=phrase) as err:
            steps.load_and_validate(path)
        assert str(path) in str(err.value), f"error for {path.name} does not name the file"
    img = steps.load_and_validate(tmp_path / "bad" / "good.nii.gz")
    assert img.shape == (7, 8, 9) and img.get_data_dtype() == np.float32


def test_load_and_validate_accepts_single_volume_4d(tmp_path):
    rng = np.random.default_rng(1)
    path = _save(tmp_path / "one.nii.gz", rng.random((7, 8, 9, 1)).astype(np.float32))
    assert steps.load_and_validate(path).shape == (7, 8, 9)
    path = _save(tmp_path / "huge.nii.gz", _good(rng), zooms=(1.0, 1.0, 12.0))
    with pytest.raises(PrepError, match="implausible voxel size"):
        steps.load_and_validate(path)


def test_reorient_to_ras_keeps_world_positions():
    rng = np.random.default_rng(2)
    data = rng.random((7, 8, 9)).astype(np.float32)
    affine = np.array([[0, 0, -1.2, 50], [-1, 0, 0, 20], [0, 1, 0, -30], [0, 0, 0, 1.0]])
    ras = steps.reorient_to_ras(nib.Nifti1Image(data, affine))
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    ijk = np.array([3, 4, 5])
    world = affine[:3, :3] @ ijk + affine[:3, 3]
    ras_ijk = np.rint(np.linalg.solve(ras.affine[:3, :3], world - ras.affine[:3, 3])).astype(int)
    assert ras.get_fdata()[tuple(ras_ijk)] == pytest.approx(data[tuple(ijk)])


def test_ants_bridge_round_trip():
    rng = np.random.default_rng(3)
    affine = np.array([[0.9, 0.1, 0, -40], [-0.1, 0.9, 0, 12], [0, 0, 1.5, 3], [0, 0, 0, 1.0]])
    img = nib.Nifti1Image(rng.random((7, 8, 9)).astype(np.float32), affine)
    back = steps.from_ants(steps.to_ants(img))
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_allclose(back.get_fdata(), img.get_fdata(), atol=1e-6)


@pytest.mark.parametrize("method", ["zscore", "whitestripe", "histogram"])
def test_standardise_intensity(method):
    rng = np.random.default_rng(4)
    data = np.concatenate([rng.normal(100, 10, 400), rng.normal(300, 5, 600)]).reshape(10, 10, 10)
    mask = np.ones((10, 10, 10), np.uint8)
    mask[0] = 0
    img = nib.Nifti1Image((3 * data + 7).astype(np.float32), np.eye(4))
    a = steps.standardise_intensity(img, nib.Nifti1Image(mask, np.eye(4)), method).get_fdata()
    b = steps.standardise_intensity(nib.Nifti1Image(data.astype(np.float32), np.eye(4)),
                                    nib.Nifti1Image(mask, np.eye(4)), method).get_fdata()  # fmt: skip
    np.testing.assert_allclose(a, b, atol=1e-3)  # invariant to a linear intensity change
    assert (a[0] == 0).all()
    if method == "zscore":
        assert a[mask > 0].mean() == pytest.approx(0, abs=1e-5) and a[
            mask > 0
        ].std() == pytest.approx(1, rel=1e-4)
    if method == "whitestripe":  # white matter (bright mode) centred on 0
        assert abs(np.median(a[(data > 250) & (mask > 0)])) < 0.5
    with pytest.raises(ValueError, match="unknown intensity method"):
        steps.standardise_intensity(img, nib.Nifti1Image(mask, np.eye(4)), "minmax")


def test_dice():
    a = np.zeros((7, 8, 9), bool)
    a[2:5] = True
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and dice(a & False, a & False) == 1.0


def test_config_validates_and_hash_changes(tmp_path):
    with pytest.raises(ValueError, match="reg must be one of"):
        PrepConfig(reg="bspline")
    f = _save(tmp_path / "x.nii.gz", _good(np.random.default_rng(5)))
    assert pipeline._input_hash(f, PrepConfig()) == pipeline._input_hash(f, PrepConfig())
    assert pipeline._input_hash(f, PrepConfig()) != pipeline._input_hash(f, PrepConfig(reg="syn"))


# ----------------------------------------------------------------------------- batch (fake heavy steps)
def _fake_preprocess(img, config, workdir):
    """Stand-in for N4/deepbet/ANTs: same outputs, computed in milliseconds."""
    grid = anatomy.standard_grid(8.0)
    xfm = workdir / "reg_0GenericAffine.mat"
    xfm.write_bytes(b"fake affine")
    reg = steps.Registration([str(xfm)], [str(xfm)], [True], 2.0, 0.9)
    ras = steps.reorient_to_ras(img)
    native_mask = nib.Nifti1Image((ras.get_fdata() > 0.5).astype(np.uint8), ras.affine)
    images = {"preproc": grid.image(np.ones(grid.shape, np.float32)), "mask": grid.image(np.ones(grid.shape, np.uint8)),
              "native_mask": native_mask, "ras": ras, "registration": reg}  # fmt: skip
    metrics = {
        "mask_method": "fake",
        "brain_volume_cm3": 1.0,
        "template_corr": 0.9,
        "mask_template_dice": 1.0,
    }
    return images, {"reorient": 0.0, "n4": 0.01}, metrics


@pytest.fixture
def mixed_bids(tmp_path, bad_corpus):
    """A BIDS tree with two good scans and the bad corpus as further subjects."""
    rng = np.random.default_rng(6)
    root = tmp_path / "bids"
    _save(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz", _good(rng, (7, 8, 9)))
    _save(root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.nii.gz", _good(rng, (9, 8, 7)))
    bad = {}
    for i, (src, phrase) in enumerate(
        p for p in bad_corpus.items() if p[0].suffix == ".gz" and p[0].exists()
    ):
        dst = root / f"sub-b{i}" / "anat" / f"sub-b{i}_T1w.nii.gz"
        dst.parent.mkdir(parents=True)
        dst.write_bytes(src.read_bytes())
        bad[f"sub-b{i}"] = phrase
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t40\n")
    return root, bad


def _digests(root):
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_run_prep_batch_failures_reuse_and_raw_untouched(mixed_bids, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "preprocess_image", _fake_preprocess)
    root, bad = mixed_bids
    before = _digests(root)
    with pytest.warns(UserWarning):
        table = load_bids(root)
    out = tmp_path / "derivatives" / "nbutils-prep"
    prep = run_prep(table, out, PrepConfig(resolution=8.0), progress=False)
    assert _digests(root) == before  # raw inputs byte-identical
    by = prep.set_index("scan_id")
    assert by.loc["sub-01", "status"] == "done" and by.loc["sub-02_ses-1", "status"] == "done"
    for sid, phrase in bad.items():
        assert by.loc[sid, "status"] == "failed"
        assert phrase in by.loc[sid, "error"] and f"{sid}_T1w.nii.gz" in by.loc[sid, "error"]
    res = "res-8"
    assert (
        out
        / "sub-02"
        / "ses-1"
        / "anat"
        / f"sub-02_ses-1_space-MNI152_{res}_desc-preproc_T1w.nii.gz"
    ).is_file()
    assert (
        out / "sub-01" / "anat" / "sub-01_from-T1w_to-MNI152_mode-image_xfm.mat"
    ).read_bytes() == b"fake affine"
    assert (out / "sub-01" / "anat" / "sub-01_desc-qc.png").stat().st_size > 1000
    written = pd.read_csv(out / "prep.tsv", sep="\t")
    assert len(written) == len(table) and {
        "seconds_n4",
        "brain_volume_cm3",
        "template_corr",
    } <= set(written.columns)
    assert not list(out.rglob("*.tmp*"))  # atomic writes left no temporaries

    calls = []
    monkeypatch.setattr(
        pipeline, "preprocess_image", lambda *a: calls.append(1) or _fake_preprocess(*a)
    )
    again = run_prep(table, out, PrepConfig(resolution=8.0), progress=False)
    assert (
        calls == [] and again.set_index("scan_id").loc["sub-01", "reused"]
    )  # same parameters: skipped
    run_prep(table, out, PrepConfig(resolution=8.0, intensity="histogram"), progress=False)
    assert len(calls) == 2  # parameters changed: both good scans redone
    assert _digests(root) == before


def test_cli_exits_nonzero_naming_failures(mixed_bids, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "preprocess_image", _fake_preprocess)
    root, bad = mixed_bids
    parser = argparse.ArgumentParser(prog="nbutils")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prep", "--bids", str(root), "--out", str(tmp_path / "o"), "--resolution", "8",
                              "--no-progress"])  # fmt: skip
    with pytest.warns(UserWarning):
        code = args.func(args)
    err = capsys.readouterr().err
    assert code == 1 and all(sid in err for sid in bad)
    with pytest.raises(SystemExit):
        parser.parse_args(["prep", "--bids", "a", "--ixi", "b", "--out", "c"])


# ----------------------------------------------------------------------------- real end to end
def _fake_head(rng):
    """A 2 mm whole head from the MNI template: brain + CSF + dark skull + bright scalp, rotated and shifted."""
    grid = anatomy.standard_grid(2.0)
    brain = anatomy.load_template(grid).get_fdata()
    mask = anatomy.load_brain_mask(grid).get_fdata() > 0
    pad = 8
    brain, mask = np.pad(brain, pad), np.pad(mask, pad)
    dist = ndimage.distance_transform_edt(~mask, sampling=2.0)
    head = brain * mask
    head[(dist > 0) & (dist <= 3)] = 0.08
    head[(dist > 3) & (dist <= 8)] = 0.03
    head[(dist > 8) & (dist <= 14)] = 0.75
    x = np.linspace(-1, 1, head.shape[0])[:, None, None]
    head = head * np.exp(0.2 * x) + rng.normal(0, 0.01, head.shape)
    affine = grid.affine.copy()
    affine[:3, 3] -= pad * 2.0
    a = np.deg2rad(12)
    rot = np.array(
        [[1, 0, 0, 4], [0, np.cos(a), -np.sin(a), -8], [0, np.sin(a), np.cos(a), 10], [0, 0, 0, 1]]
    )
    return nib.Nifti1Image(np.clip(head, 0, None).astype(np.float32), rot @ affine), mask, rot


@pytest.mark.slow
def test_pipeline_end_to_end_on_a_small_head(tmp_path):
    rng = np.random.default_rng(7)
    head, true_mask, rot = _fake_head(rng)
    path = tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(head.as_reoriented([[1, -1], [0, 1], [2, 1]]), path)  # stored A-L-S
    img = steps.load_and_validate(path)
    with steps.private_tmpdir() as tmp:
        images, seconds, metrics = pipeline.preprocess_image(img, PrepConfig(), tmp)
        assert metrics["mask_method"] == "deepbet"
        est = np.asarray(images["native_mask"].dataobj) > 0
        truth = (
            np.asarray(
                steps.reorient_to_ras(
                    nib.Nifti1Image(true_mask.astype(np.uint8), head.affine)
                ).dataobj
            )
            > 0
        )
        assert dice(est, truth) > 0.9
        # registration recovers the pose: estimated native position of MNI brain voxels vs the true rotation
        grid = anatomy.standard_grid(2.0)
        coords = images["registration"].native_coordinates(images["ras"], 2.0)
        brain = anatomy.load_brain_mask(grid).get_fdata() > 0
        true = nib.affines.apply_affine(rot, grid.world_coords(np.argwhere(brain)))
        err = np.linalg.norm(coords[brain] - true, axis=1)
        assert np.nanmean(err) < 3.0
        assert metrics["template_corr"] > 0.8
    pre = images["preproc"].get_fdata()
    m = np.asarray(images["mask"].dataobj) > 0
    assert pre.shape == anatomy.standard_grid(2.0).shape and abs(pre[m].mean()) < 0.1
    assert set(seconds) >= {"n4", "brain", "register", "resample"}


def test_accuracy_summary_times_only_the_scans_this_run_processed():
    from nbutils.prep.evaluate import accuracy_summary

    prep = pd.DataFrame({
        "status": ["done", "done", "failed", "done"], "reused": [False, True, False, False],
        "seconds_total": [10.0, 99.0, 1.0, 20.0], "seconds_register": [4.0, 8.0, np.nan, 6.0],
    })  # fmt: skip
    acc = pd.DataFrame({"mask_dice": [0.9, 1.0, 0.95], "reg_error_mm": [1.0, 2.0, 3.0],
                        "reg_error_p95_mm": [2.0, 3.0, 4.0]})  # fmt: skip
    out = accuracy_summary(prep, acc)
    assert out["scans"] == 3 and out["mask_dice"] == pytest.approx(0.95)
    assert out["reg_error_mm"] == pytest.approx(2.0) and out["reg_error_p95_mm"] == pytest.approx(3.0)
    assert out["seconds_per_scan"] == pytest.approx(15.0)  # the reused scan's old timing is left out
    assert out["seconds_register"] == pytest.approx(6.0)  # every done scan; the failed one has none
    reused = accuracy_summary(prep.assign(reused=True), acc)
    assert reused["seconds_per_scan"] == pytest.approx(43.0)  # all reused: fall back to their timings
