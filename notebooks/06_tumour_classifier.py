# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (nbutils)
#     language: python
#     name: nbutils
# ---

# %% [markdown]
# # 06 · Brain-tumour classification: four classes in 3D, and the traps of 2D slice datasets
#
# Glioma, meningioma, pituitary tumour or no tumour? The review's tumour-classification protocols report
# accuracies near 99 % on public 2D slice collections. We first train the same two 3D networks as in
# notebook 05 (baseline and PIF) on whole synthetic volumes with a leakage-safe protocol. Then we build the
# **2D path** used for the public slice datasets (a folder of PNG/JPG slices per class) and show the two
# traps that inflate their numbers: **duplicated images** and **slices of one patient on both sides of the
# split**.
#
# **Learning objectives**
#
# - run a four-class 3D CNN evaluation: balanced accuracy, macro ROC-AUC, per-class precision / recall /
#   specificity / F1, confusion matrices, learning curves;
# - check with Grad-CAM whether the network looks at the tumour (saliency mass inside the tumour vs chance);
# - load a slice dataset, find exact and near duplicates (perceptual hashing), split by patient, and see
#   what happens when no patient IDs exist.
#
# | Prerequisites | |
# |---|---|
# | Notebooks | 05 (splits, models and metrics are explained there) |
# | Concepts | multi-class metrics (macro averages, one-vs-rest AUC) |
# | Data | the synthetic cohort in MNI space; slices exported from it (no public dataset is downloaded) |
#
# **Expected CPU time** (2 cores): well under a minute with the `quick` profile (4 mm working grid, 3 folds);
# `full` uses the standard 2 mm grid and 5 folds.

# %% tags=["parameters"]
from nbutils.classify.settings import ClassifierSettings

reports_dir: str = "../reports"
data_dir: str = "../data"
seed: int = 0
profile: str = "quick"  # smoke | quick | full (set by `nbutils run --profile`)
cohort_seed: int = 0
dataset: str = ""  # folder written by `nbutils prep` (prep.tsv + demographics); empty: the synthetic cohort
n_no_tumour: int | None = None  # CN subjects used as no-tumour class; None means as many as the largest tumour class
# 2D slice path
slice_size: int = 64  # pixels (square) the slices are resized to
slices_per_subject: int = 5
slice_spacing: int = 2  # voxels between exported axial slices
dup_max_distance: int = 4  # perceptual-hash Hamming distance counted as a near duplicate
classifier: ClassifierSettings = {}  # overrides of its defaults: grid, split, networks, training

# %%
from nbutils.params import validate_parameters
from nbutils.reporting import print_config

P = validate_parameters(globals())
print_config()
P

# %% [markdown]
# ## 1 · The cohort and the four classes
#
# Tumour subjects of the synthetic cohort carry one tumour each (glioma in the white matter, meningioma on
# the surface, pituitary at the sella) with a ground-truth mask. "No tumour" are CN subjects, as many as the
# largest tumour class (so the classes are balanced). **All numbers here come from the synthetic cohort.**

# %%
from pathlib import Path

import numpy as np
import pandas as pd

from nbutils.runs import open_dataset

data = open_dataset(P)
data.counts()

# %%
from nbutils.classify.volumes import load_task

TUMOURS = ["glioma", "meningioma", "pituitary"]
n_no = P.n_no_tumour or int(data.table["diagnosis"].isin(TUMOURS).groupby(data.table["diagnosis"]).sum().max())
classes = {"no_tumour": ["CN"], **{t: [t] for t in TUMOURS}}
task = load_task(data.table, classes, working_resolution=P.classifier.working_resolution, resolution=data.resolution,
                 max_per_class={"no_tumour": n_no}, seed=P.seed)
N_CLASSES = len(task.class_names)
print(f"{len(task.y)} subjects, {dict(zip(task.class_names, np.bincount(task.y).tolist(), strict=True))}, grid {task.shape}")

# %% [markdown]
# ## 2 · Split, models, cross-validation
#
# Same protocol as notebook 05: a stratified test set of subjects fixed first, `n_folds` folds inside the
# rest, a leakage check in every run, early stopping on the validation fold.

# %%
from nbutils.classify.splits import subject_split

