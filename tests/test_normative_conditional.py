"""The age/sex/site-conditional reference: voxel norm and PCNtoolkit regional model."""

import numpy as np
import pandas as pd
import pytest

from nbutils.normative.conditional import (
    MissingCovariatesWarning,
    RegionalModel,
    choose_terms,
    fit_conditional_voxel_norm,
    fit_regional_model,
)

SHAPE = (7, 8, 9)


def _covariates(rng, n):
    return pd.DataFrame({"age": rng.uniform(20, 85, n), "sex": rng.choice(["F", "M"], n),
                         "site": rng.choice(["siteA", "siteB"], n)})


def _maps(rng, cov, slope=0.05):
    """Healthy maps whose mean falls with age (0.05 per year) and whose noise grows with age."""
    age = cov["age"].to_numpy()[:, None, None, None]
    noise = rng.normal(0, 1, (len(cov), *SHAPE)) * (0.5 + age / 85)
    return (-slope * (age - 50) + noise).astype(np.float32)


def test_choose_terms_grows_with_reference_size():
    assert choose_terms(6, 2, 3) == []
    assert choose_terms(8, 2, 3) == ["age"]
    assert choose_terms(40, 2, 3) == ["age", "sex", "site", "age2"]


@pytest.mark.parametrize("sigma,map_sigma", [(0.0, 0.0), (1.0, 2.0)])
def test_conditional_voxel_norm_removes_the_age_effect_that_the_unconditional_one_keeps(sigma, map_sigma):
    rng = np.random.default_rng(0)
    mask = np.ones(SHAPE, bool)
    ref = _covariates(rng, 60)
    norm, loo, fb_loo = fit_conditional_voxel_norm(_maps(rng, ref), mask, ref, sigma=sigma,
                                                   map_sigma=map_sigma)
    assert np.mean(np.abs(loo) > 1.96) == pytest.approx(0.05, abs=0.005)  # calibrated
    assert np.mean(np.abs(fb_loo) > 1.96) == pytest.approx(0.05, abs=0.005)
    old = pd.DataFrame({"age": [84.0] * 20, "sex": ["F"] * 20, "site": ["siteA"] * 20})
    maps = _maps(rng, old)
    z_cond = norm.z(maps, old)
    with pytest.warns(MissingCovariatesWarning, match="unconditional"):
        z_uncond = norm.z(maps, None)
    assert abs(z_cond.mean()) < 0.25  # like people of their age
    assert z_uncond.mean() < -0.8  # an 84-year-old looks deviant against all ages
    assert 0.02 < np.mean(np.abs(z_cond) > 1.96) < 0.09


def test_unknown_site_warns_and_uses_the_average_site_effect():
    rng = np.random.default_rng(1)
    ref = _covariates(rng, 40)
    norm, _, _ = fit_conditional_voxel_norm(_maps(rng, ref), np.ones(SHAPE, bool), ref)
    new = pd.DataFrame({"age": [50.0], "sex": ["F"], "site": ["siteZ"]})
    with pytest.warns(MissingCovariatesWarning, match="siteZ"):
        z = norm.z(_maps(rng, new)[0], new)
    assert z.shape == SHAPE and np.isfinite(z).all()


def test_regional_model_conditional_z_centiles_and_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    ref = _covariates(rng, 40)
    regions = pd.DataFrame({"index": [3, 5], "name": ["hippocampus", "cortex"],
                            "hemisphere": ["L", "L"], "n_voxels": [10, 20]})
    age = ref["age"].to_numpy()
    scores = np.column_stack([-0.04 * (age - 50) + rng.normal(0, 0.5, 40), rng.normal(0, 1, 40)])
    model = fit_regional_model(scores, ref, regions, nknots=3)
    z = model.z(scores, ref)
    assert abs(np.corrcoef(z[:, 0], age)[0, 1]) < 0.2  # the age trend is modelled
    assert 0.7 < z[:, 0].std() < 1.3
    # a young subject with an old subject's hippocampus is abnormal; an old one is not
    new = pd.DataFrame({"age": [25.0, 80.0], "sex": ["F", "F"], "site": ["siteA", "siteA"]})
    z_new = model.z(np.array([[-1.2, 0.0], [-1.2, 0.0]]), new)
    assert z_new[0, 0] < -2 and abs(z_new[1, 0]) < 1.5
    curves = model.centiles("hippocampus", np.linspace(25, 80, 5), "F", "siteA")
    assert list(curves.columns) == ["age", "5", "25", "50", "75", "95"]
    assert (np.diff(curves["50"]) < 0).all()  # median falls with age
    assert (curves["95"] > curves["5"]).all()
    model.save(tmp_path / "regional")
    again = RegionalModel.load(tmp_path / "regional")
    np.testing.assert_allclose(again.z(scores[:3], ref.head(3)), z[:3], rtol=1e-6)
    with pytest.raises(KeyError, match="amygdala"):
        model.centiles("amygdala", [50.0], "F", "siteA")


