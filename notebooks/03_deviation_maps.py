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
#     minutes: 3.5
#     needs:
#     - '02'
# ---

# %% [markdown]
# # 03 · Deviation maps: calibration, tumour detection and stability
#
# The autoencoder of notebook 02 reconstructs a scan as a healthy brain would look. Here we turn the
# reconstruction error into **calibrated deviation maps** — voxel-wise z-scores against held-out
# healthy people — and ask three honest questions:
#
# 1. *Calibration*: on healthy people the model never saw, do 5 % of voxels exceed |z| > 1.96?
# 2. *Detection*: does it find tumours better than methods **without** a network? (Meissen et al.
#    showed that plain intensity thresholding beats many autoencoders — so we always report it.)
# 3. *Stability*: retrained on other healthy reference scans with other seeds, do the regional
#    profiles stay the same?
#
# **Learning objectives**
#
# - compute residual z-maps against a healthy reference and check their calibration (QQ plot);
# - fix thresholds on healthy data at a voxel false-positive rate — never on lesions;
# - evaluate with AUPRC and Dice (not voxel AUROC) against two baselines, per tumour class and size;
# - explore maps interactively with a slice widget.
#
# | Prerequisites | |
# |---|---|
# | Notebooks | 02 (trains the model and saves it with its normative statistics) |
# | Concepts | z-scores, false-positive rate, precision–recall, Dice |
# | Data | synthetic cohort in MNI space with ground-truth tumour masks, or a folder written by `nbutils prep` (parameter `dataset`; lesion sections need BraTS `seg` labels) |
#
# **Expected CPU time** (2 cores): about 4 minutes with the `quick` profile (the stability retrains
# take most of it), about a minute with `smoke`.

# %% tags=["parameters"]
reports_dir: str = "../reports"
data_dir: str = "../data"
seed: int = 0
profile: str = "quick"  # smoke | quick | full (set by `nbutils run --profile`)
cohort_seed: int = 0
dataset: str = ""  # folder written by `nbutils prep` (prep.tsv + demographics); empty: the synthetic cohort
stability_seeds: list[int] = [1, 2, 3]  # retrained ensembles, at least 2, all with the same budget
stability_epochs: int = 10
stability_minutes: float | None = 2.0  # wall-clock safety cap per member of each replicate
retrain: bool = False  # retrain the replicates even if ones built from the same scans, settings and seeds are saved
explorer_subjects: int = 4

# %%
from nbutils.params import validate_parameters
from nbutils.reporting import print_config

P = validate_parameters(globals())
print_config()
P

# %% [markdown]
# ## 1 · Load the model, its normative statistics and the held-out subjects
#
# Everything comes from the checkpoint folder written by notebook 02; the split table says which
# subjects the model never saw (`split == "test"`).

# %%

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from nbutils.normative.data import load_volumes
from nbutils.normative.pipeline import atlas_arrays, covariates_of, ensemble_z, member_z_maps
from nbutils.reporting import save_figure
from nbutils.runs import open_dataset, open_normative_model

STEM = "03_deviation_maps"
data = open_dataset(P)
run = open_normative_model(P)
model, stats, subjects = run.model, run.stats, run.subjects
test = run.split("test")
TUMOURS = ["glioma", "meningioma", "pituitary"]
print(f"held-out test subjects of the {data.source}:", test["diagnosis"].value_counts().to_dict())
print("healthy thresholds (|z| after post-processing):", stats.thresholds)

# %%
test_volumes = load_volumes(test["path"])
cov = covariates_of(test)  # age, sex, site: each scan is compared with healthy people like them
recon, member_z = member_z_maps(model, stats, test_volumes, cov)
z, z_spread = ensemble_z(member_z, stats.mask), member_z.std(axis=0)
labels, _ = atlas_arrays(stats.atlas, stats.resolution)
is_cn = (test["diagnosis"] == "CN").to_numpy()
is_tumour = test["diagnosis"].isin(TUMOURS).to_numpy()

# %% [markdown]
# ## 2 · Calibration on held-out healthy subjects
#
# If the z-maps are calibrated, a healthy subject's voxels follow a standard normal distribution:
# about 5 % have |z| > 1.96 and the QQ plot follows the diagonal (PCNtoolkit reports the same
# checks). The residual mean and SD maps depend on age, sex and site; they were estimated on the
# out-of-fold residuals of every healthy reference subject, then scaled by one factor so that
# leave-one-out reference maps hit 5 % — a healthy-data calibration step. The test subjects below took
# no part in either. Calibration must hold **in every age tertile and at every site**, not only on
# average: an unconditional reference makes the old look deviant and the young look "super-normal".

