"""Tests of the synthetic cohort generator (tiny cohorts, mostly on the coarse 4 mm grid)."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy.stats import spearmanr

from nbutils import anatomy
from nbutils.synth import (
    SITES,
    draw_subject,
    ensure_cohort,
    generate_cohort,
    native_to_mni,
    subject_paths,
)
from nbutils.synth.cohort import MANIFEST, assign_diagnoses
from nbutils.synth.subject import render_mni, without_disease

#: Measured disease shrink must match the request within this (absolute fraction of volume).
SHRINK_TOL = 0.02


@pytest.fixture(scope="module")
def mni_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("mni")
    return generate_cohort(root, n_healthy=10, n_mci=0, n_ad=2, n_tumour=3, space="mni", seed=3,
                           resolution=4.0, progress=False)


@pytest.fixture(scope="module")
def native_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    return generate_cohort(root, n_healthy=2, n_mci=0, n_ad=0, n_tumour=1, space="native", seed=1,
                           progress=False)


def test_layout_and_participants(mni_cohort):
    table = pd.read_csv(mni_cohort / "participants.tsv", sep="\t")
    assert list(table.columns[:5]) == ["participant_id", "age", "sex", "site", "diagnosis"]
    assert table["diagnosis"].value_counts().to_dict() == {"CN": 10, "AD": 2, "glioma": 1, "meningioma": 1, "pituitary": 1}
    assert set(table["site"]) <= set(SITES)
    assert table["age"].between(20, 86).all()
    assert "SYNTHETIC" in json.loads((mni_cohort / "participants.json").read_text())["Synthetic"]
    for pid in table["participant_id"]:
        paths = subject_paths(mni_cohort, pid)
        for key in ("t1w", "mask", "tumour", "atlas", "regions", "truth"):
            assert paths[key].exists(), paths[key]
        img = nib.load(paths["t1w"])
        assert img.shape == anatomy.standard_grid(4.0).shape
        np.testing.assert_allclose(img.affine, anatomy.standard_grid(4.0).affine)
        assert list(pd.read_csv(paths["regions"], sep="\t").columns[:4]) == ["index", "name", "hemisphere", "volume_mm3"]


def test_mni_images_are_zscored_in_brain(mni_cohort):
    paths = subject_paths(mni_cohort, "sub-0001")
    t1 = nib.load(paths["t1w"]).get_fdata()
    mask = nib.load(paths["mask"]).get_fdata() > 0
    assert abs(t1[mask].mean()) < 1e-3 and abs(t1[mask].std() - 1) < 1e-3
    assert np.all(t1[~mask] == 0)


def test_tumour_split_is_even():
    dx = assign_diagnoses(1, 0, 0, 7, seed=0)
    assert [dx.count(k) for k in ("glioma", "meningioma", "pituitary")] == [3, 2, 2]
    with pytest.raises(ValueError, match="n_mci"):
        assign_diagnoses(1, -1, 0, 0, seed=0)


def test_same_seed_identical_different_seed_differs():
    a = render_mni(draw_subject(2, "AD", seed=5), 4.0)
    b = render_mni(draw_subject(2, "AD", seed=5), 4.0)
    c = render_mni(draw_subject(2, "AD", seed=6), 4.0)
    np.testing.assert_array_equal(a.t1, b.t1)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.t1, c.t1)


def test_worker_processes_change_speed_not_subjects(tmp_path):
    # nbutils run --jobs N caps a notebook's own pool when another notebook runs beside it: results must not move
    kw = dict(n_healthy=1, n_mci=0, n_ad=1, n_tumour=1, space="mni", seed=4, resolution=4.0, progress=False)
    one, two = generate_cohort(tmp_path / "one", jobs=1, **kw), generate_cohort(tmp_path / "two", jobs=2, **kw)
    images = sorted(p.relative_to(one) for p in one.rglob("*.nii.gz"))
    assert len(images) >= 6 and images == sorted(p.relative_to(two) for p in two.rglob("*.nii.gz"))
    for rel in images:
        np.testing.assert_array_equal(np.asarray(nib.load(one / rel).dataobj), np.asarray(nib.load(two / rel).dataobj))
    pd.testing.assert_frame_equal(pd.read_csv(one / "participants.tsv", sep="\t"),
                                  pd.read_csv(two / "participants.tsv", sep="\t"))


def test_ensure_cohort_reuses_and_regenerates(tmp_path):
    kw = dict(n_healthy=1, n_mci=0, n_ad=0, n_tumour=0, space="mni", seed=0, resolution=4.0, progress=False)
    ensure_cohort(tmp_path, **kw)
    stamp = (tmp_path / MANIFEST).stat().st_mtime_ns
    ensure_cohort(tmp_path, **kw)
    assert (tmp_path / MANIFEST).stat().st_mtime_ns == stamp
    ensure_cohort(tmp_path, **{**kw, "seed": 1})
    assert json.loads((tmp_path / MANIFEST).read_text())["args"]["seed"] == 1


def _hippocampus(regions: pd.DataFrame) -> float:
    return float(regions.loc[regions["name"].str.contains("Hippocampus"), "volume_mm3"].sum())


def test_ad_hippocampus_shrinks_by_requested_fraction():
    spec = draw_subject(0, "AD", seed=11)
    assert spec.severity > 0.05
    ad = render_mni(spec, 2.0)
    healthy = render_mni(without_disease(spec), 2.0)
    for hemi in ("Left", "Right"):
        name = f"{hemi}_Hippocampus"
        measured = 1 - (
            ad.regions.set_index("name").loc[name, "volume_mm3"]
            / healthy.regions.set_index("name").loc[name, "volume_mm3"]
        )
        requested = spec.severity * spec.hemi_jitter[f"hippocampus_{hemi[0]}"]
        assert abs(measured - requested) < SHRINK_TOL, (hemi, measured, requested)
    # the label image agrees with the table (hard voxel counts, 2 mm)
    idx = [47, 48]
    counted = np.isin(ad.labels, idx).sum() / np.isin(healthy.labels, idx).sum()
    assert abs(counted - _hippocampus(ad.regions) / _hippocampus(healthy.regions)) < 0.03


def test_ventricles_grow_with_age(mni_cohort):
    table = pd.read_csv(mni_cohort / "participants.tsv", sep="\t")
    cn = table[table["diagnosis"] == "CN"]
    vols = [
        pd.read_csv(subject_paths(mni_cohort, p)["regions"], sep="\t")
        .query("name.str.contains('Ventricle') or name.str.contains('Inf_Lat_Vent')", engine="python")["volume_mni_mm3"].sum()
        for p in cn["participant_id"]
    ]
    rho = spearmanr(cn["age"], vols).statistic
    assert rho > 0.6, rho


@pytest.mark.parametrize("kind", ["glioma", "meningioma", "pituitary"])
def test_tumour_compartment(kind):
    for index in range(2):
        spec = draw_subject(index, kind, seed=2)
        out = render_mni(spec, 2.0)
        grid = anatomy.standard_grid(2.0)
        tumour = out.tumour > 0
        solid = (out.tumour == 1) | (out.tumour == 2)
        assert solid.sum() > 0
        centroid = grid.world_coords(np.argwhere(solid).mean(0))
        healthy = render_mni(draw_subject(index, "CN", seed=2), 2.0) if kind != "pituitary" else None
        if kind == "glioma":
            # inside the parenchyma: every tumour voxel lies in the brain, well away from its outline
            assert np.all(out.mask[tumour])
            depth = ndi.distance_transform_edt(out.mask, sampling=2.0)
            assert np.median(depth[solid]) >= 6.0
        elif kind == "meningioma":
            # extra-axial: on the convexity it touches the brain outline, on the falx it sits on the midline
            outside = ndi.binary_dilation(~(healthy.mask > 0), iterations=2)
            if spec.tumour.location == "convexity":
                assert (solid & outside).any()
            else:
                assert abs(centroid[0]) < 6.0
        else:
            # sellar/suprasellar: midline, below the chiasm level and close to it
            assert abs(centroid[0]) < 6.0 and -40 < centroid[2] < -5 and -15 < centroid[1] < 15
        # every tumour lies inside what the deviation maps analyse (not only the MNI152 brain mask)
        analysed = np.asarray(anatomy.load_analysis_mask(grid).dataobj) > 0
        assert np.all(analysed[tumour]), f"{kind} {index}: {np.mean(~analysed[tumour]):.1%} outside"


def test_native_headers_and_true_transform(native_cohort):
    table = pd.read_csv(native_cohort / "participants.tsv", sep="\t")
    template = np.asarray(anatomy.load_brain_mask(anatomy.standard_grid(2.0)).dataobj) > 0
    for _, row in table.iterrows():
        paths = subject_paths(native_cohort, row["participant_id"])
        img = nib.load(paths["t1w"])
        site = SITES[row["site"]]
        assert "".join(nib.aff2axcodes(img.affine)) == site.orientation
        np.testing.assert_allclose(img.header.get_zooms()[:3], site.voxel_mm, atol=1e-5)
        mask = nib.load(paths["mask"])
        back = native_to_mni(mask, nib.load(paths["xfm"]), order=1).get_fdata() > 0.5
        if row["diagnosis"] == "CN":
            dice = 2 * (back & template).sum() / (back.sum() + template.sum())
            assert dice >= 0.95, dice
        # whole head: the image is non-zero well outside the brain (scalp and skull)
        t1 = np.asarray(img.dataobj)
        outside = ~ndi.binary_dilation(np.asarray(mask.dataobj) > 0, iterations=6)
        assert (t1[outside] > 0.3 * t1[np.asarray(mask.dataobj) > 0].mean()).sum() > 10_000


def test_contrast_order_per_site():
    grid = anatomy.standard_grid(4.0)
    tissue = {k: v.get_fdata() for k, v in anatomy.load_tissue_maps(grid).items()}
    seen = set()
    for index in range(12):
        spec = draw_subject(index, "CN", seed=4)
        if spec.site in seen:
            continue
        seen.add(spec.site)
        t1 = render_mni(spec, 4.0).t1
        means = {k: t1[v > 0.9].mean() for k, v in tissue.items()}
        assert means["wm"] > means["gm"] > means["csf"], (spec.site, means)
    assert seen == set(SITES)


@pytest.mark.slow
def test_syn_follows_the_nonlinear_truth_better_than_affine(native_cohort):
    """The generator's random warp is non-linear: SyN must lower the error an affine leaves."""
    from nbutils.prep import steps
    from nbutils.prep.evaluate import evaluate_scan

    paths = subject_paths(native_cohort, "sub-0001")
    img = steps.load_and_validate(paths["t1w"])
    n4, _ = steps.correct_bias(steps.reorient_to_ras(img))
    mask = steps.extract_brain(n4)
    truth = nib.load(paths["mask"]), nib.load(paths["xfm"])
    errors = {}
    with steps.private_tmpdir() as tmp:
        for kind in ("affine", "syn"):
            reg = steps.register_to_template(n4, mask, kind=kind, workdir=tmp / kind)
            errors[kind] = evaluate_scan(img, mask, reg, *truth)["reg_error_mm"]
    assert errors["syn"] < errors["affine"] - 0.1, errors  # 1.34 -> 1.12-1.14 mm in two runs
    assert errors["syn"] < 2.0, errors


