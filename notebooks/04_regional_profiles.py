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
#     minutes: 1.4
#     needs:
#     - '02'
# ---

# %% [markdown]
# # 04 · Regional deviation profiles and the single-subject report
#
# A voxel map is hard to read for a person; clinicians think in structures ("the left hippocampus
# is small for her age"). Here the voxel z-maps of notebook 03 are aggregated within **atlas
# regions** and compared with the same regions in healthy people, giving each subject a
# **regional deviation profile** with normative ranges and one **total deviation** score
# (Pinaya et al. 2019) — and, for one person, a NeuroQuant-style HTML report.
#
# **Learning objectives**
#
# - aggregate voxel z within atlas regions (mean and 95th percentile) and z-score the region
#   scores against a healthy reference distribution;
# - read a profile against normative ranges and summarise it in a total deviation;
# - check the profiles against known disease patterns (the pre-specified AD target regions) beside the
#   chance level of a random ranking, and by AUC against **age-matched** controls;
# - write a standalone single-subject report with `nbutils report` and time single-subject inference.
#
# | Prerequisites | |
# |---|---|
# | Notebooks | 02 (model + normative statistics); 03 helps to read the maps |
# | Concepts | atlases, z-scores and centiles, ROC AUC |
# | Data | synthetic cohort (CN, MCI, AD) in MNI space, or a folder written by `nbutils prep` (parameter `dataset`); Neuromorphometrics atlas (AAL: set `atlas` in 02) |
#
# **Expected CPU time** (2 cores): under a minute with the `quick` profile.

# %% tags=["parameters"]
reports_dir: str = "../reports"
data_dir: str = "../data"
seed: int = 0
profile: str = "quick"  # smoke | quick | full (set by `nbutils run --profile`)
cohort_seed: int = 0
dataset: str = ""  # folder written by `nbutils prep` (prep.tsv + demographics); empty: the synthetic cohort
top_k: int = 5
report_subject: str = ""  # empty: the AD subject with the largest total deviation
n_timing: int = 5
atrophy_losses: list[float] = [0.1, 0.25]  # volume losses inserted into healthy test scans (section 3b)
atrophy_other_regions: int = 4  # random non-target regions shrunk beside the tissue AD targets (0: targets only)

# %%
from nbutils.params import validate_parameters
from nbutils.reporting import print_config

P = validate_parameters(globals())
print_config()
P

# %% [markdown]
# ## 1 · The model, its regional reference and the held-out subjects
#
# The regional reference was fitted in notebook 02 on the out-of-fold (cross-fitted) z-maps of every
# healthy reference subject: one PCNtoolkit Bayesian linear regression per region, with a B-spline of
# age and sex and site as batch effects. A region's deviation is therefore a z against healthy people
# **of the same age, sex and site** — the way brain charts and clinical volumetry read a scan.

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from nbutils.normative.data import load_volumes
from nbutils.normative.pipeline import (
    atlas_arrays,
    covariates_of,
    deviation_maps,
    regional_profiles,
)
from nbutils.reporting import save_figure
from nbutils.runs import open_dataset, open_normative_model

STEM = "04_regional_profiles"
data = open_dataset(P)
run = open_normative_model(P)
model, stats, checkpoint = run.model, run.stats, run.checkpoint
ref = stats.regional
labels, _ = atlas_arrays(stats.atlas, stats.resolution)
test = run.split("test", ["CN", "MCI", "AD"])
print(f"{data.source}; atlas {stats.atlas}: {len(ref.regions)} regions; profile measure {ref.measure}; "
      f"reference n={ref.n} healthy subjects; regional model: {stats.provenance.get('regional_model')}")
test["diagnosis"].value_counts()

# %% [markdown]
# ## 2 · Profiles of every held-out subject
#
# For each region: the mean voxel z (signed: darker or brighter than the model expects); the profile is
# that score as a conditional z from the regional model, so ±1.96 bounds the 95 % range of healthy
# people like the subject. The sign is read directly: **negative = darker than expected** — in a T1
# scan, tissue replaced by CSF (atrophy, a wider ventricle) — positive = brighter than expected. The
# total deviation is the mean squared profile, z-scored against the healthy reference.