# %%
import warnings

from IPython.display import display

from nbutils.normative.deviation import frac_abs_z_above
from nbutils.normative.evaluate import calibration_by_group
from nbutils.normative.plots import plot_qq

share = frac_abs_z_above(z[is_cn], stats.mask)
calib = pd.DataFrame({"participant_id": test.loc[is_cn, "participant_id"], "share_abs_z_gt_1.96": share})
with warnings.catch_warnings():  # the unconditional reference, on purpose, for comparison
    warnings.simplefilter("ignore")
    _, z_uncond = member_z_maps(model, stats, test_volumes[is_cn], None)
by_group = calibration_by_group(z[is_cn], stats.mask, test[is_cn]).merge(
    calibration_by_group(ensemble_z(z_uncond, stats.mask), stats.mask, test[is_cn])[["group", "share"]],
    on="group", suffixes=("", "_unconditional"))
by_group["met (0.05 ± 0.01)"] = (by_group["share"] - 0.05).abs() <= 0.01
by_group["0.05 inside the 95 % interval"] = (by_group["ci_low"] <= 0.05) & (0.05 <= by_group["ci_high"])
calibration_met = bool(by_group["met (0.05 ± 0.01)"].all())
print(f"healthy test subjects: mean share |z| > 1.96 = {share.mean():.3f} (target 0.05 ± 0.01 overall and in "
      f"each age tertile and site: {'met' if calibration_met else 'NOT MET'}; reference conditional on "
      f"{stats.provenance.get('covariate_terms')}; calibration factor "
      f"{stats.provenance.get('calibration_factor', 1):.2f}; {data.source})")
display(by_group.round(3))
print("a group that misses the target with 0.05 inside its interval has too few subjects to tell a biased "
      "reference from chance (the shares of single healthy scans vary widely, see the table below)")
fig = plot_qq(z[is_cn], stats.mask, list(test.loc[is_cn, "participant_id"]))
fig.axes[0].set_title("healthy held-out subjects", fontsize=9)
save_figure(fig, P.reports_dir, STEM, "calibration_qq")
plt.show()
calib.round(3)

# %% [markdown]
# **Exercise.** One healthy subject has 10 % of voxels above 1.96 while another has 3 %. Name two
# reasons why a *healthy* person can look globally "abnormal".
#
# <details><summary>Solution</summary>
#
# Subject-level differences the reference set samples poorly: scanner/site contrast (the synthetic
# cohort has several sites), age (cortical thinning), head size and registration quality. With a
# small reference set the voxel SD is also noisy. Calibration is a property of the population,
# not a guarantee for each person — which is why per-subject shares are shown, not only the mean.
# </details>
#
# With only a handful of healthy test subjects per age tertile or site, each group's share has a wide
# sampling spread; read the table together with the per-subject shares below.
#
# ## 3 · Tumour detection against two baselines
#
# All three methods produce a voxel score, get the same post-processing (median filter, eroded brain
# mask, minimum component size; Baur et al.) and a threshold fixed at **5 % voxel FPR on the healthy
# reference** (leave-one-out, so never in-sample):
#
# - **(a) intensity** — |standardised intensity|, no model at all;
# - **(b) voxel z** — z of the intensity against the healthy reference scans, voxel by voxel, conditional
#   on age, sex and site like the autoencoder's, no network;
# - **(c) autoencoder** — z of the reconstruction residual (the ensemble members' z-maps combined
#   as correlated z-scores, so the result stays calibrated: `ensemble_z`).
#
# Every tumour class lies inside the analysed region: the analysis mask is the MNI152 brain mask plus a
# 4 mm extra-axial rim (meningiomas) and the sellar region (pituitary adenomas) —
# `nbutils.anatomy.load_analysis_mask`.
#
# Voxel scores are summarised per tumour class by AUPRC (beside its chance level, the lesion-voxel
# prevalence: what a random score reaches), the best achievable Dice (pooled voxels, any threshold: an
# upper bound) and the Dice at the healthy 5 % / 1 % FPR thresholds (mean over scans: what you get in
# practice). Next to that Dice stands its **ceiling**: with 5 % of the healthy voxels flagged, even a
# method that finds every lesion voxel cannot reach a high Dice on small lesions. So lesions are also
# scored **lesion-wise** — a lesion is detected when a component of the segmentation touches it — with
# the **false-positive clusters** on healthy test scans beside it (otherwise flagging the whole brain
# would detect everything).
#
# These sections need lesion ground truth: the synthetic cohort's tumour masks, or BraTS `seg` labels
# of a preprocessed dataset (moved to the model grid with each scan's saved registration). Without it
# (e.g. IXI, or native synthetic scans after `nbutils prep`) they print **SKIPPED** and say why.

