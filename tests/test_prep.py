"""Pre-processing: input validation, steps, batch bookkeeping, CLI (fast), and one real end-to-end run (slow)."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from nbutils import anatomy
from nbutils.datasets import load_bids
from nbutils.parallel import open_executor
from nbutils.prep import PrepConfig, PrepError, pipeline, qc, run_prep, steps
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


def _ellipsoid(shape, shift=(0.0, 0.0, 0.0), scale=0.32):
    idx = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2 + np.array(shift)
    radius = scale * np.array(shape)
    return sum(((idx[k] - centre[k]) / radius[k]) ** 2 for k in range(3)) <= 1


def _head(rng, shape=(7, 8, 9), shift=(0.0, 0.0, 0.0), scale=0.32):
    """A bright ellipsoid 'brain' on a dark background, inside the field of view unless shifted."""
    inside = _ellipsoid(shape, shift, scale)
    return (np.where(inside, 1.0, 0.1) + rng.normal(0, 0.02, shape)).astype(np.float32)


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
    """Stand-in for N4/deepbet/ANTs: same outputs, computed in milliseconds.

    The brain mask is the bright part of the image; the "template correlation" is that of
    the image with a centred ellipsoid of the same shape."""
    grid = anatomy.standard_grid(8.0)
    xfm = workdir / "reg_0GenericAffine.mat"
    xfm.write_bytes(b"fake affine")
    reg = steps.Registration([str(xfm)], [str(xfm)], [True], 2.0, 0.9)
    ras = steps.reorient_to_ras(img)
    native_mask = nib.Nifti1Image((ras.get_fdata() > 0.5).astype(np.uint8), ras.affine)
    images = {"preproc": grid.image(np.ones(grid.shape, np.float32)), "mask": grid.image(np.ones(grid.shape, np.uint8)),
              "native_mask": native_mask, "ras": ras, "registration": reg}  # fmt: skip
    corr = float(np.corrcoef(ras.get_fdata().ravel(), _ellipsoid(ras.shape).ravel())[0, 1])
    metrics = {
        "mask_method": "fake",
        "brain_volume_cm3": 1.0,
        "template_corr": corr,
        "mask_template_dice": 1.0,
    }
    return images, {"reorient": 0.0, "n4": 0.01}, metrics


@pytest.fixture
def mixed_bids(tmp_path, bad_corpus):
    """A BIDS tree with two good scans and the bad corpus as further subjects."""
    rng = np.random.default_rng(6)
    root = tmp_path / "bids"
    _save(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz", _head(rng, (7, 8, 9)))
    _save(root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.nii.gz", _head(rng, (9, 8, 7)))
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


# ----------------------------------------------------------------------------- input QC
@pytest.fixture
def qc_bids(tmp_path):
    """Five good heads of unequal shapes, and one each: 8 mm voxels, 2 mm slices, brain cut by the
    field of view, a brain unlike the template (correlation outlier)."""
    rng = np.random.default_rng(8)
    root = tmp_path / "qc-bids"
    shapes = [(7, 8, 9), (9, 8, 7), (8, 9, 7), (8, 8, 9), (9, 9, 8)]
    scans = {f"sub-g{i}": (_head(rng, shape), None) for i, shape in enumerate(shapes)}
    scans["sub-coarse"] = (_head(rng), (8.0, 8.0, 8.0))
    scans["sub-thick"] = (_head(rng, (7, 9, 8)), (1.0, 1.0, 2.0))
    scans["sub-cropped"] = (_head(rng, shift=(2.5, 0.0, 0.0)), None)
    scans["sub-outlier"] = (_head(rng, (8, 9, 8), scale=0.18), None)
    for sid, (data, zooms) in scans.items():
        affine = np.diag([*(zooms or (1.0, 1.0, 1.0)), 1.0])
        _save(root / sid / "anat" / f"{sid}_T1w.nii.gz", data, affine, zooms)
    (root / "participants.tsv").write_text("participant_id\n" + "".join(f"{s}\n" for s in scans))
    return root


def test_fov_contact_measures_the_cut_share_of_the_brain_surface():
    m = _ellipsoid((20, 22, 24))
    assert qc.fov_contact(m) == 0.0 and qc.fov_contact(np.zeros((7, 8, 9))) == 0.0
    cut_little, cut_much = qc.fov_contact(m[:, :, :-4]), qc.fov_contact(m[:, :, :-9])
    assert 0 < cut_little < cut_much
    assert qc.fov_contact(np.ones((7, 8, 9))) == 1.0  # every surface voxel on the boundary


def test_input_qc_rejects_and_warns_with_reasons(qc_bids, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(pipeline, "preprocess_image", lambda *a: calls.append(1) or _fake_preprocess(*a))
    parser = argparse.ArgumentParser(prog="nbutils")
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "o"
    args = parser.parse_args(["prep", "--bids", str(qc_bids), "--out", str(out), "--resolution", "8",
                              "--no-progress"])  # fmt: skip
    code = args.func(args)
    stdout, stderr = capsys.readouterr()
    prep = pd.read_csv(out / "prep.tsv", sep="\t").set_index("scan_id")
    good = [f"sub-g{i}" for i in range(5)]
    assert (prep.loc[good, "status"] == "done").all() and (prep.loc[good, "qc"] == "pass").all()
    assert prep.loc[good, "qc_reasons"].isna().all()  # empty text reads back as NaN
    # strict: 8 mm voxels rejected before any processing; the brain cut by the field of view
    coarse, cropped = prep.loc["sub-coarse"], prep.loc["sub-cropped"]
    assert coarse["status"] == "rejected" and coarse["qc"] == "fail"
    assert "voxel edge 8 mm > 3 mm limit" in coarse["error"] and "sub-coarse_T1w.nii.gz" in coarse["error"]
    assert len(calls) == 8 and not (out / "sub-coarse").exists()
    assert cropped["status"] == "rejected" and cropped["fov_contact"] > qc.FOV_FAIL_SHARE
    assert "brain cut by the field of view" in cropped["qc_reasons"] and "QC:" in cropped["error"]
    # doubtful: kept, with the reason
    thick, outlier = prep.loc["sub-thick"], prep.loc["sub-outlier"]
    assert thick["status"] == "done" and thick["qc"] == "warn" and "voxel edge 2 mm > 1.5 mm" in thick["qc_reasons"]
    assert outlier["status"] == "done" and outlier["qc"] == "warn"
    assert "template correlation" in outlier["qc_reasons"] and "below the batch" in outlier["qc_reasons"]
    assert outlier["template_corr"] < prep.loc[good, "template_corr"].min()
    # the summary says so: warnings on stdout, rejections (exit 1) on stderr
    assert code == 1 and "7/9 scans done (0 reused, 2 with QC warnings)" in stdout
    assert "QC warning sub-outlier: template correlation" in stdout and "QC warning sub-thick" in stdout
    assert "2 scan(s) REJECTED by input QC" in stderr and "sub-cropped:" in stderr and "sub-coarse:" in stderr

    again = run_prep(load_bids(qc_bids), out, PrepConfig(resolution=8.0), progress=False)
    assert len(calls) == 8  # reused scans keep their QC measurements and decisions
    cols = ["status", "qc", "qc_reasons", "error"]
    pd.testing.assert_frame_equal(again.set_index("scan_id")[cols].fillna(""), prep[cols].fillna(""))


def test_batch_correlation_rule_needs_a_batch_and_has_a_floor():
    base = {"status": "done", "path": "x", "error": "", "voxel_max_mm": 1.0, "fov_contact": 0.0}
    rows = [dict(base, template_corr=c) for c in (0.95, 0.951, 0.949, 0.95, 0.952, 0.93)]
    assert (qc.assess(pd.DataFrame(rows))["qc"] == "pass").all()  # 0.02 below: within the MAD floor
    rows[-1]["template_corr"] = 0.5
    assert qc.assess(pd.DataFrame(rows))["qc"].tolist() == ["pass"] * 5 + ["warn"]
    assert (qc.assess(pd.DataFrame(rows[2:]))["qc"] == "pass").all()  # 4 scans: no batch judgement
    failed = qc.assess(pd.DataFrame([dict(base, status="failed", voxel_max_mm=9.0, template_corr=np.nan)]))
    assert failed.loc[0, "status"] == "failed" and failed.loc[0, "qc"] == ""  # processing errors keep theirs


# ----------------------------------------------------------------------------- beyond one machine
def _use_fake_preprocess():
    """Run on each Dask worker process: the same millisecond stand-in as in this process."""
    pipeline.preprocess_image = _fake_preprocess
    return True


def _comparable(out):
    """prep.tsv without timings, with output paths relative to ``out``; and every output image's data."""
    prep = pd.read_csv(out / "prep.tsv", sep="\t")
    prep = prep.drop(columns=[c for c in prep if c.startswith("seconds_")])
    for col in [c for c in prep if c.endswith("_path")]:
        prep[col] = prep[col].str.replace(str(out), "<out>", regex=False)
    images = {str(p.relative_to(out)): (nib.load(p).get_fdata(), nib.load(p).affine) for p in out.rglob("*.nii.gz")}
    others = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.suffix == ".mat"}
    others.update({str(p.relative_to(out)): plt.imread(p) for p in out.rglob("*.png")})
    return prep, images, others


