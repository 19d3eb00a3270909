# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: nbutils
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (nbutils)
#     language: python
#     name: nbutils
#   nbutils:
#     minutes: 3.1
#     needs:
#     - '00'
# ---

# %% [markdown]
# # 05 · Alzheimer's disease vs. controls with 3D CNNs — baseline and patch individual filters
#
# Can a 3D convolutional network tell an Alzheimer's disease (AD) brain from a cognitively normal (CN)
# one on a T1-weighted scan, and does it look where the disease is? We train two networks on the
# synthetic cohort: the **baseline 3D CNN** of the review's AD protocol, and a **PIF network**
# (Eitel et al.) whose last layer has *patch individual filters*: after spatial normalisation a voxel
# shows the same brain region in every scan, so higher-level filters can be local. Evaluation is built so
# that it **cannot leak**: the split is by subject, the test set is fixed before any training, and every
# run checks that no subject sits in two partitions.
#
# **Learning objectives**
#
# - build subject-level, stratified train/test splits and k-fold cross-validation that cannot leak;
# - train a baseline 3D CNN and a PIF network with one Lightning path (early stopping, CSV logs, seeds);
# - report balanced accuracy, sensitivity, specificity, precision, F1, ROC-AUC as mean ± SD over folds;
# - explain a prediction with Grad-CAM and occlusion maps, and *measure* whether saliency sits in the
#   atrophied regions (against chance);
# - quantify uncertainty with Monte-Carlo dropout and check that uncertain predictions are more often wrong.
#
# | Prerequisites | |
# |---|---|
# | Notebooks | 00 (synthetic cohort), run first with the same profile: it generates the cohort this notebook opens |
# | Concepts | convolution, cross-entropy, cross-validation, overfitting |
# | Data | the synthetic cohort in MNI space (`<data_dir>/synthetic/<profile>-mni`) |
#
# **Expected CPU time** (2 cores): about 3 minutes with the `quick` profile, which trains on a
# **4 mm working grid** (40×48×40, area-averaged from the 2 mm cohort) with 3 folds; the `full`
# profile uses the standard 2 mm grid (80×96×80) and 5 folds; `smoke` runs in well under a minute.

# %% tags=["parameters"]
from nbutils.classify.settings import ClassifierSettings

reports_dir: str = "../reports"
data_dir: str = "../data"
seed: int = 0
profile: str = "quick"  # smoke | quick | full (set by `nbutils run --profile`)
cohort_seed: int = 0
dataset: str = ""  # folder written by `nbutils prep` (prep.tsv + demographics); empty: the synthetic cohort
# evaluation extras
mci_models: list[str] = ["baseline"]  # models also run on the harder MCI vs CN task ([] to skip)
mc_passes: int = 10  # Monte-Carlo dropout passes
occlusion_mask: int = 8  # occlusion cube edge, working-grid voxels
occlusion_subjects: int = 4  # AD test subjects whose occlusion maps are measured (fold-0 models)
classifier: ClassifierSettings = {}  # overrides of its defaults: grid, split, networks, training
ad_network: dict[str, object] = {"lr": 0.003, "weight_decay": 0.0, "lr_schedule": "onecycle", "patience": 100, "max_epochs": 25, "val_every": 5}  # on top of `classifier` (chosen on validation folds, see section 4)

# %%
from nbutils.params import validate_parameters
from nbutils.reporting import print_config

P = validate_parameters(globals())
print_config()
P

# %% [markdown]
# ## 1 · The cohort
#
# The synthetic cohort uses real MNI152 anatomy with known ground truth (notebook 00). AD subjects have a
# drawn *severity*: the hippocampus, amygdala, entorhinal and parahippocampal cortex shrink and the
# ventricles widen, on top of normal ageing. Its MNI images are already skull-stripped and z-scored within
# the brain. `load_bids` reads it like any BIDS dataset, so a preprocessed real dataset (e.g. ADNI in
# BIDS) drops in by changing the folder. **All numbers in this notebook come from the synthetic cohort.**

# %%
from pathlib import Path

import numpy as np
import pandas as pd

from nbutils.runs import open_dataset

data = open_dataset(P)
data.counts()

# %% [markdown]
# ## 2 · The task and the working grid
#
# Class 0 is CN, class 1 is AD, so "sensitivity" is the share of AD subjects found and "specificity" the
# share of controls cleared. The volumes are area-averaged to the working resolution (`working_resolution`
# mm) so that training fits a laptop CPU.
#
# The group difference below (mean AD minus mean CN intensity, coronal slice through the hippocampi)
# shows what there is to find: darker medial temporal lobes and larger (dark) ventricles in AD.

