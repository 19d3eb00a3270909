"""Tests of the drawing functions, the explorer widget and the single-subject report command."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from nbutils.normative.explorer import DeviationExplorer, ExplorerSubject
from nbutils.normative.plots import (
    figure_png,
    overlay_rgba,
    plot_profile,
    render_planes,
    slice_at,
)

SHAPE = (7, 8, 9)


def test_slice_at_orientation():
    vol = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    assert slice_at(vol, "sagittal", 2).shape == (9, 8)  # rows z, columns y
    assert slice_at(vol, "coronal", 3).shape == (9, 7)  # rows z, columns x
    ax = slice_at(vol, "axial", 4)
    assert ax.shape == (8, 7) and ax[1, 2] == vol[2, 1, 4]  # rows y, columns x
    assert np.array_equal(slice_at(vol, "axial", 99), slice_at(vol, "axial", 8))  # clipped
    with pytest.raises(ValueError, match="unknown plane"):
        slice_at(vol, "oblique", 0)


def test_overlay_masks_below_threshold():
    z = np.array([[0.5, 2.5], [-3.0, -1.0]])
    rgba = overlay_rgba(z, threshold=2.0, opacity=0.6)
    assert rgba.shape == (2, 2, 4)
    np.testing.assert_allclose(rgba[..., 3], [[0, 0.6], [0.6, 0]])
    assert rgba[0, 1, 0] == 1.0 and rgba[0, 1, 2] == 0  # positive: red
    assert rgba[1, 0, 2] == 1.0 and rgba[1, 0, 0] == 0  # negative: blue
    assert overlay_rgba(z, threshold=5.0)[..., 3].sum() == 0
    with pytest.raises(ValueError, match="opacity"):
        overlay_rgba(z, opacity=1.5)


def _profile():
    return pd.DataFrame({"name": ["A", "B", "C"], "hemisphere": ["L", "R", "L"],
                         "profile": [0.5, -3.0, 2.2], "centile": [69.0, 0.1, 98.6],
                         "mean_z": [0.1, -1.0, 0.8], "p95_abs_z": [1.0, 3.0, 2.5]})


def test_static_figures_render_png():
    rng = np.random.default_rng(0)
    fig = render_planes(rng.normal(size=SHAPE), rng.normal(size=SHAPE) * 3, (3, 4, 4))
    png = figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    fig = plot_profile(_profile(), top=2)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["C", "B"]  # the two largest |profile|, largest on top
    figure_png(fig)


def test_explorer_widget_moves_to_region_centroid():
    rng = np.random.default_rng(1)
    subj = {s: ExplorerSubject(rng.normal(size=SHAPE), rng.normal(size=SHAPE), _profile())
            for s in ("sub-01", "sub-02")}
    cents = {"A": (1, 1, 1), "B": (5, 6, 7), "C": (2, 3, 4)}
    ex = DeviationExplorer(subj, cents)
    classes = {c for w in (ex.widget, ex.subject, ex.threshold, ex.region, ex.table,
                           *ex.sliders.values()) for c in w._dom_classes}
    for c in ("nbutils-explorer", "nbutils-subject-select", "nbutils-axial-slider",
              "nbutils-z-threshold", "nbutils-region-select", "nbutils-profile-table"):
        assert c in classes
    assert ex.region.options == ("B", "C", "A")  # sorted by |profile|
    assert ex.position == (5, 6, 7)  # starts at the most deviating region
    ex.region.value = "C"
    assert ex.position == (2, 3, 4)
    before = ex.view.value
    ex.threshold.value = 0.1
    assert ex.view.value != before  # the rendered view changes visibly
    ex.subject.value = "sub-02"
    assert "sub-02" not in ex.table.value and "<table" in ex.table.value


def test_explorer_draws_the_centile_chart_of_a_chosen_region():
    from nbutils.normative.conditional import fit_regional_model

    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"age": rng.uniform(20, 85, 30), "sex": rng.choice(["F", "M"], 30),
                        "site": rng.choice(["s1", "s2"], 30)})
    regions = pd.DataFrame({"index": [1, 2, 3], "name": ["A", "B", "C"], "hemisphere": "L"})
    model = fit_regional_model(rng.normal(size=(30, 3)), ref, regions, nknots=3)
    cov = {"age": 70.0, "sex": "F", "site": "s1"}
    subj = {"sub-01": ExplorerSubject(rng.normal(size=SHAPE), rng.normal(size=SHAPE), _profile(), cov),
            "sub-02": ExplorerSubject(rng.normal(size=SHAPE), rng.normal(size=SHAPE), _profile())}
    ex = DeviationExplorer(subj, {"A": (1, 1, 1), "B": (5, 6, 7), "C": (2, 3, 4)},
                           regional_model=model)
    assert "nbutils-centile-chart" in ex.centile_plot._dom_classes
    ex.region.value = "C"
    assert ex.centile_plot.value[:8] == b"\x89PNG\r\n\x1a\n"
    ex.subject.value = "sub-02"  # no covariates: no chart, no error
    assert ex.chart("A") is None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An (untrained) tiny model on the 8 mm standard grid with real normative statistics."""
    import torch

    from nbutils.anatomy import load_brain_mask, standard_grid
    from nbutils.normative.model import NormativeAutoencoder
    from nbutils.normative.pipeline import fit_normative_stats
    from nbutils.normative.stats import save_stats

    out = tmp_path_factory.mktemp("report")
    grid = standard_grid(8.0)
    mask = np.asarray(load_brain_mask(grid).dataobj) > 0
    torch.manual_seed(0)
    model = NormativeAutoencoder(channels=[4, 8], latent_channels=2).eval()
    ckpt = out / "model" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    rng = np.random.default_rng(0)
    vols = (rng.normal(size=(7, *grid.shape)) * mask).astype(np.float32)
    stats = fit_normative_stats(model, vols[:4], vols[4:6], mask, resolution=8.0,
                                min_region_voxels=2, provenance={"data_source": "noise fixture"})
    save_stats(stats, ckpt)
    bids = out / "bids"
    anat = bids / "sub-07" / "anat"
    anat.mkdir(parents=True)
    nib.save(grid.image(vols[6]), anat / "sub-07_T1w.nii.gz")
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\tdiagnosis\nsub-07\t70\tF\tAD\n")
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9"}))
    return ckpt, bids