# %%
volumes = load_volumes(test["path"])
cov = covariates_of(test)
_, z = deviation_maps(model, stats, volumes, cov)
profiles, totals = regional_profiles(stats, z, labels, cov)
profiles.index = test["participant_id"]
test["total_deviation"] = totals
from nbutils.normative.plots import plot_group_profiles, plot_total_deviation

fig = plot_group_profiles(profiles, test["diagnosis"].to_numpy())
fig.suptitle(f"mean regional deviation by group ({data.source})", fontsize=9)
save_figure(fig, P.reports_dir, STEM, "group_profiles")
plt.show()

# %% [markdown]
# ## 3 · Does the profile find Alzheimer's disease where it should?
#
# In Alzheimer's disease the medial temporal lobe atrophies first: the hippocampus, amygdala and
# entorhinal cortex shrink and the temporal horn of the lateral ventricle widens. The **AD target
# regions** are pre-specified once in the package (`nbutils.anatomy.ad_target_regions`: hippocampus,
# amygdala, entorhinal area, inferior lateral ventricle and lateral ventricle, both sides) and used
# everywhere: the generator's truth, this hit rate, the classifiers' saliency mass.
#
# - **Hit rate**: for each AD subject, is a target region among the `top_k` regions by conditional
#   |profile|? It is printed beside its **chance level** — the probability that a random ranking of the
#   regions puts a target in the top `top_k` — and an exact one-sided binomial p-value. Target: ≥ 0.80
#   in `quick`, ≥ 0.90 in `full`.
# - **AD vs age-matched CN**: ageing moves regional deviations too, so AD is compared with controls of
#   its age (CN aged within the AD age range ± 5 years; `nbutils.evaluation.age_matched`). Two
#   pre-specified scores: the total deviation, and the medial-temporal composite (mean |profile| over the
#   target regions). AUC with a bootstrap 95 % interval (target for the composite: ≥ 0.90); MCI should
#   fall between CN and AD.
#
# **Which profile is scored.** The normative model gives two readings of a region: the autoencoder's
# (its reconstruction error) and a **no-network** one, the model's conditional voxel-wise *intensity*
# reference (age, sex, site; the one notebook 03 uses for the voxel-z baseline) averaged per region,
# with its own PCNtoolkit regional model fitted on the healthy reference subjects. The two are combined
# as correlated z-scores, the rule the ensemble uses for its members: (AE z + intensity z) / √(2 + 2ρ),
# with ρ measured on the healthy held-out subjects. The AD checks score the **combined** profile. It
# was chosen over the autoencoder's alone on a validation cohort the run never sees (cohort seed 1),
# on its AD subjects and on atrophy inserted into its healthy scans, by a rule written down before the
# run (`benchmarks/results/profile_choice_2026-12-02.md`). All three are printed side by side. Without
# a regional model or healthy held-out subjects, the autoencoder's profile is scored.

# %%
from nbutils.anatomy import ad_target_regions
from nbutils.normative.conditional import MIN_REGIONAL_SUBJECTS
from nbutils.normative.evaluate import (
    combined_profile,
    fit_intensity_regional_model,
    intensity_profiles,
)

targets = ad_target_regions(list(profiles.columns))
dx = test["diagnosis"].to_numpy()
HAS_AD = bool((dx == "AD").any())  # a real healthy cohort (IXI) has none: the AD checks are skipped
reference = run.reference()
candidates, baseline_model, rho = {"autoencoder": profiles}, None, None
if stats.regional_model is None or len(reference) < MIN_REGIONAL_SUBJECTS or not (dx == "CN").any():
    print(f"no-network profile not built: it needs a conditional regional model with at least "
          f"{MIN_REGIONAL_SUBJECTS} reference subjects (here {len(reference)}) and healthy held-out subjects "
          f"(here {int((dx == 'CN').sum())}); the autoencoder's profile is scored ({data.source})")