# %%
import matplotlib.pyplot as plt

from nbutils.anatomy import load_template, standard_grid
from nbutils.classify.volumes import load_task

task = load_task(data.table, {"CN": ["CN"], "AD": ["AD"]}, working_resolution=P.classifier.working_resolution,
                 resolution=data.resolution)
N_CLASSES = len(task.class_names)
print(f"{len(task.y)} subjects, classes {task.class_names} = {np.bincount(task.y).tolist()}, "
      f"working grid {task.shape}")

grid = standard_grid(data.resolution)
hippo_y = int(round(grid.voxel_coords([[0, -22, -14]])[0, 1] * data.resolution / P.classifier.working_resolution))
diff = task.images[task.y == 1, 0].mean(0) - task.images[task.y == 0, 0].mean(0)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
for ax, img, title in zip(axes, [task.images[task.y == 0, 0].mean(0), task.images[task.y == 1, 0].mean(0), diff],
                          ["mean CN", "mean AD", "AD − CN"], strict=True):
    ax.imshow(img[:, hippo_y, :].T, origin="lower", cmap="RdBu_r" if "−" in title else "gray",
              vmin=-np.abs(diff).max() if "−" in title else None, vmax=np.abs(diff).max() if "−" in title else None)
    ax.set_title(f"{title} (coronal, synthetic)")
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# ## 3 · A split that cannot leak
#
# `subject_split` first draws the **test subjects** (20 % of each class), once, before any model exists.
# Only the remaining subjects are dealt into `n_folds` stratified folds; fold *i* trains on the others and
# uses fold *i* for early stopping. `SubjectSplit.fold(i)` calls `assert_no_leakage` every time it hands
# out a fold, so a subject in two partitions stops the run.

# %%
from nbutils.classify.splits import assert_no_leakage, subject_split

split = subject_split(task.subjects, task.y, test_size=P.classifier.test_size, n_folds=P.classifier.n_folds, seed=P.seed)
assert_no_leakage(test=split.test, train=split.train_pool)
split.table().rename(columns=dict(enumerate(task.class_names)))

# %% [markdown]
# **Exercise.** Each training run keeps the weights of the epoch with the lowest loss on its own validation
# fold. Does that make the *test* numbers optimistic? Does it make the *validation* numbers optimistic?
#
# <details><summary>Solution</summary>
#
# The test subjects never influence training, stopping or model choice, so test numbers are unbiased
# estimates for this model recipe (with large uncertainty at this sample size). The validation numbers
# *are* slightly optimistic: the epoch was chosen because validation loss was lowest there. That is why the
# headline numbers below are the test-set ones.
# </details>

# %% [markdown]
# ## 4 · Two networks
#
# * **Baseline** (review, AD protocol 2): four blocks of 3×3×3 convolution + BatchNorm + ReLU + 2×2×2
#   max-pooling, global average pooling, a fully connected layer, dropout; L2 is Adam's weight decay.
# * **PIF network** (Eitel et al.): the same four Conv-BN-ReLU blocks (pooling after the first three),
#   then one **PIF layer**: the feature map is split into a grid of patches, each patch gets its *own*
#   Conv-BN-ReLU block (weights shared inside a patch, not across patches), and the head keeps every
#   patch's features in their own slots. It runs as one grouped convolution (patches stacked along the
#   channel axis).
#
#
# Both train with Adam on a **one-cycle schedule** peaking at 3·10⁻³ for a fixed 25 epochs, without L2 and
# without early stopping (`ad_network`, on top of the shared `classifier` settings); the weights of the
# validated epoch with the lowest validation loss are kept. Validation runs every 5th epoch (5, 10, …, 25:
# the last one always): it only picks the weights here, and re-estimating BatchNorm statistics and scoring
# the validation fold every epoch cost a third of the training time. With the shared recipe (constant 3·10⁻³, L2 10⁻³, early
# stopping after 5 epochs without improvement) one fold of the baseline stopped before it had learned,
# and its test balanced accuracy was 0.68 ± 0.18 over folds (quick, synthetic cohort). On the validation
# folds of the training pool (never the test subjects; seeds 0 and 10) the fixed schedule gave 0.83 ± 0.06
# (baseline) and 0.83 ± 0.04 (PIF): `benchmarks/results/tumour_settings_2026-12-01.md`, section 3.

