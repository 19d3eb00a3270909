"""The scan guard: flags scans unlike the healthy reference, never healthy scans of its own kind."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from nbutils.normative.guard import (
    GUARD_FILE,
    check_scan,
    fit_guard,
    fit_guard_beside,
    guard_path,
    load_guard,
    save_guard,
)


def _healthy(rng, template, mask, n):
    """Template anatomy with per-subject smooth intensity variation and noise, z-scored in the brain."""
    from scipy.ndimage import gaussian_filter

    out = []
    for _ in range(n):
        field = gaussian_filter(rng.normal(size=template.shape), 2.0) * 4.0  # ~unit SD, smooth
        v = template * (1 + 0.05 * field) + rng.normal(scale=0.05 * template[mask].std(), size=template.shape)
        v = (v - v[mask].mean()) / v[mask].std()
        out.append(np.where(mask, v, 0.0))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An untrained tiny autoencoder on the 8 mm grid, stats and guard fitted on 'healthy' scans."""
    import torch

    from nbutils.anatomy import load_brain_mask, load_template, standard_grid
    from nbutils.normative.model import NormativeAutoencoder
    from nbutils.normative.pipeline import fit_normative_stats

    grid = standard_grid(8.0)
    mask = np.asarray(load_brain_mask(grid).dataobj) > 0
    template = np.asarray(load_template(grid).dataobj, dtype=np.float64)
    rng = np.random.default_rng(7)
    vols = _healthy(rng, template, mask, 16)
    torch.manual_seed(0)
    model = NormativeAutoencoder(channels=[4, 8], latent_channels=2).eval()
    labels = np.where(mask, 1 + (np.indices(grid.shape)[0] > grid.shape[0] // 2), 0).astype(np.int32)
    import pandas as pd

    regions = pd.DataFrame({"index": [1, 2], "name": ["right", "left"], "hemisphere": ["R", "L"]})
    train, val, test = vols[:4], vols[4:10], vols[10:]
    stats = fit_normative_stats(model, val, train, mask, resolution=8.0, atlas_data=(labels, regions),
                                min_region_voxels=2, provenance={"data_source": "template fixture"})
    guard = fit_guard(model, stats, val)
    ckpt = tmp_path_factory.mktemp("guard") / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    return model, stats, guard, labels, test, ckpt


def _check(reference, volume):
    from nbutils.normative.pipeline import analyse_volume

    model, stats, guard, labels, _, _ = reference
    res = analyse_volume(model, stats, volume, labels, segment=False)
    return check_scan(guard, stats, volume, res.z)


def test_ranges_cover_the_reference_and_bound_the_right_side(reference):
    _, _, guard, *_ = reference
    assert set(guard.ranges) == {"similarity", "mean_abs_z"}
    sim, absz = guard.ranges["similarity"], guard.ranges["mean_abs_z"]
    assert sim["direction"] == "low" and sim["limit"] <= sim["reference_min"] < sim["reference_max"] <= 1
    assert absz["direction"] == "high" and absz["limit"] >= absz["reference_max"] > 0
    assert sim["n"] == 6 and guard.data_source == "template fixture"


def test_held_out_healthy_scans_pass(reference):
    *_, test, _ = reference
    results = [_check(reference, v) for v in test]
    assert [r.flagged for r in results] == [False] * len(test)
    assert all(r.warning == "" for r in results)


@pytest.mark.parametrize("shift", ["inverted", "blurred_shifted"])
def test_scans_from_another_domain_are_flagged_with_measure_and_range(reference, shift):
    from scipy.ndimage import gaussian_filter

    _, stats, *_ = reference
    healthy = reference[4][0]
    mask = stats.mask
    if shift == "inverted":  # another contrast (T2-like): tissue order reversed
        other = np.where(mask, -healthy, 0.0)
    else:  # a failed preprocessing: heavy blur and an intensity shift
        other = np.where(mask, gaussian_filter(healthy, 3.0) * 0.3 + 2.0, 0.0)
    result = _check(reference, other.astype(np.float32))
    assert result.flagged is True and result.outside
    assert "similarity" in result.outside or shift != "inverted"
    assert "SCAN UNLIKE THE HEALTHY REFERENCE" in result.warning
    assert "flagged" in result.warning and "healthy reference" in result.warning
    assert "template fixture" in result.warning  # what the model was trained on


def test_guard_round_trips_atomically_beside_the_checkpoint(reference):
    model, stats, guard, labels, _, ckpt = reference
    path = save_guard(guard, ckpt)
    assert path == guard_path(ckpt) == ckpt.parent / GUARD_FILE
    assert load_guard(ckpt).ranges == json.loads(path.read_text())["ranges"]
    assert not list(ckpt.parent.glob("*.tmp*"))


def test_old_model_folder_warns_instead_of_crashing(reference, tmp_path):
    model, stats, _, labels, test, _ = reference
    with pytest.warns(UserWarning, match="no scan guard"):
        guard = load_guard(tmp_path / "best.ckpt")
    assert guard is None
    result = check_scan(guard, stats, test[0], np.zeros_like(test[0]))
    assert result.flagged is None and "SCAN GUARD UNAVAILABLE" in result.warning
    (tmp_path / GUARD_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=GUARD_FILE):
        load_guard(tmp_path / "best.ckpt")


def test_training_hook_needs_three_reference_scans(reference, tmp_path):
    model, stats, _, labels, test, _ = reference
    with pytest.warns(UserWarning, match="no scan guard fitted"):
        assert fit_guard_beside(model, stats, test[:2], tmp_path / "best.ckpt") is None
    assert not (tmp_path / GUARD_FILE).exists()


def test_report_shows_the_warning_and_the_training_data(reference, tmp_path):
    from nbutils.anatomy import standard_grid
    from nbutils.normative.report import write_report
    from nbutils.normative.stats import save_stats

    model, stats, guard, _, test, _ = reference
    import torch

    ckpt = tmp_path / "m" / "best.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    stats_neuro = stats  # the report loads the atlas by name: use a model fitted on the real atlas
    from nbutils.normative.pipeline import fit_normative_stats

    stats_neuro = fit_normative_stats(model, test[:3], test[3:5], stats.mask, resolution=8.0,
                                      min_region_voxels=2, provenance={"data_source": "template fixture"})
    save_stats(stats_neuro, ckpt)
    grid = standard_grid(8.0)
    scan = tmp_path / "inverted.nii.gz"
    nib.save(grid.image(np.where(stats.mask, -test[5], 0.0).astype(np.float32)), scan)
    page = write_report("sub-x", scan, ckpt, tmp_path / "out", "test scan").read_text()
    assert "SCAN GUARD UNAVAILABLE" in page  # no guard file yet: said, not silent
    fit_guard_beside(model, stats_neuro, test[:3], ckpt)
    page = write_report("sub-x", scan, ckpt, tmp_path / "out", "test scan").read_text()
    assert 'class="guard-warning"' in page and "SCAN UNLIKE THE HEALTHY REFERENCE" in page
    assert "template fixture" in page


def test_explorer_shows_the_warning_of_the_subject_on_screen(reference):
    import pandas as pd

    from nbutils.normative.explorer import DeviationExplorer, ExplorerSubject

    _, stats, *_ = reference
    shape = stats.mask.shape
    prof = pd.DataFrame({"name": ["A"], "profile": [1.0], "centile": [0.8]})
    ex = DeviationExplorer({"ok": ExplorerSubject(np.zeros(shape), np.zeros(shape), prof),
                            "odd": ExplorerSubject(np.zeros(shape), np.zeros(shape), prof, warning="WARNING: odd scan")},
                           {"A": (1, 1, 1)})
    assert ex.alert.value == "" and "nbutils-guard-warning" in ex.alert._dom_classes
    ex.subject.value = "odd"
    assert "WARNING: odd scan" in ex.alert.value and 'role="alert"' in ex.alert.value