# --------------------------------------------------------------------------- realistic neurodegeneration


def test_ad_target_regions_are_the_prespecified_neuromorphometrics_names():
    atlas = anatomy.load_atlas("neuromorphometrics", anatomy.standard_grid(4.0))
    names = anatomy.ad_target_regions(atlas)
    expected = {f"{h}_{s}" for h in ("Left", "Right") for s in (
        "Hippocampus", "Amygdala", "Ent_entorhinal_area", "Inf_Lat_Vent", "Lateral_Ventricle")}
    assert set(names) == expected
    assert anatomy.ad_target_regions(atlas.labels) == names
    assert anatomy.ad_target_regions(["Left_Hippocampus", "Left_Putamen"]) == ["Left_Hippocampus"]
    with pytest.raises(ValueError, match="no AD target"):
        anatomy.ad_target_regions(["Left_Putamen"])


def test_ad_tissue_loss_becomes_csf_darkening_the_atlas_hippocampus():
    """Same subject with and without disease (4 mm): atlas MTL darker, temporal horn larger."""
    grid = anatomy.standard_grid(4.0)
    atlas = anatomy.load_atlas("neuromorphometrics", grid)
    spec = draw_subject(3, "AD", seed=0)
    ad, healthy = render_mni(spec, 4.0), render_mni(without_disease(spec), 4.0)
    for pattern in ("Hippocampus", "Amygdala"):
        region = np.isin(atlas.data(), atlas.index_of(pattern))
        assert ad.t1[region].mean() < healthy.t1[region].mean() - 0.05, pattern
    horn = ["Left_Inf_Lat_Vent", "Right_Inf_Lat_Vent"]
    volume = {k: r.regions.set_index("name").loc[horn, "volume_mni_mm3"].sum() for k, r in (("ad", ad), ("cn", healthy))}
    assert volume["ad"] > 1.3 * volume["cn"], volume
    assert np.isin(ad.labels, [49, 50]).sum() > np.isin(healthy.labels, [49, 50]).sum()
    # the CSF that appeared is about the hippocampus + amygdala volume lost (fill fraction 1)
    lost = sum(
        healthy.regions.set_index("name").loc[n, "volume_mni_mm3"] - ad.regions.set_index("name").loc[n, "volume_mni_mm3"]
        for n in ("Left_Hippocampus", "Right_Hippocampus", "Left_Amygdala", "Right_Amygdala")
    )
    gained = sum(ad.mtl_csf_mm3.values()) - sum(healthy.mtl_csf_mm3.values())
    assert 0.8 * lost < gained < 1.2 * lost, (lost, gained)
    # solved structures keep their solved volumes in the regions table
    counted = ad.regions.set_index("name").loc[["Left_Hippocampus", "Right_Hippocampus"], "volume_mni_mm3"].sum()
    base = sum(ad.report[f"hippocampus_{h}"]["baseline_mm3"] * ad.report[f"hippocampus_{h}"]["achieved_ratio"]
               for h in "LR")
    assert abs(counted / base - 1) < 0.01