# %%
from IPython.display import display

from nbutils.normative.evaluate import (
    detection_by_class,
    false_positive_clusters,
    healthy_thresholds,
    lesion_wise,
    method_scores,
)

thresholds = {fpr: healthy_thresholds(stats, fpr) for fpr in (0.05, 0.01)}
tum = test[is_tumour].reset_index(drop=True)
# Ground truth: the generator's tumour masks, or BraTS seg labels of a preprocessed dataset; else skipped
truth, truth_note = data.lesion_masks(list(tum["participant_id"]))
HAS_TRUTH = truth is not None
if not HAS_TRUTH:
    print(f"SKIPPED — tumour detection needs lesion ground truth: {truth_note}")
else:
    scores = method_scores(model, stats, test_volumes[is_tumour], covariates_of(tum))
    min_size = stats.postprocessing["min_size"]
    by_class = detection_by_class(scores, thresholds, truth, tum["diagnosis"], stats.mask, min_size)
    print(f"tumour detection on {len(tum)} held-out tumour scans; lesion voxels inside the analysis mask: "
          f"{truth[:, stats.mask].sum() / truth.sum():.1%} ({data.source})")
    display(by_class.pivot_table(index=["class", "method"], columns="fpr",
                                 values=["auprc", "auprc_chance", "best_dice", "dice_at_fpr", "dice_ceiling"]).round(3))

# %% [markdown]
# Lesion-wise: the share of tumours touched by the segmentation, by size and by class, at both thresholds
# (with an exact 95 % interval), and the false-positive clusters on the healthy test scans.

# %%
from IPython.display import display

from nbutils.evaluation import detection_rate_by

if not HAS_TRUTH:
    print(f"SKIPPED — lesion-wise detection needs lesion ground truth: {truth_note}")
else:
    voxel_mm3 = float(stats.resolution) ** 3
    lesions = pd.concat([
        lesion_wise(scores, thr, truth, stats.mask, voxel_mm3, min_size, subjects=tum["participant_id"]).assign(fpr=fpr)
        for fpr, thr in thresholds.items()], ignore_index=True)
    lesions["class"] = lesions["subject"].map(dict(zip(tum["participant_id"], tum["diagnosis"], strict=True)))
    healthy_scores = method_scores(model, stats, test_volumes[is_cn], covariates_of(test[is_cn]))
    fp = pd.concat([false_positive_clusters(healthy_scores, thr, stats.mask, min_size).assign(fpr=fpr)
                    for fpr, thr in thresholds.items()], ignore_index=True)
    by_size = detection_rate_by(lesions, ["fpr", "method", "size_bin"]).reset_index()
    by_type = detection_rate_by(lesions, ["fpr", "method", "class"]).reset_index()
    fp_per_scan = fp.groupby(["fpr", "method"])[["components", "voxels"]].mean()
    large = lesions[(lesions["fpr"] == 0.05) & (lesions["method"] == "autoencoder") & (lesions["volume_cm3"] >= 1.0)]
    large_rate = float(large["detected"].mean()) if len(large) else float("nan")
    pooled_auprc = by_class[(by_class["class"] == "all") & (by_class["fpr"] == 0.05)].set_index("method")["auprc"]
    print(f"{len(lesions) // (2 * len(scores))} lesions in {len(tum)} tumour scans; false-positive clusters "
          f"on {int(is_cn.sum())} healthy test scans ({data.source})")
    print(f"lesions >= 1 cm3 detected by the autoencoder at the 5 % threshold: {large_rate:.2f} ({len(large)} lesions; "
          f"target >= 0.90: {'met' if large_rate >= 0.9 else 'NOT MET'})")
    print(f"AUPRC autoencoder {pooled_auprc['autoencoder']:.3f} vs voxel-z baseline {pooled_auprc['voxel_z']:.3f} "
          f"vs intensity {pooled_auprc['intensity']:.3f} (target: autoencoder > voxel z: "
          f"{'met' if pooled_auprc['autoencoder'] > pooled_auprc['voxel_z'] else 'NOT MET'})")
    display(by_size.round(3))
    display(by_type.round(3))
    display(fp_per_scan.round(1))