def _parser():
    from nbutils.normative.report import register

    parser = argparse.ArgumentParser(prog="nbutils")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_report_command_writes_html(tiny_model, tmp_path):
    ckpt, bids = tiny_model
    args = _parser().parse_args(["report", "--subject", "sub-07", "--model", str(ckpt),
                                 "--out", str(tmp_path / "out"), "--bids", str(bids)])
    assert args.func(args) == 0
    page = (tmp_path / "out" / "sub-07_deviation_report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "BIDS dataset &#x27;tiny&#x27;" in page and "noise fixture" in page
    assert "Total deviation" in page and "sha256" in page and "AD" in page
    prof = pd.read_csv(tmp_path / "out" / "sub-07_regional_profile.tsv", sep="\t")
    assert {"name", "profile", "centile"} <= set(prof.columns)
    z = nib.load(tmp_path / "out" / "sub-07_desc-deviation_zmap.nii.gz")
    assert z.shape == (32, 32, 32)


def test_batch_report_writes_every_subject_and_records_failures(tiny_model, tmp_path):
    import shutil

    ckpt, bids = tiny_model
    batch = tmp_path / "bids"
    shutil.copytree(bids, batch)
    anat = batch / "sub-08" / "anat"
    anat.mkdir(parents=True)
    (anat / "sub-08_T1w.nii.gz").write_bytes(b"not a nifti")  # a broken scan: recorded, not fatal
    (batch / "participants.tsv").write_text("participant_id\tage\tsex\tdiagnosis\n"
                                            "sub-07\t70\tF\tAD\nsub-08\t60\tM\tCN\n")
    args = _parser().parse_args(["report", "--all", "--model", str(ckpt), "--out", str(tmp_path / "out"),
                                 "--bids", str(batch), "--jobs", "1"])
    assert args.func(args) == 1  # one subject failed
    index = pd.read_csv(tmp_path / "out" / "reports.tsv", sep="\t").set_index("subject")
    assert index.loc["sub-07", "status"] == "done"
    assert (tmp_path / "out" / "sub-07_deviation_report.html").exists()
    assert index.loc["sub-08", "status"] == "failed" and "sub-08" in index.loc["sub-08", "error"]
    with pytest.raises(SystemExit, match="exactly one --subject"):
        a = _parser().parse_args(["report", "--subject", "a", "b", "--model", str(ckpt), "--out",
                                  str(tmp_path), "--image", str(batch / "x.nii.gz")])
        a.func(a)


def test_report_command_errors(tiny_model, tmp_path):
    ckpt, bids = tiny_model
    args = _parser().parse_args(["report", "--subject", "sub-99", "--model", str(ckpt),
                                 "--out", str(tmp_path), "--bids", str(bids)])
    with pytest.raises(SystemExit, match="sub-99 not found"):
        args.func(args)
    args = _parser().parse_args(["report", "--subject", "x", "--model", str(tmp_path / "no.ckpt"),
                                 "--out", str(tmp_path), "--image", str(bids / "x.nii.gz")])
    with pytest.raises(FileNotFoundError, match="normative_stats"):
        args.func(args)