else:
    baseline_model = fit_intensity_regional_model(stats, load_volumes(reference["path"]), covariates_of(reference),
                                                  labels)
    candidates["no network"] = intensity_profiles(stats, baseline_model, volumes, cov, labels).set_axis(
        profiles.index)
    candidates["combined"], rho = combined_profile(profiles, candidates["no network"], dx == "CN")
    print(f"correlation of the two readings' regional z over the {int((dx == 'CN').sum())} healthy held-out "
          f"subjects: rho = {rho:.2f} ({data.source})")
SCORED = "combined" if "combined" in candidates else "autoencoder"
scored = candidates[SCORED]

# %%
from nbutils.evaluation import AGE_MATCH_MARGIN_YEARS
from nbutils.normative.evaluate import ad_localisation, age_matched_auc, target_composite

test["mtl_composite"] = target_composite(scored, targets).to_numpy()
fig = plot_total_deviation(test)
fig.axes[0].set_title(f"total deviation ({data.source})", fontsize=8)
save_figure(fig, P.reports_dir, STEM, "total_deviation")
plt.show()
medians = test.groupby("diagnosis")[["total_deviation", "mtl_composite"]].median().reindex(["CN", "MCI", "AD"])
mci_between = bool(medians.loc["CN", "mtl_composite"] <= medians.loc["MCI", "mtl_composite"]
                   <= medians.loc["AD", "mtl_composite"]) if medians.notna().all().all() else False
print(f"medians by group ({SCORED} profile's composite; MCI's between CN and AD: "
      f"{'met' if mci_between else 'NOT MET'}):")
display(medians.round(3))
hit_target = 0.9 if P.profile == "full" else 0.8
composite_auc = float("nan")
if not HAS_AD:
    ad_hits, separation = {}, pd.DataFrame()
    print(f"SKIPPED — the AD hit rate and AD/MCI vs CN separation need AD subjects; the held-out subjects "
          f"of the {data.source} are {test['diagnosis'].value_counts().to_dict()}")
else:
    ad_hits, tops = ad_localisation(scored[dx == "AD"], targets, P.top_k)
    separation = pd.DataFrame({
        (score, group): age_matched_auc(test[score], dx, test["age"], group, seed=P.seed)
        for score in ("total_deviation", "mtl_composite") for group in ("AD", "MCI")}).T
    print(f"{SCORED} profile: AD subjects with an AD target region in their top {P.top_k}: {ad_hits['hit_rate']:.2f} "
          f"({ad_hits['hits']:.0f}/{ad_hits['n']:.0f}) vs chance {ad_hits['chance']:.2f} "
          f"({ad_hits['n_targets']} targets among {ad_hits['n_regions']} regions), p = {ad_hits['p_value']:.3g}; "
          f"target >= {hit_target}: {'met' if ad_hits['hit_rate'] >= hit_target else 'NOT MET'}; {data.source}")
    composite_auc = float(separation.loc[("mtl_composite", "AD"), "auc"])
    print(f"AD vs age-matched CN, medial-temporal composite AUC {composite_auc:.2f} (target >= 0.90: "
          f"{'met' if composite_auc >= 0.9 else 'NOT MET'})")
    display(separation[["auc", "ci_low", "ci_high", "n_case", "n_control", "n_control_all"]].round(3))
    display(tops)

# %% [markdown]
# ### The three profiles side by side
#
# Does the network help here? The same held-out subjects, hit rate and composite for each reading.

