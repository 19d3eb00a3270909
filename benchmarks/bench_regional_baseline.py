"""Does the autoencoder help AD localisation? Notebook 04's hit rate and AUC beside a no-network baseline.

Run on demand after notebooks 02 (and 00) of a profile::

    .venv/bin/python benchmarks/bench_regional_baseline.py --data data --profile quick

The **baseline** reads regional deviations from the images themselves, without a network. It is notebook
02's conditional voxel-wise intensity z (the same age/sex/site reference the model stores) averaged per
atlas region. A PCNtoolkit regional model is fitted on the healthy reference subjects' intensity z-maps,
exactly as notebook 02 fits one on the autoencoder's out-of-fold z-maps. Both are then scored as notebook 04
scores them on the held-out subjects:

- the AD target regions in the top k by conditional |profile|, against the chance of a random ranking;
- the medial-temporal composite AUC, AD vs age-matched CN.

The reference's intensity z-maps are in-sample: its voxel statistics were fitted on the same subjects. That
makes the baseline's regional reference slightly under-dispersed, not its ranking of regions.

A third row **combines** the two detectors as correlated z-scores, as the ensemble combines its members
(Stouffer's sum over ``sqrt(2 + 2 rho)``; Strube 1985), with one correlation ``rho`` of the two regional
z-scores measured on the healthy (CN) subjects being scored.

``--validation-cohort DIR`` scores the subjects of *another* generated cohort (e.g. ``nbutils synth`` with
another seed: AD and CN subjects the run never saw) instead of the run's test subjects, so that a choice
between the three profiles can be made without the test subjects.

``--inserted`` also shrinks regions of the scored CN subjects by atrophy the generator does not make
(notebook 04's section 3b, :mod:`nbutils.normative.sensitivity`: the tissue AD targets and
``--other-regions`` random regions, ``--losses`` of their volume turned into CSF) and scores all three
profiles on the same inserted scans, with a paired exact test (McNemar) of the combined profile against
the autoencoder's.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Paired hits ``a`` vs ``b``: discordant counts (a only, b only) and the exact two-sided p-value."""
    from scipy import stats

    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)
    return only_a, only_b, p


def _cohort_subjects(root: str) -> pd.DataFrame:
    """CN/MCI/AD subjects of a generated cohort, with the image paths notebook 04 would read."""
    from nbutils.synth.cohort import subject_paths

    table = pd.read_csv(Path(root) / "participants.tsv", sep="\t")
    table = table[table["diagnosis"].isin(["CN", "MCI", "AD"])].reset_index(drop=True)
    return table.assign(path=[str(subject_paths(root, pid)["t1w"]) for pid in table["participant_id"]])