def test_large_ventricular_request_is_achieved():
    """No cap hides AD in old subjects: a x3.5+ request is met within the solve tolerance."""
    from nbutils.synth.subject import solve_deformation, target_ratios

    spec = dataclasses.replace(draw_subject(3, "AD", seed=0), age=84.0, ventricle_jitter=1.0, severity=0.3)
    assert target_ratios(spec)["ventricles"] > 3.5
    _, report = solve_deformation(spec)
    v = report["ventricles"]
    assert abs(v["achieved_ratio"] / v["target_ratio"] - 1) < 0.02, v
    # and the same subject without disease asks (and gets) less
    _, healthy = solve_deformation(without_disease(spec))
    assert healthy["ventricles"]["achieved_ratio"] < v["achieved_ratio"] / 1.3


def test_cortical_thinning_follows_ad_signature_and_ageing_its_own_pattern():
    from nbutils.synth.base import base_anatomy
    from nbutils.synth.subject import cortical_loss

    base = base_anatomy(anatomy.standard_grid(4.0))
    atlas = anatomy.load_atlas("neuromorphometrics", anatomy.standard_grid(4.0))

    def mean_loss(loss, pattern):
        m = np.isin(base.labels, atlas.index_of(pattern)) & (base.cortex > 0.5)
        return float(loss[m].mean())

    spec = draw_subject(3, "AD", seed=0)
    disease = cortical_loss(base, spec) - cortical_loss(base, without_disease(spec))
    signature = [mean_loss(disease, p) for p in ("_PCu_", "_AnG_", "_ITG_", "_PCgG_", "_Ent_")]
    control = [mean_loss(disease, p) for p in ("_PrG_", "_Calc_", "_MOrG_")]
    assert min(signature) > 2 * max(control) > 0
    young, old = (dataclasses.replace(draw_subject(1, "CN", seed=0), age=a) for a in (30.0, 80.0))
    ageing = cortical_loss(base, old) - cortical_loss(base, young)
    assert mean_loss(ageing, "_MFG_") > 1.5 * mean_loss(ageing, "_PCu_") > 0
    assert mean_loss(ageing, "_AIns_") > 1.5 * mean_loss(ageing, "_AnG_")