# %%
compared = {}
if HAS_AD:
    for name, frame in candidates.items():
        hits, _ = ad_localisation(frame[dx == "AD"], targets, P.top_k)
        auc = age_matched_auc(target_composite(frame, targets).to_numpy(), dx, test["age"], "AD", seed=P.seed)
        compared[name] = {"ad_target_in_top_k_rate": hits["hit_rate"], "mtl_composite_auc": auc["auc"],
                          "mtl_composite_auc_ci": [auc["ci_low"], auc["ci_high"]],
                          "healthy_regions_abs_z_over_1.96": float((frame[dx == "CN"].abs() > 1.96).mean().mean())}
    display(pd.DataFrame({name: [c["ad_target_in_top_k_rate"], c["mtl_composite_auc"],
                                 c["healthy_regions_abs_z_over_1.96"]] for name, c in compared.items()}
                         | {"chance / target": [f"{ad_hits['chance']:.2f} / {hit_target}", "0.5 / 0.90", "0.05"]},
                         index=[f"AD target in top {P.top_k}", "MTL composite AUC (AD vs age-matched CN)",
                                "healthy test regions with |z| > 1.96"]).round(3))
    if "no network" in compared:
        ae_rate, nn_rate = (compared[m]["ad_target_in_top_k_rate"] for m in ("autoencoder", "no network"))
        print(f"{data.source}; the autoencoder alone is {'better' if ae_rate > nn_rate else 'NOT better'} than the "
              f"no-network profile at putting the AD target regions in the top {P.top_k}")
else:
    print(f"SKIPPED — no AD subjects among the held-out subjects of the {data.source}")

# %% [markdown]
# Atrophy is a regional change in intensity, and an autoencoder trained on healthy people of all ages
# learns to reconstruct much of it. Wherever it does, its residual is smaller than the plain deviation
# from people of the same age. Tumours are different: the voxel-level comparison in notebook 03 shows
# the autoencoder ahead of the voxel-z baseline there. Read the two profiles side by side, and keep the
# baseline in view whenever the network is credited with a finding.
#
# ### 3b · Atrophy we insert ourselves
#
# The hit rate above is measured on the generator's own disease, which the generator makes with a
# smooth deformation of the medial temporal lobe. A profile worth trusting must also find atrophy that
# was made another way, in any region. So we insert it ourselves into the
# **healthy held-out scans** (`nbutils.normative.inserted.insert_atrophy`): one region at a time, its
# outermost voxels — 10 % or 25 % of its volume (typical hippocampal losses in MCI and AD are 12 % and
# 22 %) — become the scan's own CSF intensity, as if the region had shrunk and CSF had filled the space.
# Nothing else in the scan changes, and the truth is exact.
#
# Shrunk: the tissue AD target regions (hippocampus, amygdala, entorhinal area; ventricles are CSF
# already) and `atrophy_other_regions` other tissue regions drawn at random with the run's seed. For
# each inserted loss we read the shrunk region in the autoencoder's profile and in the no-network
# profile:
#
# - **in the top `top_k`** by |profile|, beside its chance level `top_k / regions` (the unmodified
#   scans, loss 0, are the control);
# - **below the 95 % normative range** (z < −1.96), beside the 2.5 % of healthy regions.

# %%
from nbutils.anatomy import load_tissue_maps, standard_grid
from nbutils.normative.plots import plot_atrophy_sensitivity
from nbutils.normative.sensitivity import (
    atrophy_regions,
    atrophy_sensitivity,
    profile_methods,
    sensitivity_summary,
)

healthy_test = np.flatnonzero(dx == "CN")
shrunk = atrophy_regions(ref.regions, targets, P.atrophy_other_regions, seed=P.seed)
sensitivity = pd.DataFrame()
if not len(healthy_test):
    print(f"SKIPPED — inserting atrophy needs healthy held-out scans; the {data.source} has none")