def test_regional_z_equals_pcntoolkits_and_mixes_an_unknown_site(tmp_path):
    from nbutils.normative.conditional import _silent

    rng = np.random.default_rng(4)
    ref = _covariates(rng, 30)
    regions = pd.DataFrame({"index": [1, 2], "name": ["a", "b"], "hemisphere": ["L", "R"], "n_voxels": [5, 6]})
    site_shift = np.where(ref["site"] == "siteB", 1.0, 0.0)
    scores = np.column_stack([site_shift + rng.normal(0, 0.3, 30), rng.normal(0, 1, 30)])
    model = RegionalModel.load(fit_regional_model(scores, ref, regions, nknots=3).save(tmp_path / "r"))
    new = _covariates(rng, 5)
    new_scores = rng.normal(size=(5, 2))
    with _silent():  # PCNtoolkit's own (slow) path gives the same z
        data = model._normdata(new_scores, new, "new")
        model.model.compute_zscores(data)
    np.testing.assert_allclose(model.z(new_scores, new), data["Z"].sel(response_vars=model.keys).to_numpy(),
                               atol=1e-9)
    # a new scanner: compared with the mixture of siteA and siteB, so between the two
    one = new.head(1)
    with pytest.warns(UserWarning, match="siteZ"):
        z_new = model.z(new_scores[:1], one.assign(site="siteZ"))[0, 0]
    z_a, z_b = (model.z(new_scores[:1], one.assign(site=s))[0, 0] for s in ("siteA", "siteB"))
    assert min(z_a, z_b) < z_new < max(z_a, z_b)


def test_regional_model_fit_skips_pcntoolkits_prediction_pass_without_changing_z(monkeypatch):
    """``fit`` without PCNtoolkit's closing predict pass gives the same model (and the method comes back)."""
    import contextlib

    import nbutils.normative.conditional as conditional

    rng = np.random.default_rng(5)
    ref = _covariates(rng, 30)
    regions = pd.DataFrame({"index": [1, 2], "name": ["a", "b"], "hemisphere": ["L", "R"], "n_voxels": [5, 6]})
    scores = np.column_stack([0.02 * ref["age"] + rng.normal(0, 0.3, 30), rng.normal(0, 1, 30)])
    from pcntoolkit import NormativeModel

    calls = []
    predict = NormativeModel.predict
    monkeypatch.setattr(NormativeModel, "predict", lambda self, data: calls.append(1) or predict(self, data))
    fast = fit_regional_model(scores, ref, regions, nknots=3)
    assert calls == []  # the closing pass was skipped
    assert "predict" not in vars(fast.model)  # the instance uses NormativeModel.predict again
    monkeypatch.setattr(conditional, "_without_predict", lambda nm: contextlib.nullcontext(nm))
    full = fit_regional_model(scores, ref, regions, nknots=3)
    assert calls == [1]
    new = _covariates(rng, 6)
    probe = rng.normal(size=(6, 2))
    np.testing.assert_array_equal(fast.z(probe, new), full.z(probe, new))
    assert (fast.total_mean, fast.total_sd) == (full.total_mean, full.total_sd)


def test_regional_model_refuses_too_few_subjects():
    rng = np.random.default_rng(3)
    ref = _covariates(rng, 5)
    regions = pd.DataFrame({"index": [1], "name": ["a"], "hemisphere": ["L"], "n_voxels": [5]})
    with pytest.raises(ValueError, match="too few"):
        fit_regional_model(rng.normal(size=(5, 1)), ref, regions)


def test_intensity_regional_baseline_ranks_the_region_that_departs_from_people_of_the_same_age():
    from types import SimpleNamespace

    from nbutils.normative.evaluate import fit_intensity_regional_model, intensity_profiles

    rng = np.random.default_rng(3)
    labels = np.zeros(SHAPE, int)
    labels[:3], labels[3:5], labels[5:] = 3, 5, 7
    regions = pd.DataFrame({"index": [3, 5, 7], "name": ["hippocampus", "cortex", "ventricle"],
                            "hemisphere": ["L", "L", "L"], "n_voxels": [216, 144, 144]})
    stats = SimpleNamespace(  # duck-typed: the intensity reference is the identity here
        intensity_z=lambda volumes, covariates: np.asarray(volumes, np.float32), mask=np.ones(SHAPE, bool),
        regional=SimpleNamespace(regions=regions, measure="mean_z"))
    ref = _covariates(rng, 40)
    model = fit_intensity_regional_model(stats, _maps(rng, ref), ref, labels)
    new = pd.DataFrame({"age": [30.0, 30.0], "sex": ["F", "F"], "site": ["siteA", "siteA"]})
    maps = _maps(rng, new)
    maps[1, 3:5] -= 1.5  # subject 1: a darker cortex than 30-year-olds have
    prof = intensity_profiles(stats, model, maps, new, labels)
    assert list(prof.columns) == ["hippocampus", "cortex", "ventricle"]
    assert prof.loc[1, "cortex"] < -2.5 and prof.loc[1].abs().idxmax() == "cortex"
    assert prof.loc[0].abs().max() < 2.5  # an ordinary 30-year-old