# %%
from nbutils.normative.plots import slice_at

if not HAS_TRUTH:
    print(f"SKIPPED — tumour example needs lesion ground truth: {truth_note}")
else:
    i = int(np.argsort(truth.sum(axis=(1, 2, 3)))[len(tum) // 2])  # the median-sized tumour
    k = int(np.argmax(truth[i].sum(axis=(0, 1))))
    panels = [("image", test_volumes[is_tumour][i], "gray"), ("truth", truth[i], "Reds")]
    panels += [(name, scores[name][i], "magma") for name in scores]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for ax, (name, vol, cmap) in zip(axes, panels, strict=True):
        ax.imshow(slice_at(vol, "axial", k), cmap=cmap, origin="lower")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{tum['participant_id'][i]} ({tum['diagnosis'][i]}), axial {k} — {data.source}", fontsize=9)
    save_figure(fig, P.reports_dir, STEM, "tumour_example")
    plt.show()

# %% [markdown]
# **Exercise.** Why is voxel AUROC not reported? Work it out for a tumour covering 1 % of the brain.
#
# <details><summary>Solution</summary>
#
# AUROC weighs false positives by the 99 % healthy voxels: a method flagging 5 % of healthy voxels
# still has a false-positive *rate* of only 0.05, so AUROC can be 0.95+ while five of every six
# flagged voxels are wrong. AUPRC and Dice measure precision directly (Meissen et al. 2021).
# </details>
#
# ## 4 · Explore the maps
#
# Pick a subject, move the three planes, change the z threshold and the overlay opacity; choosing a
# region in the list moves the planes to its centroid and draws its centile chart (healthy centiles against
# age, the subject as a dot). (Static figures follow for non-interactive
# runs, e.g. papermill.)

# %%
from IPython.display import display

from nbutils.normative.explorer import DeviationExplorer, ExplorerSubject
from nbutils.normative.regional import region_centroids

ref = stats.regional
centroids = dict(zip(ref.regions["name"], region_centroids(labels, ref.regions["index"]), strict=True))
show = list(np.flatnonzero(is_tumour)[: P.explorer_subjects // 2]) + list(np.flatnonzero(is_cn)[:1])
show += list(np.flatnonzero(test["diagnosis"] == "AD")[:1])
views = {}
for j in show:
    prof, _, raw = stats.profiles(z[j], labels, cov.iloc[[j]])
    views[f"{test['participant_id'][j]} ({test['diagnosis'][j]})"] = ExplorerSubject(
        test_volumes[j], z[j], ref.profile_table({m: v[0] for m, v in raw.items()}, profile=prof[0]),
        covariates=cov.iloc[j].to_dict(), warning=run.check(test_volumes[j], z[j]).warning)
explorer = DeviationExplorer(views, centroids, regional_model=stats.regional_model, measure=ref.measure)
display(explorer.widget)

# %%
from nbutils.normative.plots import plot_planes_grid

fig = plot_planes_grid({name: (v.image, v.z, None) for name, v in views.items()}, threshold=1.96,
                       title=f"|z| > 1.96, planes through each subject's largest |z| ({data.source})")
save_figure(fig, P.reports_dir, STEM, "deviation_planes")
plt.show()

# %% [markdown]
# The ensemble's members disagree most where the z-map is least trustworthy: the spread of their
# z-maps is an **uncertainty map** (the explorer and the HTML report can show it too).

# %%
j = int(np.flatnonzero(is_tumour)[0]) if is_tumour.any() else 0
fig = plot_planes_grid({f"{test['participant_id'][j]}: combined z of {len(member_z)} members": (test_volumes[j], z[j], None),
                        "spread of the members' z (SD)": (test_volumes[j], z_spread[j], None)}, threshold=0.5,
                       title=f"ensemble z and disagreement ({data.source})")
save_figure(fig, P.reports_dir, STEM, "ensemble_uncertainty")
plt.show()
print(f"members' z spread inside the brain: median {np.median(z_spread[:, stats.mask]):.2f}, "
      f"99th centile {np.percentile(z_spread[:, stats.mask], 99):.2f} (test scans; {data.source})")

# %% [markdown]
# ## 4b · Scans unlike the reference: the guard
#
# A normative model can only say how a scan differs from the healthy scans it was calibrated on. A scan
# from another scanner or contrast, a failed preprocessing, or a real scan given to a model trained on
# synthetic data gives a profile full of meaningless "deviations". The **scan guard**
# (`nbutils.normative.guard`, fitted in notebook 02 on the healthy validation scans and saved beside
# the checkpoint) measures each scan's correlation with the healthy reference mean image and its mean
# voxel |z|, and warns — in this notebook, the explorer and the report — when either is beyond the
# 99.9 % prediction limit of the reference (Student's t: a small reference gives a wide range). It
# must stay quiet on held-out healthy scans of the reference's own kind (the false-alarm rate below)
# and speak up on scans of another kind (here: the same healthy test scans with their contrast
# inverted, as a T2-like image would be).

# %%
from nbutils.normative.pipeline import deviation_maps

healthy_checks = [run.check(test_volumes[j], z[j]) for j in np.flatnonzero(is_cn)]
inverted = np.where(stats.mask, -test_volumes[is_cn], 0.0).astype(np.float32)
_, z_inverted = deviation_maps(model, stats, inverted, covariates_of(test[is_cn]))
inverted_checks = [run.check(v, zi) for v, zi in zip(inverted, z_inverted, strict=True)]
guard_false_alarms = float(np.mean([c.flagged is True for c in healthy_checks])) if healthy_checks else float("nan")
guard_inverted_flagged = float(np.mean([c.flagged is True for c in inverted_checks])) if inverted_checks else float("nan")
if run.guard is None:
    print(healthy_checks[0].warning if healthy_checks else "SCAN GUARD UNAVAILABLE for this model folder")
else:
    print({name: run.guard.describe(name) for name in run.guard.ranges})
print(f"guard false alarms on {len(healthy_checks)} held-out healthy test scans: {guard_false_alarms:.0%} "
      f"(design: at most 0.1 % per measure); flagged among the same scans contrast-inverted: "
      f"{guard_inverted_flagged:.0%} (should be 100 %) — {data.source}")
for pid, c in zip(test.loc[is_cn, "participant_id"], healthy_checks, strict=True):
    if c.warning:
        print(pid, c.warning)
pd.DataFrame([c.measures for c in healthy_checks + inverted_checks],
             index=[f"{p} (healthy)" for p in test.loc[is_cn, "participant_id"]]
             + [f"{p} (inverted)" for p in test.loc[is_cn, "participant_id"]]).round(3)

# %% [markdown]
# ## 5 · Stability: does a re-run of the recipe give the same profiles?
#
# The seed study claims consistent deviation patterns. We rebuild the whole normative model (every
# cross-fitted member) with other seeds **on the same healthy reference** — the same folds, the same
# reference and test subjects; only initialisation and batch order change — refit the statistics and
# correlate the regional profiles of the same held-out subjects across the replicates. With a fixed
# reference the agreement measures the model alone.
#
# The replicates all get the same training budget (`stability_epochs`), so their agreement measures
# what a re-run of the same recipe would change. The main model of notebook 02 trained longer; its
# agreement with the replicates is reported separately, because it mixes seed and budget differences.
# The same study also measures what a **single** model would reach: member k of one replicate against
# member k of another (same fold, other seed). That is the measurement behind the ensemble's size.

# %%
from nbutils.normative.evaluate import stability_study
from nbutils.normative.pipeline import regional_profiles
from nbutils.runs import model_folder

groups = {g: (test["diagnosis"].isin(TUMOURS) if g == "tumour" else test["diagnosis"] == g).to_numpy()
          for g in ["CN", "MCI", "AD", "tumour"]}
stability = stability_study(
    subjects, test_volumes, labels, model_folder(P, "stability"), P.stability_seeds,
    main_profile=regional_profiles(stats, z, labels, cov)[0].to_numpy(), epochs=P.stability_epochs,
    minutes=P.stability_minutes, training=run.training,
    stats_options=stats.provenance.get("stats_options", {}), data_source=data.source, groups=groups,
    covariates=cov, reuse=not P.retrain)
profiles, corr = stability.profiles, stability.correlation
print(f"regional-profile correlation across {len(profiles)} replicates (seeds {P.stability_seeds}, "
      f"{P.stability_epochs} epochs each, fixed reference): {stability.seed_correlation:.3f} "
      f"(target >= 0.9: {'met' if stability.seed_correlation >= 0.9 else 'NOT MET'}; {data.source})")
print("by group:", {k: round(v, 3) for k, v in stability.by_group.items()})
print(f"main model ({run.training.get('epochs', '?')} epochs) vs each replicate: "
      f"mean r = {stability.main_correlation:.3f}")
print(f"single models (member k vs member k across replicates): r = {stability.member_correlation:.3f} vs "
      f"{stability.seed_correlation:.3f} for ensembles of {len(member_z)}")
corr.round(3)

# %%
fig, ax = plt.subplots(figsize=(4.2, 4))
ax.scatter(profiles[0].ravel(), profiles[1].ravel(), s=3, alpha=0.3)
lim = np.nanpercentile(np.abs(profiles[0]), 99.5)
ax.plot([-lim, lim], [-lim, lim], "k--", lw=1)
ax.set_xlabel(f"regional profile, replicate seed {P.stability_seeds[0]}")
ax.set_ylabel(f"regional profile, replicate seed {P.stability_seeds[1]}")
ax.set_title(f"r = {corr['r_all'].iloc[0]:.2f} (test subjects x regions)", fontsize=9)
fig.tight_layout()
save_figure(fig, P.reports_dir, STEM, "seed_stability")
plt.show()

# %% [markdown]
# ## 6 · Metrics

# %%
from nbutils.reporting import write_metrics


def by_class_table(column: str, fpr: float = 0.05) -> dict:
    """{class: {method: value}} of one column of the per-class detection table."""
    rows = by_class[by_class["fpr"] == fpr]
    return {c: dict(zip(g["method"], g[column].astype(float), strict=True)) for c, g in rows.groupby("class")}


def rates(table: pd.DataFrame, key: str, fpr: float) -> dict:
    """{method: {group: detection rate}} at one FPR."""
    rows = table[table["fpr"] == fpr]
    return {m: dict(zip(g[key].astype(str), g["detection_rate"].astype(float), strict=True))
            for m, g in rows.groupby("method")}


def tumour_metrics() -> dict:
    """Detection metrics against lesion ground truth (empty when there is none)."""
    if not HAS_TRUTH:
        return {"tumour_evaluation": f"skipped: {truth_note}"}
    pooled = {(r.fpr, r.method): r for r in by_class[by_class["class"] == "all"].itertuples()}
    return {
        "tumour_auprc": float(pooled[0.05, "autoencoder"].auprc),
        "tumour_auprc_chance": float(pooled[0.05, "autoencoder"].auprc_chance),
        "tumour_best_dice": float(pooled[0.05, "autoencoder"].best_dice),
        "tumour_dice_at_fpr5": float(pooled[0.05, "autoencoder"].dice_at_fpr),
        "tumour_dice_at_fpr1": float(pooled[0.01, "autoencoder"].dice_at_fpr),
        "tumour_dice_ceiling_at_fpr5": float(pooled[0.05, "autoencoder"].dice_ceiling),
        "tumour_dice_ceiling_at_fpr1": float(pooled[0.01, "autoencoder"].dice_ceiling),
        "baseline_intensity_tumour_auprc": float(pooled[0.05, "intensity"].auprc),
        "baseline_voxelz_tumour_auprc": float(pooled[0.05, "voxel_z"].auprc),
        "baseline_intensity_dice_at_fpr5": float(pooled[0.05, "intensity"].dice_at_fpr),
        "baseline_voxelz_dice_at_fpr5": float(pooled[0.05, "voxel_z"].dice_at_fpr),
        "tumour_voxel_auprc_by_class": by_class_table("auprc"),
        "tumour_voxel_auprc_chance_by_class": {c: v["autoencoder"]
                                               for c, v in by_class_table("auprc_chance").items()},
        "tumour_best_dice_by_class": by_class_table("best_dice"),
        "tumour_dice_at_fpr5_by_class": by_class_table("dice_at_fpr", 0.05),
        "tumour_dice_at_fpr1_by_class": by_class_table("dice_at_fpr", 0.01),
        "tumour_dice_ceiling_at_fpr5_by_class": {c: v["autoencoder"]
                                                 for c, v in by_class_table("dice_ceiling").items()},
        "lesion_detection_rate_fpr5_by_size": rates(by_size, "size_bin", 0.05),
        "lesion_detection_rate_fpr1_by_size": rates(by_size, "size_bin", 0.01),
        "lesion_detection_rate_fpr5_by_class": rates(by_type, "class", 0.05),
        "lesion_detection_rate_fpr1_by_class": rates(by_type, "class", 0.01),
        "false_positive_clusters_per_healthy_scan_fpr5": fp_per_scan.loc[0.05, "components"].to_dict(),
        "false_positive_clusters_per_healthy_scan_fpr1": fp_per_scan.loc[0.01, "components"].to_dict(),
        "tumour_voxels_inside_analysis_mask": float(truth[:, stats.mask].sum() / truth.sum()),
        "lesion_detection_rate_ge_1cm3_fpr5": large_rate,
        "autoencoder_beats_voxel_z_auprc": bool(pooled_auprc["autoencoder"] > pooled_auprc["voxel_z"]),
    }


write_metrics(P.reports_dir, STEM, {
    "healthy_frac_abs_z_gt_1_96": float(share.mean()),
    "healthy_frac_abs_z_gt_1_96_per_subject_sd": float(share.std()),
    "healthy_frac_abs_z_gt_1_96_by_group": dict(zip(by_group["group"], by_group["share"].astype(float), strict=True)),
    "healthy_frac_abs_z_gt_1_96_by_group_unconditional": dict(zip(by_group["group"],
                                                                  by_group["share_unconditional"].astype(float),
                                                                  strict=True)),
    "healthy_frac_abs_z_gt_1_96_by_group_ci95": {
        g: [float(lo), float(hi)] for g, lo, hi in zip(by_group["group"], by_group["ci_low"], by_group["ci_high"],
                                                       strict=True)},
    "calibration_target_met": calibration_met,
    "reference_covariate_terms": stats.provenance.get("covariate_terms"),
    "n_reference": int(stats.provenance.get("n_reference", stats.residual.n)),
    "n_ensemble_members": int(len(member_z)),
    "ensemble_z_spread_median": float(np.median(z_spread[:, stats.mask])),
    **tumour_metrics(),
    "guard_false_alarm_rate_healthy_test": guard_false_alarms,
    "guard_flag_rate_contrast_inverted_healthy_test": guard_inverted_flagged,
    "guard_available": run.guard is not None,
    "profile_seed_correlation": stability.seed_correlation,
    "profile_main_vs_replicate_correlation": stability.main_correlation,
    "profile_single_member_correlation": stability.member_correlation,
    "n_models_stability": len(profiles),
    "stability_epochs": P.stability_epochs,
    "n_tumour_test": int(len(tum)),
    "n_healthy_test": int(is_cn.sum()),
}, data_source=data.source)

# %% [markdown]
# ## Summary
#
# - Residual z-maps against healthy people of the same age, sex and site are checked for calibration on
#   new healthy people overall, per age tertile and per site; the QQ plot and per-subject shares show
#   where they are not.
# - Thresholds come from healthy scans at a fixed voxel false-positive rate; lesions are only used to
#   *evaluate*.
# - The autoencoder is compared with two network-free baselines in one table; read the numbers above
#   before believing any deep-learning claim — on this synthetic cohort as on real data.
# - Voxel Dice at a healthy FPR has a ceiling set by the false positives that FPR allows; lesion-wise
#   sensitivity with the false-positive clusters beside it, and AUPRC beside its chance level, say more.
# - Rebuilding the model with other seeds on the same reference shows how stable the regional profiles
#   are; the ensemble's disagreement is a voxel-wise uncertainty map.
#
# ## What to read next
#
# Notebook **04** aggregates the maps into atlas regions: regional deviation profiles, total deviation,
# Alzheimer's disease patterns and a single-subject report.
#
# ## References
#
# - Baur C. et al. (2021) Autoencoders for unsupervised anomaly segmentation in brain MR images.
#   *Medical Image Analysis* 69:101952 (post-processing; best achievable Dice).
# - Meissen F. et al. (2021) Challenging current semi-supervised anomaly segmentation methods for brain
#   MRI (intensity thresholding baseline; AUPRC rather than AUROC).
# - Behrendt F. et al. (thresholds at 1 % / 5 % healthy voxel FPR on IXI, 2 mm 80×96×80).
# - Marquand A. et al. / PCNtoolkit documentation: z-scores, centiles, calibration checks (QQ, MACE).
# - The seed study (`seeds/000_…`): consistency of deviation patterns across healthy reference scans.