else:
    profilers = profile_methods(model, stats, labels, baseline_model, rho)
    csf_map = load_tissue_maps(standard_grid(stats.resolution))["csf"].get_fdata()
    inserted = atrophy_sensitivity(profilers, volumes[healthy_test],
                                   None if cov is None else cov.iloc[healthy_test].reset_index(drop=True),
                                   labels, ref.regions, shrunk, P.atrophy_losses, csf_map)
    sensitivity = sensitivity_summary(inserted, targets, P.top_k, len(ref.regions))
    print(f"atrophy inserted into {len(healthy_test)} healthy test scans ({data.source}); regions shrunk: "
          f"{', '.join(shrunk)}")
    display(sensitivity.round(3))
    fig = plot_atrophy_sensitivity(sensitivity, P.top_k, title=f"inserted atrophy in {len(healthy_test)} "
                                   f"healthy test scans ({data.source})")
    save_figure(fig, P.reports_dir, STEM, "inserted_atrophy")
    plt.show()
    found = sensitivity.xs(max(P.atrophy_losses), level="loss")
    for (method, group), r in found.iterrows():
        print(f"{method}: a{' tissue AD target' if group == 'target' else 'nother'} region shrunk by "
              f"{max(P.atrophy_losses):.0%} is in the top {P.top_k} for "
              f"{r['top_k_rate']:.2f} of {int(r['n'])} insertions (chance {r['chance']:.3f}, p = {r['p_value']:.2g}) "
              f"and below the normative range for {r['below_range_rate']:.2f} (healthy 0.025)")

# %% [markdown]
# Read the two curves against the AD hit rate above. A region shrunk by a quarter is a large change, but
# a profile of regional *means* dilutes it with the region's unchanged interior, and a lost shell of
# cortex resembles a wider sulcus, which healthy people have too. Where the autoencoder's curve lies
# below the no-network curve, the network has reconstructed part of the shrunk region as plausible
# anatomy: it is built to flag patterns that are not brain-like, and a brain-like structure of the wrong
# size is not one.
#
# **Exercise.** Small regions (accumbens, optic chiasm) sometimes top a profile. Why, and what would
# make the ranking more robust?
#
# <details><summary>Solution</summary>
#
# A region with few voxels has a noisy mean, and its healthy SD is estimated from few reference
# subjects; an unlucky estimate inflates the z of that region. More reference subjects, a minimum
# region size, merging left/right, or shrinking the reference SD towards a pooled value all help.
# </details>
#
# ## 4 · One person: profile, explorer and report
#
# The single-subject view is what a clinician would read: the profile against normative ranges, the
# maps in three planes, and the provenance of every number.

# %%
from nbutils.normative.pipeline import analyse_volume
from nbutils.normative.plots import plot_profile

if P.report_subject:
    chosen = P.report_subject
else:
    pool = test[test["diagnosis"] == "AD"] if (dx == "AD").any() else test
    chosen = pool.sort_values("total_deviation")["participant_id"].iloc[-1]
row = test.set_index("participant_id").loc[chosen]
j_chosen = int(np.flatnonzero(test["participant_id"] == chosen)[0])
table = analyse_volume(model, stats, volumes[j_chosen], labels, covariates=cov.iloc[[j_chosen]]).profile
guard = run.check(volumes[j_chosen], z[j_chosen])  # is the scan like the healthy reference at all?
print(guard.warning or f"scan guard: {chosen} is inside the healthy reference's range "
      f"({', '.join(f'{k} {v:.3g}' for k, v in guard.measures.items())})")
fig = plot_profile(table, top=15, title=f"{chosen} ({row['diagnosis']}, {row['age']:.0f} y {row['sex']}), "
                   f"total deviation {row['total_deviation']:+.2f} — {data.source}")
save_figure(fig, P.reports_dir, STEM, "subject_profile")
plt.show()
table[["name", "profile", "centile", "direction"]].head(10).round(2)

# %% [markdown]
# ### Centile charts
#
# The brain-chart view of a region: the healthy reference's 5/25/50/75/95 % centiles of the region score
# against age, for women and men at the subject's site, with the subject as a dot. A dot below the
# 5 % curve is a region darker than 95 % of healthy people of that age — here the subject's three most
# deviating regions and the left hippocampus.

# %%
from nbutils.normative.plots import plot_centile_chart