split = subject_split(task.subjects, task.y, test_size=P.classifier.test_size, n_folds=P.classifier.n_folds, seed=P.seed)
split.table().rename(columns=dict(enumerate(task.class_names)))

# %%
from nbutils.classify.models import classifier_factories, describe_classifiers

MODELS = classifier_factories(P.classifier, task.shape, N_CLASSES)
describe_classifiers(MODELS)

# %%
import tempfile

from nbutils.classify.experiment import cross_validate_models

SCRATCH = tempfile.TemporaryDirectory(prefix="06_tumour_logs_")  # training logs; removed at the end
LOG_DIR = Path(SCRATCH.name)
cv = cross_validate_models(MODELS, task, split, P.classifier, LOG_DIR / "3d", seed=P.seed)
pd.concat([r.folds for r in cv.values()], ignore_index=True).round(3)

# %% [markdown]
# Mean ± SD over folds on the fixed test set. For four classes, sensitivity / specificity / precision / F1
# are per-class one-vs-rest values averaged over the classes (macro), and ROC-AUC is the macro one-vs-rest
# AUC. Chance balanced accuracy is 0.25.

# %%
from nbutils.classify.metrics import METRICS

print(f"n_test = {len(split.test)} subjects; {data.source}")
for name, r in cv.items():
    h = r.headline()
    verdict = "above" if h["balanced_accuracy_mean"] - h["balanced_accuracy_sd"] > 1 / N_CLASSES else "not clearly above"
    print(f"{name}: balanced accuracy {h['balanced_accuracy_mean']:.3f} ± {h['balanced_accuracy_sd']:.3f} is "
          f"{verdict} chance ({1 / N_CLASSES:.2f}) with {len(split.train_pool)} training subjects")
pd.DataFrame({name: r.mean_sd() for name, r in cv.items()}).loc[[*METRICS, "epochs_run"]]

# %% [markdown]
# With a handful of subjects per class, a network trained from scratch on whole volumes may not get past
# chance in the `quick` profile: it has to *find* a small lesion somewhere in the brain from a few
# examples. The 2D path below is easier by construction (every exported tumour slice cuts through the
# tumour). The `full` profile (more subjects, 2 mm, longer training) is the fair test.

# %%
from nbutils.classify.plots import plot_confusion, plot_learning_curves
from nbutils.reporting import save_figure

STEM = "06_tumour_classifier"
fig = plot_confusion({n: sum(r.confusion) for n, r in cv.items()}, task.class_names,
                     "test set, summed over folds (synthetic cohort)")
save_figure(fig, P.reports_dir, STEM, "confusion")
fig = plot_learning_curves({n: r.histories for n, r in cv.items()}, f"tumour, 4 classes — {data.source}")
save_figure(fig, P.reports_dir, STEM, "learning_curves")

# %% [markdown]
# **Exercise.** Which pair of classes does the confusion matrix mix up most, and is that plausible from
# where the tumours sit?
#
# <details><summary>Solution</summary>
#
# Read it off the matrix above (it depends on the run). Small tumours are the hard ones: pituitary tumours
# are small and sit at the sella, so at a coarse working grid they can look like "no tumour"; gliomas and
# meningiomas are larger but meningiomas near the cortex can resemble superficial gliomas.
# </details>
#
# ## 3 · Does the network look at the tumour?
#
# For each tumour test subject: Grad-CAM for its *true* class (mean over fold models), upsampled to the
# cohort grid, and the share of its mass inside the ground-truth tumour mask, against the share of brain
# the tumour occupies (chance).

# %%
import nibabel as nib

from nbutils.anatomy import load_template, standard_grid
from nbutils.classify.interpret import grad_cam, saliency_mass
from nbutils.classify.plots import plot_saliency_overlay
from nbutils.classify.volumes import derivative_path, resize_volumes, upsample_maps

grid = standard_grid(data.resolution)
test_idx = cv["baseline"].test_index
x_test, y_test = task.images[test_idx], task.y[test_idx]
rows, examples = [], {}
tumour_test = np.flatnonzero(y_test > 0)
if data.kind != "synthetic":  # tumour masks: the generator's ground truth only (BraTS seg: not yet here)
    print(f"SKIPPED — saliency inside the tumour needs the synthetic ground-truth masks; the {data.source} "
          "has none")
    tumour_test = tumour_test[:0]