def test_truth_names_the_ad_target_regions(mni_cohort):
    table = pd.read_csv(mni_cohort / "participants.tsv", sep="\t")
    for _, row in table.iterrows():
        truth = json.loads(subject_paths(mni_cohort, row["participant_id"])["truth"].read_text())
        assert len(truth["ad_target_regions"]) == 10
        assert bool(truth["regions_of_disease"]) == (row["diagnosis"] in ("AD", "MCI"))
        assert set(truth["mtl_csf_mm3"]) == {"L", "R"}


def test_disease_effects_on_a_tiny_cohort(tmp_path):
    from nbutils.synth.effects import EFFECT_REGIONS, disease_effects, hedges_g

    root = generate_cohort(tmp_path, n_healthy=5, n_mci=0, n_ad=3, n_tumour=0, space="mni", seed=0,
                           resolution=4.0, progress=False)
    values, effects, trends = disease_effects(root, margin_years=40.0)
    assert set(values["region"]) == set(EFFECT_REGIONS)
    assert len(values) == 8 * len(EFFECT_REGIONS)
    assert list(effects["group"].unique()) == ["AD"]
    hip = effects.set_index("region").loc["hippocampus"]
    assert hip["n_group"] == 3 and hip["n_reference"] >= 2
    assert hip["ci_low"] <= hip["hedges_g"] <= hip["ci_high"]
    assert hip["hedges_g"] < 0  # AD darker than age-matched CN
    assert set(trends.columns) >= {"region", "slope_per_decade", "ci_low", "ci_high"}
    assert (trends["n"] == 5).all()
    # Hedges' g: known value and CI of two small samples
    eff = hedges_g(np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0]))
    assert eff.g == pytest.approx(-1.0 * (1 - 3 / (4 * 6 - 9)))
    assert eff.ci_low < eff.g < eff.ci_high
    assert np.isnan(hedges_g(np.array([1.0]), np.array([1.0, 2.0])).g)