if stats.regional_model is not None:
    chart_regions = list(dict.fromkeys(table["name"].head(3).tolist() + [t for t in targets if "Hippocampus" in t][:1]))
    fig, axes = plt.subplots(1, len(chart_regions), figsize=(4.6 * len(chart_regions), 3.8), squeeze=False)
    for ax, name in zip(axes[0], chart_regions, strict=True):
        score = float(table.set_index("name").loc[name, ref.measure])
        plot_centile_chart(stats.regional_model, name, row["site"], ax=ax,
                           subject={"age": row["age"], "sex": row["sex"], "score": score,
                                    "label": f"{chosen} ({row['sex']})"})
    fig.suptitle(f"centile charts ({data.source})", fontsize=8)
    fig.tight_layout()
    save_figure(fig, P.reports_dir, STEM, "centile_charts")
    plt.show()
else:
    print("no regional model (too few reference subjects): centile charts need the conditional reference")

# %%
from nbutils.normative.explorer import DeviationExplorer, ExplorerSubject
from nbutils.normative.regional import region_centroids

centroids = dict(zip(ref.regions["name"], region_centroids(labels, ref.regions["index"]), strict=True))
views = {}
for g in ["AD", "MCI", "CN"]:
    for j in np.flatnonzero(dx == g)[:1]:
        if g == "AD":
            j = j_chosen
        res_j = analyse_volume(model, stats, volumes[j], labels, segment=False, covariates=cov.iloc[[j]])
        views[f"{test['participant_id'][j]} ({g})"] = ExplorerSubject(volumes[j], res_j.z, res_j.profile,
                                                                    covariates=cov.iloc[j].to_dict(),
                                                                    warning=run.check(volumes[j], z[j]).warning)
explorer = DeviationExplorer(views, centroids, regional_model=stats.regional_model, measure=ref.measure)
display(explorer.widget)

# %%
# static view for non-interactive runs: planes through the most deviating region's centroid
from nbutils.normative.plots import plot_planes_grid

fig = plot_planes_grid({f"{name} at {v.profile['name'].iloc[0]}": (v.image, v.z, centroids[v.profile["name"].iloc[0]])
                        for name, v in views.items()}, title=f"most deviating region per subject ({data.source})")
save_figure(fig, P.reports_dir, STEM, "subject_planes")
plt.show()

# %% [markdown]
# The same report is one command away for any preprocessed scan (the model folder carries its
# normative statistics):
#
# ```
# nbutils report --subject sub-XXXX --bids <cohort folder> --model <checkpoint> --out reports/subjects
# nbutils report --subject sub-XXXX --prep <nbutils prep folder> --model <checkpoint> --out reports/subjects
# ```

# %%
from nbutils.normative.report import write_report

report = write_report(chosen, row["path"], checkpoint, Path(P.reports_dir) / "subjects", data.source,
                      extra={"diagnosis": row["diagnosis"]},
                      covariates={"age": row["age"], "sex": row["sex"], "site": row["site"]})
print("report:", report)
where = f"--prep {data.root}" if data.kind == "prep" else f"--bids {data.root}"
print(f"nbutils report --subject {chosen} {where} --model {checkpoint} --out {report.parent}")

# %% [markdown]
# ## 5 · How fast is single-subject inference?
#
# From a preprocessed volume to z-map and conditional regional profile (the atlas is loaded once; the
# optional thresholded segmentation, dominated by the median filter, is timed separately). Targets:
# ≤ 0.25 s per model and ≤ 1 s for the whole ensemble.

# %%
from nbutils.normative.model import members_of

n_members = len(members_of(model))
analyse_volume(model, stats, volumes[0], labels, covariates=cov.iloc[[0]])  # warm-up
times, seg_times = [], []
for j in range(min(P.n_timing, len(volumes))):
    t0 = time.perf_counter()
    analyse_volume(model, stats, volumes[j], labels, segment=False, covariates=cov.iloc[[j]])
    t1 = time.perf_counter()
    analyse_volume(model, stats, volumes[j], labels, segment=True, covariates=cov.iloc[[j]])
    times.append(t1 - t0)
    seg_times.append(time.perf_counter() - t1)
