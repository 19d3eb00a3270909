"""Time of the normative model's non-network work: fitting its statistics and scoring tumour detection.

Run on demand (not a test)::

    .venv/bin/python benchmarks/bench_normative_stats.py [--model DIR] [--repeats 1]

Notebook 02 fits the statistics once per build (the main model, and once per
replicate of notebook 03's stability study); notebook 03 scores tumour
detection per class and threshold. Both are plain NumPy/SciPy/PCNtoolkit.

With ``--model`` (a folder written by ``build_normative_model``, e.g.
``data/models/quick/normative_ae``) the statistics are refitted from that
model's own cross-fitted residuals (so the quick profile's real sizes: 40
reference scans on the 2 mm grid, 134 regions) and the detection table is
scored on its held-out tumour scans. Without it, random volumes of the same
sizes stand in (speed does not depend on the values).

To compare two versions of the code as a ratio in one run, point
``PYTHONPATH`` at each checkout in turn.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def _from_model(folder: Path):
    from nbutils.normative.data import load_volumes
    from nbutils.normative.deviation import residual
    from nbutils.normative.model import reconstruct
    from nbutils.normative.pipeline import covariates_of
    from nbutils.normative.stats import load_stats
    from nbutils.normative.train import load_autoencoder

    table = pd.read_csv(folder / "subjects.tsv", sep="\t")
    stats = load_stats(folder / "ensemble.json")
    members = json.loads((folder / "ensemble.json").read_text())["members"]
    res, vols, rows = [], [], []
    for k, ckpt in enumerate(members):
        held_out = table[table["fold"] == k]
        v = load_volumes(held_out["path"], progress=False)
        res.append(residual(v, reconstruct(load_autoencoder(folder / ckpt), v), stats.mask))
        vols.append(v)
        rows.append(held_out)
    reference = pd.concat(rows, ignore_index=True)
    options = dict(stats.provenance.get("stats_options", {}))
    return np.concatenate(res), np.concatenate(vols), stats.mask, covariates_of(reference), options


def _random(n: int = 40):
    from nbutils.anatomy import load_brain_mask, standard_grid

    grid = standard_grid(2.0)
    mask = np.asarray(load_brain_mask(grid).dataobj) > 0
    rng = np.random.default_rng(0)
    res = (rng.normal(size=(n, *grid.shape)) * mask).astype(np.float32)
    vols = (rng.normal(size=(n, *grid.shape)) * mask).astype(np.float32)
    cov = pd.DataFrame({"age": rng.uniform(20, 86, n), "sex": rng.choice(["F", "M"], n),
                        "site": rng.choice(["siteA", "siteB", "siteC"], n)})
    return res, vols, mask, cov, {"resolution": 2.0}


def _detection_inputs(stats, n: int = 24):
    rng = np.random.default_rng(1)
    shape = stats.mask.shape
    truth = np.zeros((n, *shape), bool)
    for i in range(n):
        c = [rng.integers(s // 4, 3 * s // 4) for s in shape]
        truth[i, c[0] - 4 : c[0] + 4, c[1] - 4 : c[1] + 4, c[2] - 4 : c[2] + 4] = True
    scores = {m: np.abs(rng.normal(size=(n, *shape))).astype(np.float32) + 2 * truth for m in
              ("intensity", "voxel_z", "autoencoder")}
    thresholds = {fpr: {m: float(np.quantile(s[:, stats.mask], 1 - fpr)) for m, s in scores.items()}
                  for fpr in (0.05, 0.01)}  # fmt: skip
    classes = np.array(["glioma", "meningioma", "pituitary"] * (n // 3))
    return scores, thresholds, truth, classes


def main() -> None:
    from nbutils.normative.evaluate import detection_by_class
    from nbutils.normative.pipeline import normative_stats_from_residuals

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="a normative model folder (ensemble.json and subjects.tsv)")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    res, vols, mask, cov, options = _from_model(args.model) if args.model else _random()
    fit_s, det_s = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        stats = normative_stats_from_residuals(res, vols, mask, cov, **options)
        fit_s.append(time.perf_counter() - t0)
        scores, thresholds, truth, classes = _detection_inputs(stats)
        t0 = time.perf_counter()
        detection_by_class(scores, thresholds, truth, classes, mask, min_size=8)
        det_s.append(time.perf_counter() - t0)
    print(f"{len(res)} reference maps {mask.shape} ({'model ' + str(args.model) if args.model else 'random'}): "
          f"statistics fit {np.median(fit_s):.1f} s; detection table (24 lesion scans, 3 methods, "
          f"2 FPRs) {np.median(det_s):.1f} s")


if __name__ == "__main__":
    main()