def main() -> None:

    from nbutils.anatomy import ad_target_regions
    from nbutils.normative.data import load_volumes
    from nbutils.normative.evaluate import (
        ad_localisation,
        age_matched_auc,
        combined_profile,
        fit_intensity_regional_model,
        intensity_profiles,
        target_composite,
    )
    from nbutils.normative.pipeline import (
        atlas_arrays,
        covariates_of,
        deviation_maps,
        regional_profiles,
    )
    from nbutils.runs import open_dataset, open_normative_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data", help="data_dir of the run (notebook 02's model is read from it)")
    p.add_argument("--profile", default="quick")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--validation-cohort", help="score this generated cohort's CN/MCI/AD subjects, not the test split")
    p.add_argument("--inserted", action="store_true", help="also score atrophy inserted into the CN subjects")
    p.add_argument("--losses", type=float, nargs="+", default=[0.1, 0.25])
    p.add_argument("--other-regions", type=int, default=4)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    params = SimpleNamespace(data_dir=args.data, profile=args.profile, cohort_seed=0, seed=0, dataset="")
    data = open_dataset(params)
    run = open_normative_model(params)
    model, stats = run.model, run.stats
    labels, _ = atlas_arrays(stats.atlas, stats.resolution)
    reference = run.reference()
    test = _cohort_subjects(args.validation_cohort) if args.validation_cohort else run.split("test", ["CN", "MCI", "AD"])
    t0 = time.perf_counter()
    ref_cov = covariates_of(reference)
    baseline = fit_intensity_regional_model(stats, load_volumes(reference["path"], progress=False), ref_cov, labels)
    volumes, cov = load_volumes(test["path"], progress=False), covariates_of(test)
    profiles = {"no network: conditional intensity z": intensity_profiles(stats, baseline, volumes, cov, labels)}
    _, z = deviation_maps(model, stats, volumes, cov)
    profiles["autoencoder (notebook 04)"] = regional_profiles(stats, z, labels, cov)[0]
    dx = test["diagnosis"].to_numpy()
    profiles["combined (Stouffer)"], rho = combined_profile(profiles["autoencoder (notebook 04)"],
                                                            profiles["no network: conditional intensity z"], dx == "CN")
    targets = ad_target_regions(list(profiles["autoencoder (notebook 04)"].columns))
    scored = f"validation cohort {args.validation_cohort}" if args.validation_cohort else "held-out test subjects"
    print(f"{data.source}; reference n={len(reference)} CN; {scored} {test['diagnosis'].value_counts().to_dict()}; "
          f"regional z correlation of the two detectors on CN: {rho:.2f}; {time.perf_counter() - t0:.0f} s")
    for name, frame in profiles.items():
        hits, _ = ad_localisation(frame[dx == "AD"], targets, args.top_k)
        composite = target_composite(frame, targets).to_numpy()
        auc = age_matched_auc(composite, dx, test["age"], "AD", seed=0)
        healthy = frame[dx == "CN"].abs().to_numpy() > 1.96
        print(f"{name}: AD target in top {args.top_k} {hits['hit_rate']:.2f} ({hits['hits']:.0f}/{hits['n']:.0f}; "
              f"chance {hits['chance']:.2f}); MTL composite AUC vs age-matched CN {auc['auc']:.2f} "
              f"[{auc['ci_low']:.2f}, {auc['ci_high']:.2f}]; healthy test regions |z| > 1.96: {healthy.mean():.3f}")
    if args.inserted:
        _inserted(args, stats, model, baseline, volumes[dx == "CN"], cov[dx == "CN"].reset_index(drop=True),
                  labels, targets, rho)


def _inserted(args, stats, model, baseline, volumes, cov, labels, targets, rho) -> None:
    """Score the three profiles on atrophy inserted into the healthy subjects (notebook 04, section 3b)."""
    from nbutils.anatomy import load_tissue_maps, standard_grid
    from nbutils.normative.sensitivity import (
        atrophy_regions,
        atrophy_sensitivity,
        profile_methods,
        sensitivity_summary,
    )

    profilers = profile_methods(model, stats, labels, baseline, rho)
    regions = stats.regional.regions
    shrunk = atrophy_regions(regions, targets, args.other_regions, seed=0)
    csf = load_tissue_maps(standard_grid(stats.resolution))["csf"].get_fdata()
    t0 = time.perf_counter()
    table = atrophy_sensitivity(profilers, volumes, cov, labels, regions, shrunk, args.losses, csf, progress=False)
    summary = sensitivity_summary(table, targets, args.top_k, len(regions))
    print(f"\ninserted atrophy in {len(volumes)} CN scans, regions {shrunk}, losses {args.losses} "
          f"({time.perf_counter() - t0:.0f} s)")
    print(summary.round(3).to_string())
    hit = table[table["loss"] > 0].assign(hit=lambda t: t["rank"] <= args.top_k)
    wide = hit.pivot_table(index=["scan", "region", "loss"], columns="method", values="hit").astype(bool)
    print(f"pooled over regions and losses (n = {len(wide)} insertions): "
          + ", ".join(f"{m} {wide[m].mean():.3f}" for m in wide.columns))
    for other in ("no network", "autoencoder"):
        a_only, b_only, p_value = mcnemar_exact(wide["combined"].to_numpy(), wide[other].to_numpy())
        print(f"combined vs {other}: found by combined only {a_only}, by {other} only {b_only}, "
              f"McNemar exact p = {p_value:.3g}")


if __name__ == "__main__":
    main()