inference_seconds = float(np.median(times))
print(f"single-subject inference (map + conditional profile), ensemble of {n_members}: {inference_seconds:.3f} s "
      f"({inference_seconds / n_members:.3f} s per model); with segmentation {np.median(seg_times):.3f} s "
      f"(medians of {len(times)}; {volumes.shape[1:]} grid; targets <= 0.25 s per model: "
      f"{'met' if inference_seconds / n_members <= 0.25 else 'NOT MET'}, <= 1 s for the ensemble: "
      f"{'met' if inference_seconds <= 1 else 'NOT MET'})")

# %% [markdown]
# ## 6 · Metrics

# %%
from nbutils.reporting import write_metrics

write_metrics(P.reports_dir, STEM, {
    "ad_target_regions": targets,
    "ad_top_k": P.top_k,
    **({"ad_target_in_top_k_rate": ad_hits["hit_rate"],
        "ad_target_in_top_k_chance": ad_hits["chance"],
        "ad_target_in_top_k_p_value": ad_hits["p_value"]} if HAS_AD else
       {"ad_evaluation": "skipped: no AD subjects among the held-out subjects"}),
    "age_matching": f"CN aged within the patient group's age range +- {AGE_MATCH_MARGIN_YEARS:g} years",
    **{f"{group.lower()}_vs_age_matched_cn_{score}_auc": {k: float(v) for k, v in row.items()}
       for (score, group), row in separation.iterrows()},
    "median_by_group": {c: medians[c].to_dict() for c in medians},
    "inference_seconds_per_subject": inference_seconds,
    "inference_seconds_per_subject_per_model": inference_seconds / n_members,
    "n_ensemble_members": n_members,
    "ad_hit_rate_target": hit_target,
    "mci_composite_between_cn_and_ad": mci_between,
    "scored_profile": SCORED,
    "combined_profile_rho": rho,
    "profiles_compared": compared or "skipped: no AD subjects",
    "inserted_atrophy": {
        "method": "outermost voxels of one region set to the scan's CSF intensity (insert_atrophy)",
        "scans": f"{len(healthy_test)} healthy test scans", "regions": shrunk, "losses": P.atrophy_losses,
        "summary": [{"method": m, "group": g, "loss": x, **{c: float(v) for c, v in r.items()}}
                    for (m, g, x), r in sensitivity.iterrows()] or "skipped: no healthy held-out scans"},
    "regional_model": stats.provenance.get("regional_model"),
    "inference_seconds_with_segmentation": float(np.median(seg_times)),
    "atlas": stats.atlas,
    "n_ad_test": int((dx == "AD").sum()),
    "n_cn_test": int((dx == "CN").sum()),
    "report_subject": chosen,
    "report_subject_guard_flagged": guard.flagged,
    "report_subject_guard_warning": guard.warning,
}, data_source=data.source)

# %% [markdown]
# ## Summary
#
# - Atlas aggregation turns voxel maps into a per-region profile with normative ranges conditional on
#   age, sex and site, and a single total deviation — the form in which single-subject results are read.
#   The sign says the direction: darker than expected (tissue loss) or brighter.
# - Centile charts put the person among healthy people of every age, as brain charts do.
# - Checking profiles against pre-specified disease regions *beside chance*, and against controls of the
#   same age, is what separates a useful map from a plausible-looking one; read the numbers above for
#   this cohort.
# - The report carries its provenance: which model, trained on what, compared with whom.
#
# ## What to read next
#
# Notebooks **05** and **06** train supervised classifiers (AD vs CN, tumour types) on the same
# scans — compare what a classifier and a normative model can tell about *one* person.
#
# ## References
#
# - Pinaya W. H. L. et al. (2019) Using deep autoencoders to identify abnormal brain structural
#   patterns in neuropsychiatric disorders: a large-scale multi-sample study. *NeuroImage: Clinical*.
# - Marquand A. F. et al. (2019) Conceptualizing mental disorders as deviations from normative
#   functioning (normative modelling; PCNtoolkit).
# - NeuroQuant (seed `004_…`): regional measures reported against normative ranges for one patient.
# - The seed study (`seeds/000_…`): regional deviation profiles from a normative 3D autoencoder.
