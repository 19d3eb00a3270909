"""Is the voxel norm calibrated at every age on the *reference* itself? Healthy data only, no test subjects.

Run on demand after notebook 02 of a profile::

    .venv/bin/python benchmarks/bench_calibration_by_age.py --data data --profile quick

Notebook 03 checks calibration (5 % of healthy voxels with ``|z| > 1.96``) per age tertile and site on the
healthy *test* subjects: 10 in ``quick``, so 3–4 per tertile and a wide interval. This study asks the same
question of the 40 reference subjects, which have 4× the subjects per tertile. It recomputes each
reference subject's out-of-fold residual (the member that did not train on it) exactly as
:func:`~nbutils.normative.pipeline.build_normative_model` does. It then takes their leave-one-out z under the
conditional norm (:func:`~nbutils.normative.conditional.fit_conditional_voxel_norm`) and under the
unconditional fallback. The run's stored calibration factor must be reproduced, which checks that the
residuals are the model's own.

The leave-one-out is exact for the mean maps. The two log-variance coefficients and the single calibration
factor are fitted with the subject included, so a trend of the exceedance with age that shows here is a
misspecified variance model, not sampling noise of the test split. A flat reference with a tilted test split
points to the test split's small size.
"""

from __future__ import annotations

import argparse
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd


def out_of_fold_residuals(run, reference: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Each reference subject's residual from the member that did not train on it, in fold order."""
    from nbutils.normative.data import load_volumes
    from nbutils.normative.deviation import residual
    from nbutils.normative.model import reconstruct

    maps, rows = [], []
    for k, net in enumerate(run.model.members):  # member k trained on every fold but k
        held_out = reference[reference["fold"] == k]
        vols = load_volumes(held_out["path"], progress=False)
        maps.append(residual(vols, reconstruct(net, vols), run.stats.mask))
        rows.append(held_out)
    return np.concatenate(maps), pd.concat(rows, ignore_index=True)


def age_trend(z: np.ndarray, mask: np.ndarray, table: pd.DataFrame) -> tuple[float, float]:
    """Spearman correlation (and its p-value) of each subject's ``|z| > 1.96`` share with age."""
    from scipy import stats

    from nbutils.normative.deviation import frac_abs_z_above

    rho, p = stats.spearmanr(frac_abs_z_above(z, mask, 1.96), table["age"].to_numpy())
    return float(rho), float(p)


def main() -> None:
    from bench_ae_variants import emit_report, markdown  # the sibling study's report writers

    from nbutils.normative.conditional import fit_conditional_voxel_norm
    from nbutils.normative.evaluate import calibration_by_group
    from nbutils.normative.pipeline import covariates_of
    from nbutils.runs import open_normative_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data", help="data_dir of the run (notebook 02's model is read from it)")
    p.add_argument("--profile", default="quick")
    p.add_argument("--report", help="write the markdown report here")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    run = open_normative_model(SimpleNamespace(data_dir=args.data, profile=args.profile, cohort_seed=0, seed=0,
                                               dataset=""))
    residuals, reference = out_of_fold_residuals(run, run.reference())
    options = run.stats.provenance.get("stats_options", {})  # the smoothing the model was built with
    smoothing = {k: options[k] for k in ("sigma", "map_sigma") if k in options}
    mask = run.stats.mask
    norm, loo_z, fallback_z = fit_conditional_voxel_norm(residuals, mask, covariates_of(reference), **smoothing)
    stored = run.stats.conditional_residual.scale
    if not np.isclose(norm.scale, stored, rtol=1e-4):
        raise RuntimeError(f"calibration factor {norm.scale:.5f} differs from the model's {stored:.5f}: "
                           "these are not the residuals the model was fitted on")
    tables = {name: calibration_by_group(z, mask, reference).set_index("group")
              for name, z in (("conditional", loo_z), ("unconditional", fallback_z))}
    table = tables["conditional"][["n", "share", "ci_low", "ci_high"]].join(
        tables["unconditional"]["share"].rename("share, unconditional"))
    trends = {name: age_trend(z, mask, reference) for name, z in (("conditional", loo_z),
                                                                   ("unconditional", fallback_z))}
    lines = [
        f"# Calibration by age on the healthy reference ({run.stats.provenance.get('data_source', args.profile)})",
        "",
        f"{len(reference)} reference subjects, each scored leave-one-out with its out-of-fold residual "
        f"(calibration factor {norm.scale:.4f}, equal to the model's). Share of voxels with |z| > 1.96; "
        "target 0.05 ± 0.01; 95 % interval of the mean share over the group's subjects.",
        "",
        markdown(table.round(3).reset_index()),
        "",
        "Spearman correlation of a subject's share with age: "
        + "; ".join(f"{name} ρ = {rho:+.2f} (p = {pval:.3f})" for name, (rho, pval) in trends.items()),
        "",
        f"{time.perf_counter() - start:.0f} s.",
    ]
    emit_report("\n".join(lines) + "\n", args.report)


if __name__ == "__main__":
    main()
