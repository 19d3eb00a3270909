"""A tiny Lightning fit, cross-validation wiring, interpretability and MC dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nbutils.classify.experiment import cross_validate, sample_size_experiment, sample_size_table
from nbutils.classify.interpret import (
    dilate_mm,
    enable_mc_dropout,
    error_by_uncertainty,
    grad_cam,
    lesion_saliency,
    mc_dropout_predict,
    occlusion_map,
    saliency_mass,
)
from nbutils.classify.lightning import balanced_class_weights, fit_classifier
from nbutils.classify.models import BaselineCNN, PIFNet
from nbutils.classify.splits import subject_split

SHAPE = (12, 14, 10)


def _toy(rng, n=24):
    """Class 1 has a bright blob in one corner; the rest is noise."""
    y = np.array([0, 1] * (n // 2))
    x = rng.normal(0, 1, size=(n, *SHAPE)).astype(np.float32)
    x[y == 1, 2:6, 2:6, 2:6] += 2.0
    subjects = [f"sub-{i:02d}" for i in range(n)]
    return x, y, subjects


def _small_model():
    return BaselineCNN(n_classes=2, channels=(4, 8), hidden=8, dropout=0.2)


def test_balanced_class_weights():
    assert balanced_class_weights([0, 0, 0, 1], 2) == pytest.approx([4 / 6, 4 / 2])
    assert balanced_class_weights([0, 0], 3)[1:] == [1.0, 1.0]


def test_tiny_lightning_fit_is_seeded_and_logs(rng, tmp_path):
    x, y, _ = _toy(rng)
    kw = dict(n_classes=2, max_epochs=3, patience=2, batch_size=6, lr=1e-2, seed=7)
    a = fit_classifier(_small_model, (x[:16, None], y[:16]), (x[16:, None], y[16:]), log_dir=tmp_path / "a", **kw)
    b = fit_classifier(_small_model, (x[:16, None], y[:16]), (x[16:, None], y[16:]), log_dir=tmp_path / "b", **kw)
    assert 1 <= a.epochs_run <= 3 and 1 <= a.best_epoch <= a.epochs_run
    assert {"train_loss", "val_loss", "val_balanced_accuracy"} <= set(a.history.columns)
    assert len(a.history) == a.epochs_run
    assert (tmp_path / "a" / "version_0" / "metrics.csv").exists()
    assert not a.model.training
    c = fit_classifier(_small_model, (x[:16, None], y[:16]), (x[16:, None], y[16:]), log_dir=tmp_path / "c",
                       **{**kw, "max_epochs": 4, "patience": 1, "min_epochs": 3})
    assert c.epochs_run >= 3 and c.best_epoch >= 3
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)  # same seed, same weights


def test_cross_validate_and_sample_size(rng, tmp_path):
    x, y, subjects = _toy(rng)
    split = subject_split(subjects, y, test_size=0.25, n_folds=2, seed=0)
    kw = dict(n_classes=2, max_epochs=2, patience=1, batch_size=8, progress=False)
    cv = cross_validate("baseline", _small_model, x, y, subjects, split, log_dir=tmp_path, **kw)
    assert len(cv.folds) == 4 and set(cv.folds["partition"]) == {"val", "test"}
    assert cv.test_probs.shape == (2, 6, 2)
    head = cv.headline()
    assert head["n_test"] == 6 and 0 <= head["balanced_accuracy_mean"] <= 1
    assert cv.confusion[0].sum() == 6
    runs = sample_size_experiment(
        {"baseline": _small_model, "pif": lambda: PIFNet(SHAPE, channels=(2, 2, 2, 2), pif_channels=2,
                                                         patch_size=1, n_pool=2, hidden=4)},
        x, y, subjects, split, fractions=(1.0, 0.5), repeats=2, log_dir=tmp_path / "ss", **kw,
    )
    assert len(runs) == 2 * 2 * 2
    # the 50% subset trains on fewer subjects than the full pool; both models get the same subjects
    n_by = runs.groupby(["subset", "repeat"])["n_train"].nunique()
    assert (n_by == 1).all()
    assert runs.loc[runs.subset == "50%", "n_train"].max() < runs.loc[runs.subset == "100%", "n_train"].min()
    table = sample_size_table(runs)
    assert list(table.columns) == ["model", "subset", "balanced_accuracy_mean", "balanced_accuracy_sd",
                                   "early_stop_epoch_mean", "early_stop_epoch_sd", "repeats"]
    assert (table["repeats"] == 2).all()


def test_grad_cam_and_occlusion_shapes(rng):
    torch.manual_seed(0)
    model = BaselineCNN(n_classes=3, channels=(2, 4), hidden=4).eval()
    x = rng.normal(size=(2, 1, *SHAPE)).astype(np.float32)
    cam = grad_cam(model, x, "features.1")
    assert cam.shape == (2, *SHAPE)
    assert np.isfinite(cam).all()
    occ = occlusion_map(model, x, mask_size=4, overlap=0.0)
    assert occ.shape == (2, *SHAPE)
    pif = PIFNet(SHAPE, n_classes=2, channels=(2, 2, 2, 2), pif_channels=2, patch_size=1, n_pool=2).eval()
    assert grad_cam(pif, x, "features.3").shape == (2, *SHAPE)


def test_mc_dropout_keeps_batchnorm_in_eval(rng):
    torch.manual_seed(0)
    model = BaselineCNN(n_classes=2, channels=(2, 4), hidden=8, dropout=0.5)
    enable_mc_dropout(model)
    kinds = {type(m).__name__: m.training for m in model.modules() if type(m).__name__ in ("BatchNorm3d", "Dropout")}
    assert kinds == {"BatchNorm3d": False, "Dropout": True}
    bn = model.features[0][1]
    before = bn.running_mean.clone()
    x = rng.normal(size=(4, 1, *SHAPE)).astype(np.float32) + 3.0
    out = mc_dropout_predict(model, x, n_passes=6, seed=1)
    torch.testing.assert_close(bn.running_mean, before)  # BN statistics untouched
    assert out["samples"].shape == (6, 4, 2)
    assert out["samples"].std(0).max() > 0  # dropout made the passes differ
    np.testing.assert_allclose(out["probs"].sum(1), 1, rtol=1e-5)
    assert (out["entropy"] >= 0).all() and (out["entropy"] <= np.log(2) + 1e-6).all()
    again = mc_dropout_predict(model, x, n_passes=6, seed=1)
    np.testing.assert_allclose(again["samples"], out["samples"])  # seeded
    assert not model.training and not any(m.training for m in model.modules())


def test_saliency_mass_and_error_bins():
    labels = np.zeros((4, 4, 4), int)
    labels[1:3, 1:3, 1:3] = 5  # 8 of the 64 voxels... brain = all labelled voxels
    labels[0] = 1
    sal = np.zeros((4, 4, 4))
    sal[1:3, 1:3, 1:3] = 1.0
    sal[0, 0, 0] = 2.0
    sal[3, 3, 3] = -4  # negative values ignored
    out = saliency_mass(sal, labels, [5])
    assert out["mass"] == pytest.approx(8 / 10)
    assert out["chance"] == pytest.approx(8 / 24)
    assert out["outside_brain"] == pytest.approx(0.0)  # all positive saliency lies on labelled voxels
    labels[0] = 0  # the 2.0 at (0, 0, 0) now lies outside the brain
    assert saliency_mass(sal, labels, [5])["outside_brain"] == pytest.approx(2 / 10)
    assert saliency_mass(sal, labels, [5])["outside_brain_chance"] == pytest.approx(1 - 8 / 64)
    uniform = saliency_mass(np.ones(labels.shape), labels, [5])  # a map that ignores anatomy
    assert uniform["outside_brain"] == pytest.approx(uniform["outside_brain_chance"])
    assert uniform["ratio"] == pytest.approx(1.0)
    bins = error_by_uncertainty(np.array([0.1, 0.2, 0.6, 0.7]), np.array([1, 1, 0, 1]), n_bins=2)
    assert bins["error_rate"].tolist() == [0.0, 0.5]


def test_dilation_and_lesion_saliency_count_the_grown_lesion_against_its_share_of_brain():
    lesion = np.zeros((7, 8, 9), bool)
    lesion[3, 4, 4] = True
    assert dilate_mm(lesion, 0, 2.0).sum() == 1
    assert dilate_mm(lesion, 2.0, 2.0).sum() == 7  # one voxel each way: a 6-neighbourhood ball
    assert dilate_mm(lesion, 4.0, 2.0).sum() == 33
    with pytest.raises(ValueError, match="voxel_mm"):
        dilate_mm(lesion, 2.0, 0)
    brain = np.zeros_like(lesion)
    brain[1:6, 1:7, 1:8] = True
    brain[3, 4, 4] = False  # a lesion voxel outside the brain mask still counts as brain
    sal = np.zeros(lesion.shape)
    sal[3, 4, 5] = 3.0  # beside the lesion: inside once it is grown by 2 mm
    sal[2, 2, 2] = 1.0  # elsewhere in the brain
    sal[0, 0, 0] = 4.0  # outside the brain
    out = lesion_saliency(sal, lesion, brain, margin_mm=2.0, voxel_mm=2.0)
    assert out["mass"] == pytest.approx(3 / 4)
    assert out["chance"] == pytest.approx(7 / (5 * 6 * 7))
    assert out["outside_brain"] == pytest.approx(4 / 8)
    assert out["outside_brain_chance"] == pytest.approx(1 - (5 * 6 * 7) / lesion.size)  # the lesion voxel counts as brain
    assert lesion_saliency(sal, lesion, brain, margin_mm=0.0, voxel_mm=2.0)["mass"] == pytest.approx(0.0)


def test_validation_every_kth_epoch_counts_back_from_the_last(rng, tmp_path):
    x, y, _ = _toy(rng)
    kw = dict(n_classes=2, max_epochs=7, patience=100, batch_size=6, lr=1e-2, seed=3)
    train, val = (x[:16, None], y[:16]), (x[16:, None], y[16:])
    every = fit_classifier(_small_model, train, val, log_dir=tmp_path / "every", **kw)
    third = fit_classifier(_small_model, train, val, log_dir=tmp_path / "third", val_every=3, **kw)
    validated = third.history.dropna(subset=["val_loss"])["epoch"].to_numpy() + 1
    np.testing.assert_array_equal(validated, [1, 4, 7])  # the last epoch is always validated
    assert third.epochs_run == 7 and len(third.history) == 7 and third.best_epoch in (1, 4, 7)
    # Same seed, same training: the validated epochs score as when every epoch is validated.
    by_epoch = every.history.set_index("epoch")["val_loss"]
    np.testing.assert_allclose(third.history.dropna(subset=["val_loss"]).set_index("epoch")["val_loss"],
                               by_epoch.loc[validated - 1], rtol=1e-5)
    assert third.best_val_loss == pytest.approx(by_epoch.loc[validated - 1].min(), rel=1e-5)
    with pytest.raises(ValueError, match="val_every"):
        fit_classifier(_small_model, train, val, log_dir=tmp_path / "bad", val_every=0, **kw)


def test_patience_counts_epochs_when_validating_every_kth(rng, tmp_path):
    # A learning rate of 0 never improves the validation loss: training stops
    # `patience` epochs (rounded up to whole intervals) after the first check.
    x, y, _ = _toy(rng)
    kw = dict(n_classes=2, max_epochs=20, lr=0.0, batch_size=6, seed=0)
    train, val = (x[:16, None], y[:16]), (x[16:, None], y[16:])
    result = fit_classifier(_small_model, train, val, log_dir=tmp_path / "a", patience=4, val_every=2, **kw)
    assert result.epochs_run == 2 + 4  # checks at epochs 2, 4, 6: two checks without improvement
    result = fit_classifier(_small_model, train, val, log_dir=tmp_path / "b", patience=3, val_every=1, **kw)
    assert result.epochs_run == 1 + 3


def test_batchnorm_statistics_match_the_returned_weights(rng, tmp_path):
    # Shifted, scaled images and 2 short epochs: BN's default running averages
    # (momentum 0.1, starting at 0/1) would still be far from the real statistics.
    x, y, _ = _toy(rng, n=16)
    x = (x * 3.0 + 5.0)[:, None]
    result = fit_classifier(_small_model, (x, y), (x[:4], y[:4]), n_classes=2, log_dir=tmp_path,
                            max_epochs=2, patience=5, batch_size=4, seed=0)
    model = result.model
    conv, bn = model.features[0][0], model.features[0][1]
    with torch.no_grad():
        act = conv(torch.as_tensor(x))
    mean = act.mean(dim=(0, 2, 3, 4)).numpy()
    var = act.var(dim=(0, 2, 3, 4), unbiased=True).numpy()
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=2e-2)


def test_classifier_factories_build_fresh_networks_from_parameters():
    from nbutils.classify.experiment import fit_options
    from nbutils.classify.models import (
        BaselineCNN,
        PIFNet,
        classifier_factories,
        count_parameters,
        describe_classifiers,
    )
    from nbutils.classify.settings import ClassifierSettings

    p = ClassifierSettings.from_overrides(dict(channels=[2, 4, 4, 8], hidden=8, dropout=0.1, pif_channels=2,
                                               pif_patch_size=1, max_epochs=3, patience=2, min_epochs=1,
                                               batch_size=2, lr=0.01, weight_decay=0.0))
    make = classifier_factories(p, (16, 24, 16), n_classes=3)
    a, b = make["baseline"](), make["baseline"]()
    assert isinstance(a, BaselineCNN) and isinstance(make["pif"](), PIFNet) and a is not b
    table = describe_classifiers(make)
    assert table.loc["parameters", "baseline"] == count_parameters(a)
    assert table.loc["parameters", "pif"] == count_parameters(make["pif"]())
    assert fit_options(p, 3) == dict(n_classes=3, max_epochs=3, patience=2, min_epochs=1, batch_size=2,
                                     lr=0.01, weight_decay=0.0, lr_schedule="constant", norm_reference="all",
                                     accelerator="cpu", devices=1, val_every=1)


def test_mean_sd_strings():
    import pandas as pd

    from nbutils.classify.metrics import format_mean_sd, summarise

    folds = pd.DataFrame({"accuracy": [0.5, 0.7, 0.9]})
    assert format_mean_sd(summarise(folds, ["accuracy"])).to_dict() == {"accuracy": "0.700 ± 0.200"}


def test_classifier_settings_refuse_unknown_or_mistyped_overrides():
    from nbutils.classify.settings import ClassifierSettings
    from nbutils.params import ParameterError

    assert ClassifierSettings.from_overrides({"lr": 1}).lr == 1.0
    assert ClassifierSettings.from_overrides({}) == ClassifierSettings()
    with pytest.raises(ParameterError, match=r"(?s)unknown parameter\(s\): learning_rate.*lr: float"):
        ClassifierSettings.from_overrides({"learning_rate": 0.1})
    with pytest.raises(ParameterError, match="parameter 'channels' must be list"):
        ClassifierSettings.from_overrides({"channels": 8})


def test_saliency_overlay_outlines_the_lesion_and_can_show_saliency_outside_the_brain():
    import matplotlib

    matplotlib.use("Agg")
    from nbutils.classify.plots import plot_saliency_overlay

    bg = np.zeros((7, 8, 9))
    bg[1:6, 1:7, 1:8] = 1.0
    sal = np.zeros_like(bg)
    sal[0, 0, 4] = 5.0  # outside the brain only
    lesion = np.zeros(bg.shape, bool)
    lesion[2:4, 3:5, 3:6] = True
    fig = plot_saliency_overlay({"a": sal}, bg, {"a": (2, 3, 4)}, outlines={"a": lesion}, brain_only=False)
    axes = fig.axes
    assert len(axes) == 3 and all(ax.collections for ax in axes)  # a contour on every cut through the lesion
    shown = axes[0].images[1].get_array()  # axial overlay: the outside value is not masked
    assert not np.ma.getmaskarray(shown)[0, 0]
    hidden = plot_saliency_overlay({"a": sal}, bg, (2, 3, 4)).axes[0].images[1].get_array()
    assert np.ma.getmaskarray(hidden)[0, 0]


def test_fit_classifier_fits_the_voxel_statistics_on_training_images_only(rng, tmp_path):
    x, y, _ = _toy(rng, n=12)
    x = x[:, None]
    val = x[:4] + 50.0  # very different validation images must not leak into the statistics

    def make():
        return BaselineCNN(n_classes=2, channels=(2,), hidden=4, voxel_norm=True, input_shape=SHAPE)

    result = fit_classifier(make, (x[4:], y[4:]), (val, y[:4]), n_classes=2, log_dir=tmp_path, max_epochs=1,
                            patience=1, batch_size=4, seed=0)
    np.testing.assert_allclose(result.model.input_norm.mean[0].numpy(), x[4:].mean(0), atol=1e-5)


def test_controls_reference_fits_the_voxel_statistics_on_class_0_training_images_only(rng, tmp_path):
    x, y, _ = _toy(rng, n=16)  # class 1 carries a bright blob that must not enter a controls-only reference
    x = x[:, None]

    def make():
        return BaselineCNN(n_classes=2, channels=(2,), hidden=4, voxel_norm=True, input_shape=SHAPE)

    kw = dict(n_classes=2, max_epochs=1, patience=1, batch_size=4, seed=0)
    result = fit_classifier(make, (x[4:], y[4:]), (x[:4], y[:4]), log_dir=tmp_path / "c", norm_reference="controls",
                            **kw)
    controls = x[4:][y[4:] == 0]
    np.testing.assert_allclose(result.model.input_norm.mean[0].numpy(), controls.mean(0), atol=1e-5)
    np.testing.assert_allclose(result.model.input_norm.scale[0, 0, 3, 3, 3].item(),
                               controls[:, 0, 3, 3, 3].std(), rtol=1e-4)  # inside the blob: the controls' SD
    with pytest.raises(ValueError, match="at least 2 training images of class 0"):
        fit_classifier(make, (x[4:][y[4:] == 1], y[4:][y[4:] == 1]), (x[:4], y[:4]), log_dir=tmp_path / "d",
                       norm_reference="controls", **kw)
    with pytest.raises(ValueError, match="norm_reference must be one of"):
        fit_classifier(make, (x[4:], y[4:]), (x[:4], y[:4]), log_dir=tmp_path / "e", norm_reference="healthy", **kw)


def test_training_flips_the_normalised_image_not_the_raw_one(rng):
    from nbutils.classify.lightning import ClassifierModule

    shape = (6, 5, 4)
    reference = torch.as_tensor(rng.normal(0, 1, size=(10, 1, *shape)), dtype=torch.float32)
    reference[:, :, :3] += 4.0  # a left-right asymmetric reference: flipping before or after the norm differs
    model = BaselineCNN(n_classes=2, channels=(2,), hidden=4, voxel_norm=True, input_shape=shape)
    model.input_norm.fit(reference)
    x = torch.as_tensor(rng.normal(0, 1, size=(1, 1, *shape)), dtype=torch.float32)
    z = model.input_norm(x)
    seen = []
    model.features.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    module = ClassifierModule(model, 2, flip_axes=(0,))
    torch.manual_seed(3)
    for _ in range(12):
        module._augmented_logits(x)
    flipped = [bool(torch.equal(s, z.flip(2))) for s in seen]
    assert all(torch.equal(s, z) or f for s, f in zip(seen, flipped, strict=True))  # z or the flipped z only
    assert 0 < sum(flipped) < len(seen)  # both happened
    assert not any(torch.allclose(s, model.input_norm(x.flip(2))) for s in seen)
    model.eval()
    torch.testing.assert_close(model(x), model.forward_normalised(z))


def test_onecycle_schedule_anneals_the_learning_rate_and_bad_names_are_refused(rng, tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback
    from torch.utils.data import DataLoader, TensorDataset

    from nbutils.classify.lightning import ClassifierModule

    class RecordLR(Callback):
        def __init__(self):
            self.lrs = []

        def on_train_batch_start(self, trainer, *args):
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    x, y, _ = _toy(rng, n=8)
    loader = DataLoader(TensorDataset(torch.as_tensor(x[:, None]), torch.as_tensor(y)), batch_size=2)
    lrs = {}
    for schedule in ("constant", "onecycle"):
        record = RecordLR()
        trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path, callbacks=[record])
        trainer.fit(ClassifierModule(_small_model(), 2, lr=0.01, lr_schedule=schedule), loader)
        lrs[schedule] = np.array(record.lrs)
    assert len(lrs["onecycle"]) == 12 and np.allclose(lrs["constant"], 0.01)
    one = lrs["onecycle"]
    assert one[0] == pytest.approx(0.01 / 25)  # warm-up from lr / 25 ...
    assert one.max() > 0.009 and 0 < one.argmax() < 11  # ... to about lr ...
    assert one[-1] < 1e-5 and np.all(np.diff(one[one.argmax():]) < 0)  # ... then annealed to ~0
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        ClassifierModule(_small_model(), 2, lr_schedule="cosine")


class _DeviationScorer(torch.nn.Module):
    """Class 1 = 'deviant': its logit grows with the squared voxel z-scores against a reference."""

    def __init__(self, shape):
        super().__init__()
        from nbutils.classify.models import VoxelStandardise

        self.input_norm = VoxelStandardise(shape)

    def forward(self, x):
        return self.forward_normalised(self.input_norm(x))

    def forward_normalised(self, z):
        score = (z**2).sum(dim=(1, 2, 3, 4))  # a sum: the occluder's padding of the volume does not change it
        return torch.stack([torch.zeros_like(score), 0.05 * score], 1)


def test_occlusion_of_a_voxel_normed_network_fills_with_the_reference_not_a_fake_lesion(rng):
    shape = (7, 8, 9)
    model = _DeviationScorer(shape)
    reference = torch.as_tensor(rng.normal(3.0, 1.0, size=(30, 1, *shape)), dtype=torch.float32)
    model.input_norm.fit(reference)
    x = model.input_norm.mean.clone()  # exactly the reference everywhere ...
    x[..., 2:4, 2:4, 2:4] += 4 * model.input_norm.scale[..., 2:4, 2:4, 2:4]  # ... but a lesion of z = 4 (one cube)
    occ = occlusion_map(model, x, mask_size=2, class_idx=1, overlap=0.0)[0]
    lesion = np.zeros(shape, bool)
    lesion[2:4, 2:4, 2:4] = True
    assert occ[lesion].min() > 0  # hiding the lesion removes the evidence
    np.testing.assert_allclose(occ[~lesion], 0.0, atol=1e-6)  # hiding healthy voxels changes nothing