# %%
import dataclasses

from nbutils.classify.models import classifier_factories, describe_classifiers

SETTINGS = ClassifierSettings.from_overrides({**dataclasses.asdict(P.classifier), **P.ad_network})
print({k: getattr(SETTINGS, k) for k in P.ad_network})
MODELS = classifier_factories(SETTINGS, task.shape, N_CLASSES)
describe_classifiers(MODELS)

# %% [markdown]
# ## 5 · Cross-validation of both networks
#
# Each fold trains with class-weighted cross-entropy, random left–right flips, Adam on the schedule above
# and a `CSVLogger`; the weights of the validated epoch with the lowest validation loss are kept.
# Each fold's model is then scored on its validation fold **and on the fixed test set**.

# %%
import tempfile

from nbutils.classify.experiment import cross_validate_models

SCRATCH = tempfile.TemporaryDirectory(prefix="05_ad_logs_")  # training logs; removed at the end
LOG_DIR = Path(SCRATCH.name)
cv = cross_validate_models(MODELS, task, split, SETTINGS, LOG_DIR / "ad", seed=P.seed)
folds = pd.concat([r.folds for r in cv.values()], ignore_index=True)
folds.round(3)

# %% [markdown]
# Mean ± SD over the folds, on the test set (headline) and on the validation folds. The SD is over
# fold models evaluated on the *same* test subjects: it measures training variability, not the sampling
# uncertainty of a small test set (see `n_test`).

# %%
from nbutils.classify.metrics import METRICS

summary = pd.DataFrame({(name, part): r.mean_sd(part) for name, r in cv.items() for part in ("test", "val")})
print(f"n_test = {len(split.test)} subjects; data: {data.source}")
CHANCE = 1 / N_CLASSES
accuracy = {}
for name, r in cv.items():
    h = r.headline()
    low = h["balanced_accuracy_mean"] - 2 * h["balanced_accuracy_sd"]
    accuracy[name] = {"mean_minus_2sd": low, "above_chance": bool(low > CHANCE)}
    print(f"{name}: balanced accuracy {h['balanced_accuracy_mean']:.3f} ± {h['balanced_accuracy_sd']:.3f}; "
          f"mean − 2 SD = {low:.3f} vs chance {CHANCE:.2f} (issue #16 target: above chance): "
          f"{'met' if low > CHANCE else 'NOT MET'}")
summary.loc[[*METRICS, "epochs_run"]]

# %% [markdown]
# ### Learning curves and confusion matrices
#
# Curves come from the CSV logs (one line per fold). Confusion matrices are summed over the fold models
# on the test set.

# %%
from nbutils.classify.plots import plot_confusion, plot_learning_curves
from nbutils.reporting import save_figure

STEM = "05_ad_classifier"
fig = plot_learning_curves({n: r.histories for n, r in cv.items()}, f"AD vs CN — {data.source}")
save_figure(fig, P.reports_dir, STEM, "learning_curves")
fig = plot_confusion({n: sum(r.confusion) for n, r in cv.items()}, task.class_names,
                     "test set, summed over folds (synthetic cohort)")
save_figure(fig, P.reports_dir, STEM, "confusion")

# %% [markdown]
# ## 6 · The harder task: MCI vs CN
#
# Mild cognitive impairment has milder atrophy (in the cohort, lower severity), so it should be harder.
# Same protocol, its own fixed test set.

# %%
mci_summary = None
if P.mci_models:
    mci_task = load_task(data.table, {"CN": ["CN"], "MCI": ["MCI"]}, working_resolution=P.classifier.working_resolution,
                         resolution=data.resolution, progress=False)
    mci_split = subject_split(mci_task.subjects, mci_task.y, test_size=P.classifier.test_size, n_folds=P.classifier.n_folds,
                              seed=P.seed)
    mci_cv = cross_validate_models({name: MODELS[name] for name in P.mci_models}, mci_task, mci_split,
                                   SETTINGS, LOG_DIR / "mci", seed=P.seed, prefix="mci_")
    mci_summary = pd.DataFrame({name: r.mean_sd("test") for name, r in mci_cv.items()})
    print(f"MCI vs CN, n_test = {len(mci_split.test)}; {data.source}")
mci_summary