@pytest.mark.timeout(600)
def test_prep_on_a_two_worker_dask_cluster_equals_jobs_1(qc_bids, mixed_bids, tmp_path, monkeypatch):
    import cloudpickle
    from distributed import default_client

    monkeypatch.setattr(pipeline, "preprocess_image", _fake_preprocess)
    monkeypatch.setitem(plt.rcParams, "font.size", 20)  # a caller's style must not change the QC figures
    monkeypatch.setitem(plt.rcParams, "figure.facecolor", "yellow")
    with pytest.warns(UserWarning):
        table = pd.concat([load_bids(qc_bids), load_bids(mixed_bids[0])], ignore_index=True)
    config = PrepConfig(resolution=8.0)
    run_prep(table, tmp_path / "jobs1", config, progress=False)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stand-in travels by value
    try:
        with open_executor(cluster="local", workers=2) as executor:  # what --cluster local --workers 2 runs on
            client = default_client()
            assert all(client.run(_use_fake_preprocess).values()) and list(client.nthreads().values()) == [1, 1]
            prep = run_prep(table, tmp_path / "dask", config, progress=False, executor=executor)
            workers = set(client.run(lambda: os.getpid()).values())
            dask = _comparable(tmp_path / "dask")
            again = run_prep(table, tmp_path / "dask", config, progress=False, executor=executor)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert os.getpid() not in workers  # the scans ran in the worker processes
    ref = _comparable(tmp_path / "jobs1")
    pd.testing.assert_frame_equal(dask[0], ref[0])  # same rows, statuses, errors, QC, in table order
    assert set(prep["status"]) == {"done", "failed", "rejected"} and (prep["qc"] == "warn").sum() == 2
    assert dask[1].keys() == ref[1].keys() and dask[2].keys() == ref[2].keys()
    for name, value in ref[2].items():
        if name.endswith(".mat"):
            assert dask[2][name] == value
        else:  # QC figures: the same picture (drawn in matplotlib's default style in every process);
            assert dask[2][name].shape == value.shape
            # text anti-aliasing may differ between processes (font state); the picture may not
            assert np.abs(dask[2][name] - value).mean() < 0.01
    for name, (data, affine) in ref[1].items():
        np.testing.assert_array_equal(dask[1][name][0], data)
        np.testing.assert_array_equal(dask[1][name][1], affine)
    assert again.loc[again["status"] == "done", "reused"].all()  # reuse by hash works from the workers' sidecars


def test_cluster_options_are_checked(mixed_bids, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="nbutils")
    register(parser.add_subparsers(dest="command"))
    base = ["prep", "--bids", str(mixed_bids[0]), "--out", str(tmp_path / "o"), "--no-progress"]
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--scheduler", "tcp://x:8786", "--cluster", "local"])
    args = parser.parse_args([*base, "--cluster", "local", "--jobs", "2"])
    with pytest.warns(UserWarning):
        assert args.func(args) == 2
    assert "jobs is for the local process pool" in capsys.readouterr().err
    with pytest.raises(ValueError, match="workers must be >= 1"):
        with open_executor(cluster="local", workers=0):
            pass


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
