"""Single-subject inference time of the normative model: preprocessed volume -> z-map + profile.

Run on demand (not a test)::

    .venv/bin/python benchmarks/bench_inference.py [--checkpoint CKPT] [--resolution 2] [--repeats 10]

``--checkpoint`` may be an ``ensemble.json``; with a conditional reference the
scan is given covariates (age 70, sex F, the reference's first site), so the
age/sex/site-conditional path is what is timed. Seconds are also printed per
ensemble member. Without ``--checkpoint`` an untrained model of the default architecture is timed
(speed does not depend on the weights) with normative statistics fitted on
random volumes. Prints the median seconds of map + profile, of the same with
the thresholded segmentation, and the peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np


def _setup(checkpoint: str | None, resolution: float):
    from nbutils.anatomy import load_brain_mask, standard_grid
    from nbutils.normative.model import NormativeAutoencoder
    from nbutils.normative.pipeline import atlas_arrays, fit_normative_stats
    from nbutils.normative.stats import load_stats
    from nbutils.normative.train import load_autoencoder

    if checkpoint:
        stats = load_stats(checkpoint)
        model = load_autoencoder(checkpoint)
    else:
        grid = standard_grid(resolution)
        mask = np.asarray(load_brain_mask(grid).dataobj) > 0
        model = NormativeAutoencoder().eval()
        rng = np.random.default_rng(0)
        vols = (rng.normal(size=(5, *grid.shape)) * mask).astype(np.float32)
        stats = fit_normative_stats(model, vols[:3], vols[3:], mask, resolution=resolution)
    labels, _ = atlas_arrays(stats.atlas, stats.resolution)
    return model, stats, labels


def main() -> None:
    from nbutils.normative.pipeline import analyse_volume

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--resolution", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from nbutils.normative.model import members_of

    model, stats, labels = _setup(args.checkpoint, args.resolution)
    cov = None
    if stats.conditional:
        cov = {"age": 70.0, "sex": "F", "site": stats.conditional_residual.design.sites[0]}
    rng = np.random.default_rng(1)
    volume = (rng.normal(size=stats.mask.shape) * stats.mask).astype(np.float32)
    analyse_volume(model, stats, volume, labels, covariates=cov)  # warm-up
    plain, full = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        analyse_volume(model, stats, volume, labels, segment=False, covariates=cov)
        t1 = time.perf_counter()
        analyse_volume(model, stats, volume, labels, segment=True, covariates=cov)
        plain.append(t1 - t0)
        full.append(time.perf_counter() - t1)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    k = len(members_of(model))
    print(f"grid {stats.mask.shape}, {k} member(s), {'conditional' if cov else 'unconditional'} reference: "
          f"map + profile {np.median(plain):.3f} s (min {np.min(plain):.3f}; "
          f"{np.median(plain) / k:.3f} s per member); with segmentation {np.median(full):.3f} s; "
          f"peak memory {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