for name, r in cv.items():
    cams = np.zeros((len(tumour_test), *task.shape), np.float32)
    for c in np.unique(y_test[tumour_test]):  # Grad-CAM for the true class, one call per class
        sel = y_test[tumour_test] == c
        cams[sel] = np.mean([grad_cam(m, x_test[tumour_test[sel]], "features.3.2", class_idx=int(c))
                             for m in r.models], axis=0)
    for cam, k in zip(cams, tumour_test, strict=True):
        subject = task.subjects[test_idx[k]]
        seg = np.asarray(nib.load(derivative_path(data.root, subject, "desc-tumour_dseg.nii.gz")).dataobj)
        brain = np.asarray(nib.load(derivative_path(data.root, subject, "desc-brain_mask.nii.gz")).dataobj) > 0
        labels = np.where(seg > 0, 2, brain.astype(int))
        rows.append({"model": name, "subject": subject, "class": task.class_names[y_test[k]],
                     **saliency_mass(upsample_maps(cam[None], grid.shape)[0], labels, [2], brain | (seg > 0))})
        if name == "baseline" and task.class_names[y_test[k]] not in examples:
            examples[task.class_names[y_test[k]]] = (k, cam, seg)
tumour_mass = pd.DataFrame(rows, columns=["model", "subject", "class", "mass", "chance", "ratio"])
tumour_mass.groupby(["model", "class"])[["mass", "chance", "ratio"]].mean().round(3)

# %%
template = resize_volumes(np.asarray(load_template(grid).dataobj, np.float32)[None], task.shape)[0]
maps, cuts = {}, {}
for cls, (k, cam, seg) in examples.items():
    key = f"{cls} ({task.subjects[test_idx[k]]})"
    maps[key] = cam
    centre = np.argwhere(seg > 0).mean(0) * data.resolution / P.classifier.working_resolution  # tumour centre, working grid
    cuts[key] = [int(c) for c in centre]
if maps:
    fig = plot_saliency_overlay(maps, template, cuts, "Grad-CAM (baseline) for the true class, cut through the tumour")
    save_figure(fig, P.reports_dir, STEM, "gradcam_tumours")
else:
    print("SKIPPED — no tumour ground truth to cut through")

# %% [markdown]
# ## 4 · The 2D path: slice datasets, duplicates and patient-level splits
#
# Public tumour collections (Figshare / Kaggle "Brain Tumor MRI") are folders of 2D slices per class,
# often `Training/<class>/*.jpg`. We **export axial slices from the synthetic cohort** in exactly that
# layout (5 slices per subject, through the tumour for tumour subjects), with the subject id in the file
# name — then treat the folder like a downloaded dataset. To show what the duplicate report looks like we
# **plant two duplicates**: an exact copy of a glioma slice filed under meningioma, and a re-saved,
# slightly brighter copy of a pituitary slice under a new name. (The synthetic export has none by itself.)

# %%
import shutil

from PIL import Image

from nbutils.classify.slices2d import export_slices
from nbutils.classify.volumes import load_volumes

