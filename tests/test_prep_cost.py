"""What preprocessing costs: pairing, training once per version (then reuse), evaluation, the table."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from nbutils.params import ParameterError, check_parameters
from nbutils.prep.cost import (
    VERSIONS,
    CostStudy,
    NormativeRecipe,
    cost_table,
    evaluate_version,
    paired_split,
    study_sizes,
    train_version,
)

RES = 5.0  # the smallest standard grid the atlas targets survive on: 32 x 48 x 32


def test_study_sizes_split_the_cohort_and_refuse_too_few():
    assert study_sizes(50) == {"n_healthy": 30, "n_mci": 0, "n_ad": 10, "n_tumour": 10}
    assert study_sizes(7) == {"n_healthy": 5, "n_mci": 0, "n_ad": 1, "n_tumour": 1}
    with pytest.raises(ValueError, match="at least 7 subjects"):
        study_sizes(6)


def test_recipe_is_a_settings_group_checked_field_by_field():
    recipe = NormativeRecipe(**check_parameters(NormativeRecipe, {"max_epochs": 3, "channels": [4, 8]},
                                                require_all=False))
    options = recipe.build_options()
    assert options["max_epochs"] == 3 and options["model"]["channels"] == [4, 8]
    assert options["patience"] == NormativeRecipe().patience and options["data"]["noise_std"] == 1.0
    with pytest.raises(ParameterError, match="max_epochs"):
        check_parameters(NormativeRecipe, {"max_epochs": "many"}, require_all=False)


def _table(n_cn: int, extra: dict[str, int], root: str) -> pd.DataFrame:
    dx = ["CN"] * n_cn + [d for d, n in extra.items() for _ in range(n)]
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "participant_id": [f"sub-{i + 1:04d}" for i in range(len(dx))],
        "path": [f"{root}/sub-{i + 1:04d}.nii.gz" for i in range(len(dx))],
        "diagnosis": dx, "age": rng.uniform(20, 80, len(dx)).round(1),
        "sex": rng.choice(["F", "M"], len(dx)), "site": rng.choice(["A", "B"], len(dx)),
    })  # fmt: skip


def test_paired_split_gives_both_versions_the_same_subjects_split_and_folds():
    ideal = _table(10, {"AD": 2, "glioma": 2}, "/mni")
    prep = _table(10, {"AD": 2, "glioma": 2}, "/prep").sample(frac=1.0, random_state=0)  # another row order
    prep = prep[prep["participant_id"] != "sub-0003"]  # failed preprocessing
    a, b = paired_split(ideal, prep, test_fraction=0.2, n_folds=2, seed=0)
    assert list(a["participant_id"]) == list(b["participant_id"]) and "sub-0003" not in set(a["participant_id"])
    assert (a["split"].to_numpy() == b["split"].to_numpy()).all() and (a["fold"].to_numpy() == b["fold"].to_numpy()).all()
    assert b["path"].str.startswith("/prep").all() and a["path"].str.startswith("/mni").all()
    assert set(a.loc[a["diagnosis"] != "CN", "split"]) == {"test"}
    assert set(a.loc[a["split"] != "test", "fold"]) == {0, 1}
    with pytest.raises(ValueError, match="share no participant"):
        paired_split(ideal, prep.assign(participant_id=prep["participant_id"] + "x"), 0.2, 2)


def test_cost_table_puts_the_versions_side_by_side_with_their_difference():
    keys = ["healthy_share_abs_z_gt_1_96", "ad_hit_rate", "tumour_auprc_autoencoder", "tumour_auprc_voxel_z",
            "tumour_auprc_intensity", "tumour_dice_fpr5", "lesion_detection_rate_fpr5",
            "fp_clusters_per_healthy_scan_fpr5"]
    ideal = {**dict.fromkeys(keys, 0.5), "ad_hit_chance": 0.3, "tumour_auprc_chance": 0.01}
    prep = {**ideal, "tumour_auprc_autoencoder": 0.2, "fp_clusters_per_healthy_scan_fpr5": 4.0}
    table = cost_table(ideal, prep, top_k=3)
    assert list(table.columns) == ["read against", VERSIONS["ideal"], VERSIONS["prep"], "difference"]
    assert len(table) == len(keys)
    row = table.loc["tumour voxel AUPRC, autoencoder"]
    assert row["difference"] == pytest.approx(-0.3) and row["read against"] == "chance 0.010"
    assert table.loc["AD: a target region in the top 3 (hit rate)", "read against"] == "chance 0.30"
    assert table.loc["false-positive clusters per healthy test scan at 5 % FPR", "difference"] == pytest.approx(3.5)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """14 tiny subjects on the 5 mm grid: 'ideal' scans, and 'prep' scans shifted 2 voxels (misregistered).

    AD subjects have dark hippocampi and lateral ventricles; tumour subjects a bright blob whose truth
    is where the ideal version has it.
    """
    from nbutils.anatomy import load_analysis_mask, standard_grid
    from nbutils.normative.pipeline import atlas_arrays

    root = tmp_path_factory.mktemp("cost")
    grid = standard_grid(RES)
    mask = np.asarray(load_analysis_mask(grid).dataobj) > 0
    labels, regions = atlas_arrays("neuromorphometrics", RES)
    dark = np.isin(labels, regions.loc[regions["name"].str.contains("Hippocampus|Lateral_Ventricle"), "index"])
    rng = np.random.default_rng(7)
    base = ndi.gaussian_filter(rng.normal(size=grid.shape), 2.0) * 4
    ideal, prep = _table(10, {"AD": 2, "glioma": 2}, str(root / "mni")), None
    truth = {}
    for version in ("mni", "prep"):
        (root / version).mkdir()
    for r in ideal.itertuples():
        img = base + 0.3 * rng.normal(size=grid.shape)
        if r.diagnosis == "AD":
            img[dark] -= 3.0
        if r.diagnosis == "glioma":
            blob = np.zeros(grid.shape, bool)
            c = np.argwhere(mask)[rng.integers(mask.sum())]
            blob[tuple(slice(max(k - 2, 0), k + 2) for k in c)] = True
            blob &= mask
            img[blob] += 4.0
            truth[r.participant_id] = blob
        for version, data in (("mni", img), ("prep", np.roll(img, 2, axis=0))):
            out = np.where(mask, data, 0).astype(np.float32)
            nib.save(grid.image(out), root / version / f"{r.participant_id}.nii.gz")
    prep = ideal.assign(path=ideal["path"].str.replace("/mni/", "/prep/"))
    return root, *paired_split(ideal, prep, test_fraction=0.2, n_folds=2, seed=0), truth


RECIPE = NormativeRecipe(channels=[4, 8], latent_channels=2, batch_size=2, noise_std=0.0, max_epochs=1,
                         patience=1, max_minutes=None)


@pytest.mark.slow
def test_each_version_trains_once_then_is_reused_and_is_evaluated_on_the_same_subjects(two_versions):
    root, ideal, prep, truth = two_versions
    models, results = {}, {}
    tumour_ids = ideal.loc[(ideal["split"] == "test") & (ideal["diagnosis"] == "glioma"), "participant_id"]
    masks = np.stack([truth[p] for p in tumour_ids])
    for version, table in (("ideal", ideal), ("prep", prep)):
        model, stats, training, reused = train_version(table, root / "models" / version, RECIPE, seed=0,
                                                       resolution=RES, data_source=f"tiny {version}")
        assert not reused and training["epochs"] == [1, 1] and stats.mask.shape == (32, 48, 32)
        models[version] = (model, stats)
        results[version] = evaluate_version(model, stats, table, masks, top_k=5)
    _, _, _, reused = train_version(ideal, root / "models" / "ideal", RECIPE, seed=0, resolution=RES,
                                    data_source="tiny ideal")
    assert reused  # same scans, folds, recipe and seed
    _, _, _, reused = train_version(ideal, root / "models" / "ideal", RECIPE, seed=1, resolution=RES,
                                    data_source="tiny ideal")
    assert not reused  # another seed trains again

    r = results["ideal"]
    assert (r["n_test_healthy"], r["n_test_ad"], r["n_test_tumour"]) == (2, 2, 2)
    assert 0.0 <= r["healthy_share_abs_z_gt_1_96"] <= 1.0 and 0.0 < r["ad_hit_chance"] < 1.0
    assert r["tumour_auprc_chance"] == pytest.approx(masks[:, models["ideal"][1].mask].mean())
    # the lesion is where the truth says in the ideal version, two voxels off in the "preprocessed" one
    assert r["tumour_auprc_intensity"] > results["prep"]["tumour_auprc_intensity"]
    assert r["tumour_auprc_intensity"] > r["tumour_auprc_chance"]
    with pytest.raises(ValueError, match="4 lesion masks for 2 tumour"):
        evaluate_version(*models["ideal"], ideal, np.concatenate([masks, masks]))

    study = CostStudy(cost_table(results["ideal"], results["prep"]), results, {}, {"ideal": ideal, "prep": prep},
                      {}, 0, {"ideal": "tiny ideal", "prep": "tiny prep"})
    assert study.split_counts().loc["CN"].to_dict() == {"reference": 8, "test": 2}
    saved = json.loads(json.dumps(study.metrics()))  # what the notebook writes to its metrics file
    assert saved["split"]["test"] == {"AD": 2, "CN": 2, "glioma": 2} and saved["n_subjects"] == 14
    assert [r["metric"] for r in saved["table"]] == list(study.table.index)