# %% [markdown]
# ## 7 · Where do the networks look? Grad-CAM and occlusion
#
# **Grad-CAM** weights the last convolutional block's feature maps by the gradient of the AD logit and
# upsamples the result; **occlusion** masks cubes of the input and records how much the AD probability
# drops. We average Grad-CAM over the test subjects of each class and over the fold models, and show both
# maps for one AD test subject, over the MNI template.

# %%
from nbutils.classify.interpret import grad_cam, occlusion_map
from nbutils.classify.plots import plot_saliency_overlay
from nbutils.classify.volumes import resize_volumes

test_idx = cv["baseline"].test_index
x_test, y_test = task.images[test_idx], task.y[test_idx]
template = resize_volumes(np.asarray(load_template(grid).dataobj, np.float32)[None], task.shape)[0]
CAM_LAYER = "features.3.2"  # activation of the last conv block, before its pooling (both networks)

cams = {name: np.mean([grad_cam(m, x_test, CAM_LAYER, class_idx=1) for m in r.models], axis=0)
        for name, r in cv.items()}  # (n_test, *shape): AD evidence, averaged over fold models
cut = (task.shape[0] // 2 - 5, hippo_y, int(task.shape[2] * 0.4))
fig = plot_saliency_overlay(
    {f"{n} · mean over {c}": cams[n][y_test == k].mean(0) for n in cams for k, c in enumerate(task.class_names)},
    template, cut, "Grad-CAM for the AD class, averaged per true class (synthetic cohort)")
save_figure(fig, P.reports_dir, STEM, "gradcam_class_means")

# %%
ad_test = np.flatnonzero(y_test == 1)
one = ad_test[0]
occ = occlusion_map(cv["baseline"].models[0], x_test[one : one + 1], mask_size=P.occlusion_mask,
                    class_idx=1, overlap=0.0)[0]
fig = plot_saliency_overlay({"Grad-CAM (baseline)": cams["baseline"][one], "Grad-CAM (PIF)": cams["pif"][one],
                             "occlusion (baseline, fold 0)": occ},
                            x_test[one, 0], cut, f"single subject {task.subjects[test_idx[one]]} (AD, synthetic)")
save_figure(fig, P.reports_dir, STEM, "single_subject_saliency")

# %% [markdown]
# ### Is the saliency where the atrophy is?
#
# For every AD test subject we upsample its Grad-CAM map (and, for the first `occlusion_subjects` AD test
# subjects, the fold-0 models' occlusion maps) to the cohort grid and measure the share of the
# (positive) saliency mass inside the pre-specified **AD target regions** (`nbutils.anatomy.AD_TARGET_PATTERN`:
# hippocampus, amygdala, entorhinal area, inferior lateral and lateral ventricles — the same set the
# generator's truth and notebook 04's hit rate use), with **that subject's own atlas labels** (the cohort's
# ground truth). The chance level is the share of brain (labelled) voxels those regions occupy: a map that
# ignored anatomy would score about that. The synthetic AD effect is not only medial-temporal: the generator
# also thins the cortex in the AD signature (temporal, inferior parietal, precuneus, posterior cingulate;
# Dickerson et al. 2009), so we measure the share on the cortical labels too. The share of saliency that
# falls **outside the brain** (not counted in the mass) is reported beside it. There is no target here:
# where the networks look is a finding.

# %%
import nibabel as nib

from nbutils.anatomy import AD_TARGET_PATTERN, load_atlas
from nbutils.classify.interpret import saliency_mass
from nbutils.classify.volumes import CORTEX_REGIONS, derivative_path, upsample_maps

atlas = load_atlas("neuromorphometrics", grid)
region_sets = {"AD target regions": atlas.index_of(AD_TARGET_PATTERN), "cortex": atlas.index_of(CORTEX_REGIONS)}
names = atlas.labels.set_index("index")["name"]
print("AD target regions:", ", ".join(names.loc[region_sets["AD target regions"]]))
print(f"cortex: {len(region_sets['cortex'])} labels")
ad_subjects = [task.subjects[test_idx[i]] for i in ad_test]
if data.kind == "synthetic":  # each subject's own atlas labels: the cohort's ground truth, read once
    subject_labels = [np.asarray(nib.load(derivative_path(data.root, s, "atlas-neuromorphometrics_dseg.nii.gz")).dataobj)
                      for s in ad_subjects]
else:  # a preprocessed dataset has no per-subject truth: the MNI atlas stands in for every subject
    print(f"no per-subject atlas labels in the {data.source}: the MNI atlas is used for every subject")
    subject_labels = [atlas.data().astype(np.int32)] * len(ad_subjects)
occluded = ad_test[: P.occlusion_subjects]
occ_maps = {name: occlusion_map(r.models[0], x_test[occluded], mask_size=P.occlusion_mask, class_idx=1, overlap=0.0)
            for name, r in cv.items()}  # fold-0 models, the first AD test subjects
rows = []
for method, per_model, which in (("Grad-CAM", cams, ad_test), ("occlusion", occ_maps, None)):
    for name, maps in per_model.items():
        chosen = maps[which] if which is not None else maps
        full = upsample_maps(chosen, grid.shape)
        for saliency, subject, labels in zip(full, ad_subjects, subject_labels, strict=False):
            for where, idx in region_sets.items():
                rows.append({"method": method, "model": name, "subject": subject, "regions": where,
                             **saliency_mass(saliency, labels, idx)})
by_region = pd.DataFrame(rows)
grad = by_region[by_region["method"] == "Grad-CAM"]
mass = grad[grad["regions"] == "AD target regions"]
cortex_mass = grad[grad["regions"] == "cortex"]
target_rows = by_region[by_region["regions"] == "AD target regions"]
for (method, name), g in target_rows.groupby(["method", "model"]):
    print(f"{method} ({name}): mass in the AD target regions {g['mass'].mean():.3f} vs chance {g['chance'].mean():.3f} "
          f"(ratio {g['mass'].mean() / g['chance'].mean():.2f}); {g['outside_brain'].mean():.1%} of the saliency lies "
          f"outside the brain (a uniform map: {g['outside_brain_chance'].mean():.1%}); {len(g)} AD test subjects; "
          f"{data.source}")
by_region.groupby(["method", "regions", "model"])[["mass", "chance", "ratio", "outside_brain"]].agg(["mean", "std"]).round(3)

# %% [markdown]
# The two methods can disagree. **Occlusion** changes the input and measures the effect on the AD
# probability. **Grad-CAM** weights each feature map by its gradient averaged over all positions, which can
# credit a feature wherever it is active even when it mattered only in one place (PIF's filters differ patch
# by patch). When they disagree, occlusion is the direct test. Its cubes are large, so its maps are coarse.
#
# **Exercise.** A ratio (mass / chance) of 1 means no preference. Why can a network classify well and
# still have a ratio near 1 here?
#
# <details><summary>Solution</summary>
#
# Grad-CAM at the last block has a coarse resolution (a few voxels per axis), so mass spreads to
# neighbouring tissue; and the network may use correlated global signs (ventricle size, overall atrophy
# with age) that lie outside the listed regions. A high accuracy shows *that* there is signal, not *where*
# the network found it — which is why we measure it.
# </details>
#
# ## 8 · How sure is the network? Monte-Carlo dropout
#
# At test time we keep dropout **on** (batch norm stays in eval mode, using its training statistics) and
# run `mc_passes` stochastic passes per subject. The predictive entropy of the mean prediction measures
# uncertainty. We pool the test predictions of all fold models and bin them by entropy: if the uncertainty
# is useful, the error rate rises from the low- to the high-entropy bin.

# %%
from nbutils.classify.interpret import error_by_uncertainty, mc_dropout_predict
from nbutils.classify.plots import plot_error_by_uncertainty

unc_bins, unc_rows = {}, []
for name, r in cv.items():
    for f, m in enumerate(r.models):
        mc = mc_dropout_predict(m, x_test, n_passes=P.mc_passes, seed=P.seed + f)
        unc_rows += [{"model": name, "fold": f, "subject": task.subjects[test_idx[i]], "entropy": mc["entropy"][i],
                      "correct": bool(mc["probs"][i].argmax() == y_test[i])} for i in range(len(y_test))]
unc = pd.DataFrame(unc_rows)
for name, g in unc.groupby("model"):
    unc_bins[name] = error_by_uncertainty(g["entropy"].to_numpy(), g["correct"].to_numpy(), n_bins=3)
fig = plot_error_by_uncertainty(unc_bins, f"MC dropout ({P.mc_passes} passes), test set, synthetic cohort")
save_figure(fig, P.reports_dir, STEM, "error_vs_uncertainty")
pd.concat(unc_bins, names=["model"]).round(3)

# %% [markdown]
# ## 9 · Headline numbers

# %%
from nbutils.reporting import kernel_seconds, write_metrics

metrics = {}
for name, r in cv.items():
    m = mass[mass.model == name]
    occ = target_rows[(target_rows.method == "occlusion") & (target_rows.model == name)]
    metrics[name] = {**r.headline(), **accuracy[name], "saliency_mass_in_ad_target_regions": float(m["mass"].mean()),
                     "saliency_outside_brain": float(m["outside_brain"].mean()),
                     "occlusion_mass_in_ad_target_regions": float(occ["mass"].mean()),
                     "occlusion_outside_brain": float(occ["outside_brain"].mean()),
                     "outside_brain_chance": float(m["outside_brain_chance"].mean()),
                     "saliency_mass_in_cortex": float(cortex_mass.loc[cortex_mass.model == name, "mass"].mean()),
                     "early_stop_epoch_mean": float(r.summary().loc["epochs_run", "mean"])}
metrics["saliency_mass_in_ad_target_regions"] = metrics["baseline"]["saliency_mass_in_ad_target_regions"]
metrics["saliency_chance_level_ad_target_regions"] = float(mass["chance"].mean())
metrics["saliency_chance_level_cortex"] = float(cortex_mass["chance"].mean())
metrics["saliency_method"] = ("Grad-CAM (AD class, last conv block activation before pooling), AD test subjects, "
                              f"mean over fold models; occlusion (cube {P.occlusion_mask} working voxels, fold-0 "
                              f"models) on {len(occluded)} AD test subjects")
metrics["chance_balanced_accuracy"] = CHANCE
metrics["target"] = {"rule": "mean - 2 SD of test balanced accuracy over folds > chance, both models",
                     "met": bool(all(a["above_chance"] for a in accuracy.values()))}
if mci_summary is not None:
    metrics["mci_vs_cn"] = {name: r.headline() for name, r in mci_cv.items()}
metrics["n_folds"] = P.classifier.n_folds
metrics["working_resolution_mm"] = P.classifier.working_resolution
metrics["seconds"] = kernel_seconds()
write_metrics(P.reports_dir, STEM, metrics, data_source=data.source)
SCRATCH.cleanup()  # the temporary training logs go; everything kept is under reports/
pd.DataFrame({k: v for k, v in metrics.items() if k in cv}).round(3)

# %% [markdown]
# ## Summary
#
# - Subject-level, stratified splits with a test set fixed before training, k-fold cross-validation
#   inside the training subjects, and a leakage assertion in every run.
# - Baseline 3D CNN (review protocol) and PIF network trained through one Lightning path; balanced
#   accuracy (headline), sensitivity, specificity, precision, F1 and ROC-AUC as mean ± SD over folds.
# - The headline check: for both networks, mean − 2 SD of the test balanced accuracy over folds lies above
#   chance (0.5), printed as met / not met.
# - Grad-CAM / occlusion maps per class and per subject, with the saliency share in the pre-specified AD
#   target regions (after the generator's realistic atrophy) compared with chance, and the share of
#   saliency outside the brain reported beside it; MC-dropout entropy against the error rate.
# - The synthetic cohort is small and its disease effect is known; numbers here say whether the pipeline
#   works, not how well a model would do on ADNI.
#
# ## What to read next
#
# Notebook **06** applies the same machinery to four-class tumour classification (plus the pitfalls of
# 2D slice datasets); notebook **07** repeats the PIF paper's sample-size experiment.
#
# ## References
#
# - Review of CNNs for MRI (`seeds/002_…`): AD classification protocol (3D CNN, 4 conv blocks 3×3×3 +
#   BN + ReLU + max-pool, dropout 0.5, L2, Adam, stratified split, cross-validation, sensitivity /
#   specificity / accuracy / AUC, saliency maps); Monte-Carlo dropout; Grad-CAM.
# - Eitel F., Albrecht J. P., Paul F., Ritter K. (2019) Harnessing spatial MRI normalization: patch
#   individual filter layers for CNNs (`seeds/003_…`).
# - Wen J. et al. (2020) Convolutional neural networks for classification of Alzheimer's disease:
#   overview and reproducible evaluation. *Medical Image Analysis* 63:101694 (ClinicaDL; data leakage).
# - Selvaraju R. R. et al. (2017) Grad-CAM. *ICCV*. Zeiler M., Fergus R. (2014) occlusion sensitivity.
# - Gal Y., Ghahramani Z. (2016) Dropout as a Bayesian approximation. *ICML*.
# - MONAI `monai.visualize` and PyTorch Lightning documentation.