slices_root = Path(SCRATCH.name) / "slices" / "Training"
full = load_volumes(task.table["path"].tolist(), progress=False)  # cohort grid, not the working grid
centres = []
for subject in task.subjects:  # through the tumour where the synthetic truth says where it is
    seg = (np.asarray(nib.load(derivative_path(data.root, subject, "desc-tumour_dseg.nii.gz")).dataobj)
           if data.kind == "synthetic" else np.zeros(1))
    centres.append(int(np.argwhere(seg > 0)[:, 2].mean()) if seg.any() else full.shape[-1] // 2)
exported = export_slices(full, task.subjects, task.table["label"].tolist(), slices_root,
                         n_slices=P.slices_per_subject, spacing=P.slice_spacing, centres=centres)
glioma_slice = Path(exported.loc[exported.label == "glioma", "path"].iloc[0])
shutil.copy(glioma_slice, slices_root / "meningioma" / "sub-dup01_z000.png")  # planted exact duplicate
pit = Path(exported.loc[exported.label == "pituitary", "path"].iloc[0])
brighter = np.clip(np.asarray(Image.open(pit), np.int16) + 2, 0, 255).astype(np.uint8)
Image.fromarray(brighter).save(slices_root / "pituitary" / "sub-dup02_z000.png")  # planted near duplicate
print(f"{len(exported)} slices exported + 2 planted duplicates -> {slices_root}")

# %%
from nbutils.classify.slices2d import find_duplicates, load_slice_folder

PATIENT = r"^(?P<patient>sub-[0-9A-Za-z]+)_"
slices = load_slice_folder(slices_root.parent, patient_pattern=PATIENT)
pairs = find_duplicates(slices, max_distance=P.dup_max_distance)
print(f"{len(slices)} slices, {slices.patient_id.nunique()} patients; "
      f"{(pairs.kind == 'exact').sum()} exact and {(pairs.kind == 'near').sum()} near duplicate pairs, "
      f"{(~pairs.same_label).sum()} of them across classes")
pairs.assign(path_i=pairs.path_i.str.split("/").str[-2:].str.join("/"),
             path_j=pairs.path_j.str.split("/").str[-2:].str.join("/"))

# %% [markdown]
# Neighbouring slices of one patient can also be near duplicates (they look alike); those pairs are
# harmless *if* the split is by patient, so we only act on pairs **between different patients**: keep one
# slice of each such cluster and drop clusters whose copies carry different labels. Then we split **by
# patient**, stratified by class.

# %%
from nbutils.classify.slices2d import drop_duplicates, load_slice_images, split_slices

pid = slices["patient_id"].to_numpy()
between = pairs[pid[pairs["i"].to_numpy()] != pid[pairs["j"].to_numpy()]]
clean, dropped = drop_duplicates(slices, between)
print(f"dropped {len(dropped)} slices:", dropped["reason"].value_counts().to_dict())
CLASS_INDEX = {c: k for k, c in enumerate(task.class_names)}
y2d = clean["label"].map(CLASS_INDEX).to_numpy()
images2d = load_slice_images(clean["path"].tolist(), size=(P.slice_size, P.slice_size), progress=False)
split2d, groups = split_slices(clean, test_size=P.classifier.test_size, n_folds=P.classifier.n_folds, seed=P.seed)

from nbutils.classify.experiment import cross_validate, fit_options
from nbutils.classify.models import BaselineCNN


def make_2d():
    settings = P.classifier
    return BaselineCNN(n_classes=N_CLASSES, channels=settings.channels[:3], hidden=settings.hidden,
                       dropout=settings.dropout, spatial_dims=2)


FIT2D = {**fit_options(P.classifier, N_CLASSES), "flip_axes": (1,)}  # left-right is the image's column axis
cv2d = cross_validate("baseline2d", make_2d, images2d, y2d, groups, split2d, log_dir=LOG_DIR / "2d",
                      seed=P.seed, **FIT2D)
print(f"patient-level split: {len(split2d.test)} test patients; {data.source} (exported slices)")
cv2d.mean_sd().loc[METRICS].to_frame("2D baseline, patient split")

# %% [markdown]
# ### Without patient IDs
#
# Many public slice datasets have **no patient IDs**. `split_slices` then warns and can only keep duplicate
# clusters together; different slices of one patient can still land on both sides. We simulate that by
# reading the same folder without the patient pattern, and count how often a test slice has a sibling
# slice (same patient, which we secretly know) in the training folds.

# %%
import warnings

from nbutils.classify.splits import assert_no_leakage

slices_noid = load_slice_folder(slices_root.parent)  # no patient_pattern: no patient IDs
pairs_noid = find_duplicates(slices_noid, max_distance=P.dup_max_distance, progress=False)
clean_noid, _ = drop_duplicates(slices_noid, pairs_noid)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    split_noid, groups_noid = split_slices(clean_noid, pairs_noid.iloc[:0], test_size=P.classifier.test_size,
                                           n_folds=P.classifier.n_folds, seed=P.seed)
for w in caught:
    print(f"{w.category.__name__}: {w.message}")
true_patient = clean_noid["path"].str.extract(r"/(sub-[0-9A-Za-z]+)_")[0].to_numpy()
in_test = np.isin(groups_noid, split_noid.test)
leaky = np.isin(true_patient[in_test], true_patient[~in_test]).mean()
print(f"{leaky:.0%} of test slices have a slice of the same patient in the training folds")
try:
    assert_no_leakage(train=true_patient[~in_test], test=true_patient[in_test])
except AssertionError as err:
    print("leakage check by (hidden) patient:", str(err)[:160], "...")

# %%
y_noid = clean_noid["label"].map(CLASS_INDEX).to_numpy()
images_noid = load_slice_images(clean_noid["path"].tolist(), size=(P.slice_size, P.slice_size), progress=False)
cv_noid = cross_validate("baseline2d_noid", make_2d, images_noid, y_noid, groups_noid, split_noid,
                         log_dir=LOG_DIR / "2d_noid", seed=P.seed, **FIT2D)
pd.DataFrame({"patient split": cv2d.mean_sd(), "slice split (no IDs, leaky)": cv_noid.mean_sd()}).loc[METRICS]

# %% [markdown]
# **Exercise.** The leaky split's numbers may or may not be higher here. Why is it still the wrong number
# to report, even if it happens to be lower?
#
# <details><summary>Solution</summary>
#
# Because it does not estimate what we want — performance on *new patients*. With sibling slices in
# training the model can match a test slice to its neighbour instead of recognising the tumour type. On
# large public sets this inflates accuracy; on a tiny synthetic set the noise can go either way. The
# remedy is the split, not the luck of one run.
# </details>
#
# ## 5 · Headline numbers

# %%
from nbutils.reporting import kernel_seconds, write_metrics

metrics = {name: {**r.headline(), "early_stop_epoch_mean": float(r.summary().loc["epochs_run", "mean"]),
                  "saliency_mass_in_tumour": float(tumour_mass.loc[tumour_mass.model == name, "mass"].mean())}
           for name, r in cv.items()}
metrics["saliency_chance_level_tumour"] = float(tumour_mass["chance"].mean())
metrics["auc"] = "macro one-vs-rest over 4 classes"
metrics["classes"] = task.class_names
metrics["slices2d"] = {
    "patient_split": cv2d.headline(),
    "slice_split_no_patient_ids": cv_noid.headline(),
    "test_slices_with_patient_in_training_no_ids": float(leaky),
    "exact_duplicate_pairs": int((pairs.kind == "exact").sum()),
    "near_duplicate_pairs": int((pairs.kind == "near").sum()),
    "planted_duplicates": 2,
    "note": "slices exported from the synthetic cohort, 2 duplicates planted",
}
metrics["n_folds"] = P.classifier.n_folds
metrics["working_resolution_mm"] = P.classifier.working_resolution
metrics["seconds"] = kernel_seconds()
write_metrics(P.reports_dir, STEM, metrics, data_source=data.source)
SCRATCH.cleanup()  # the temporary training logs go; everything kept is under reports/
pd.DataFrame({k: metrics[k] for k in cv}).round(3)

# %% [markdown]
# ## Summary
#
# - Four-class tumour classification on whole synthetic volumes with the leakage-safe protocol of
#   notebook 05; macro metrics, confusion matrices, learning curves.
# - Grad-CAM mass inside the true tumour against its chance level tells whether the network looks at
#   the lesion.
# - For 2D slice collections: detect exact and near duplicates (perceptual hash) *before* training, split
#   by patient, and say loudly when patient IDs are missing — slice-level splits estimate the wrong thing.
#
# ## What to read next
#
# Notebook **07** asks whether PIF layers help most when data are scarce (the PIF paper's experiment).
#
# ## References
#
# - Review of CNNs for MRI (`seeds/002_…`): brain-tumour four-class protocols (glioma / meningioma /
#   pituitary / no tumour; accuracy, precision, recall, specificity, F1, confusion matrix, learning curves),
#   curation and de-duplication by hashing, Grad-CAM.
# - Eitel F. et al. (2019) Patch individual filter layers (`seeds/003_…`).
# - Wen J. et al. (2020) CNNs for AD classification: data leakage and reproducible evaluation
#   (the same leakage logic applies to slices).
# - Zauner P.classifier. (2010) Implementation and benchmarking of perceptual image hash functions (pHash);
#   the `imagehash` library.
