"""Which autoencoder variant reconstructs sharper and detects inserted anomalies better?

Run on demand (not a test, and slow: one training per variant)::

    nice -n 5 .venv/bin/python benchmarks/bench_ae_variants.py \\
        --data /tmp/cls/data/synthetic/quick-mni --max-epochs 40 --patience 8 --max-minutes 5

Model selection without the test subjects: the healthy (CN) subjects are split
exactly as notebook 02 does (``assign_splits(table, 0.0, 0.2, seed=0)``) and
only the *non-test* CN subjects are used, cut into a fixed train (3/4) and
validation (1/4) part balanced on site and age (``assign_folds(..., 4)``,
fold 0 validates). Every variant trains with the same budget and seed on the
train part. On the validation part it reports:

* ``val_l1``: mean absolute residual inside the analysis mask;
* ``sd_brain`` / ``sd_edges``: median over voxels of the healthy residual SD
  across validation subjects, inside the mask and at edges (the 20 % of mask
  voxels with the largest gradient of the mean validation image);
* anomalies painted into the validation scans (:func:`nbutils.normative.inserted.insert_anomalies`:
  brighter and darker ellipsoids of 0.5-20 cm³): pooled voxel ``auprc`` beside
  chance (the anomalous-voxel prevalence), ``best_dice``, and at the 5 % healthy
  voxel-FPR threshold the share of anomalies detected and the false-positive
  components per healthy scan. Each anomalous scan's z-map is computed against
  the residuals of the *other* validation subjects (leave-one-out), healthy
  thresholds from :func:`~nbutils.normative.deviation.leave_one_out_z`;
* ``s_per_epoch``: training seconds per epoch (machine load changes it).

A no-network baseline (z-score of the intensities themselves against the other
validation subjects) is reported beside the variants.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

VARIANTS: dict[str, dict] = {
    "current (1 conv/level, L1)": {},
    "2 convs/level": {"model": {"convs_per_level": 2}},
    "L1 + 0.5 SSIM": {"model": {"ssim_weight": 0.5}},
    "full-res head (8 maps)": {"model": {"head_channels": 8}},
    "3 levels, latent 8": {"model": {"channels": [16, 32, 64], "latent_channels": 8}},
    "denoising (coarse noise 1.0)": {"data": {"noise_std": 1.0, "noise_factor": 8}},
}
POST = {"median_size": 3, "erode": 1}
MIN_SIZE = 8
FPR = 0.05


def split_table(root: str) -> pd.DataFrame:
    """Non-test CN subjects of notebook 02's split, with a fixed train/val ``split`` column."""
    from nbutils.datasets import load_bids
    from nbutils.normative.data import assign_folds, assign_splits

    table = load_bids(root)
    splits = assign_splits(table, 0.0, 0.2, seed=0)
    ref = splits[(splits["split"] != "test") & (splits["diagnosis"] == "CN")]
    return assign_folds(ref, 4, seed=0).drop(columns="fold").reset_index(drop=True)


def edge_mask(images: np.ndarray, mask: np.ndarray, share: float = 0.2) -> np.ndarray:
    """Mask voxels in the top ``share`` of the gradient magnitude of the mean image."""
    grad = np.linalg.norm(np.stack(np.gradient(images.mean(0))), axis=0)
    cut = np.quantile(grad[mask], 1 - share)
    return mask & (grad >= cut)


def anomaly_scores(healthy_maps: np.ndarray, anomalous_maps: np.ndarray, mask: np.ndarray):
    """Post-processed |z| of healthy (leave-one-out) and anomalous maps (against the other subjects)."""
    from nbutils.normative.deviation import fit_voxel_norm, leave_one_out_z, postprocess

    healthy = postprocess(np.abs(leave_one_out_z(healthy_maps, mask)), mask, **POST)
    anomalous = np.empty_like(anomalous_maps)
    for i in range(len(anomalous_maps)):
        norm = fit_voxel_norm(np.delete(healthy_maps, i, axis=0), mask)
        anomalous[i] = postprocess(np.abs(norm.z(anomalous_maps[i])), mask, **POST)
    return healthy, anomalous


def detection(healthy: np.ndarray, anomalous: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """Voxel AUPRC, best Dice, lesion-wise detection and false positives at the healthy 5 % FPR."""
    from nbutils.evaluation import false_positive_components, lesion_detection
    from nbutils.normative.deviation import auprc, best_dice, threshold_at_fpr
    from nbutils.normative.evaluate import segment

    flat_s, flat_t = anomalous[:, mask].ravel(), truth[:, mask].ravel()
    thr = threshold_at_fpr(healthy, mask, FPR)
    lesions = lesion_detection(segment(anomalous, thr, mask, MIN_SIZE), truth, 8.0)
    fp = np.atleast_1d(false_positive_components(segment(healthy, thr, mask, MIN_SIZE)))
    small = lesions["volume_cm3"] < 2.0
    return {
        "auprc": auprc(flat_s, flat_t), "auprc_chance": float(flat_t.mean()),
        "best_dice": best_dice(flat_s, flat_t)[0],
        "detected": float(lesions["detected"].mean()),
        "detected_small": float(lesions.loc[small, "detected"].mean()),
        "fp_per_scan": float(fp.mean()),
    }  # fmt: skip


def evaluate_variant(model, val: np.ndarray, inserted, mask: np.ndarray, edges: np.ndarray) -> dict:
    """Residual sharpness and inserted-anomaly detection of one trained model on the validation scans."""
    from nbutils.normative.deviation import residual
    from nbutils.normative.model import reconstruct

    res = residual(val, reconstruct(model, val), mask)
    res_anom = residual(inserted.volumes, reconstruct(model, inserted.volumes), mask)
    sd = res.std(axis=0, ddof=1)
    healthy, anomalous = anomaly_scores(res, res_anom, mask)
    return {
        "val_l1": float(np.abs(res[:, mask]).mean()),
        "sd_brain": float(np.median(sd[mask])),
        "sd_edges": float(np.median(sd[edges])),
        **detection(healthy, anomalous, inserted.truth, mask),
    }


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table of ``frame`` (floats to 4 significant digits; no tabulate needed)."""
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def emit_report(text: str, path: str | None) -> None:
    """Print a study's markdown report and, given a path, write it there (atomically)."""
    print(text)
    if path:
        from nbutils.io import write_text

        write_text(path, text)


def main() -> None:
    from nbutils.anatomy import load_analysis_mask, load_brain_mask
    from nbutils.normative.data import grid_for_shape, load_volumes
    from nbutils.normative.inserted import insert_anomalies
    from nbutils.normative.train import load_autoencoder, train_autoencoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/cls/data/synthetic/quick-mni", help="MNI-grid synthetic cohort")
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--max-minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="*", help="names of VARIANTS to run (default: all)")
    p.add_argument("--out", help="folder for models and results.json (default: a temporary one)")
    p.add_argument("--report", help="write the results table (markdown) here")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_ae_"))
    table = split_table(args.data)
    val = load_volumes(table.loc[table["split"] == "val", "path"])
    grid = grid_for_shape(val.shape[1:])
    mask = np.asarray(load_analysis_mask(grid).dataobj) > 0
    brain = np.asarray(load_brain_mask(grid).dataobj) > 0
    edges = edge_mask(val, mask)
    inserted = insert_anomalies(val, brain, per_scan=3, seed=args.seed + 1)
    n = table["split"].value_counts().to_dict()
    print(f"{n.get('train', 0)} train / {n.get('val', 0)} val non-test CN subjects; "
          f"{len(inserted.table)} inserted anomalies ({args.data})", flush=True)

    rows = []
    base = detection(*anomaly_scores(val, inserted.volumes, mask), inserted.truth, mask)
    rows.append({"variant": "baseline: intensity z (no network)", **base})
    print(rows[-1], flush=True)
    for name in args.variants or VARIANTS:
        spec = VARIANTS[name]
        folder = out / name.split(" (")[0].replace(" ", "_").replace("/", "-").replace(",", "")
        t0 = time.perf_counter()
        result = train_autoencoder(table, folder, model=spec.get("model"), data=spec.get("data"),
                                   max_epochs=args.max_epochs, patience=args.patience,
                                   max_minutes=args.max_minutes, seed=args.seed, progress=False)
        summary = json.loads((folder / "training.json").read_text())
        model = load_autoencoder(result.best_checkpoint)
        rows.append({
            "variant": name, **evaluate_variant(model, val, inserted, mask, edges),
            "epochs": summary["epochs"], "stopped_by": summary["stopped_by"],
            "s_per_epoch": result.train_seconds / max(summary["epochs"], 1),
            "n_params": sum(q.numel() for q in model.parameters()),
            "total_s": time.perf_counter() - t0,
        })  # fmt: skip
        print(rows[-1], flush=True)
        pd.DataFrame(rows).to_json(out / "results.json", orient="records", indent=1)
    frame = pd.DataFrame(rows)
    text = (
        f"# Autoencoder variants, {date.today().isoformat()}\n\n"
        f"Synthetic cohort, quick profile ({args.data}), non-test CN only: {n.get('train', 0)} train / "
        f"{n.get('val', 0)} validation subjects; {len(inserted.table)} inserted anomalies "
        f"(0.5-20 cm³, half brighter, half darker, seed {args.seed + 1}). Budget per variant: "
        f"max_epochs {args.max_epochs}, patience {args.patience}, max_minutes {args.max_minutes}, seed {args.seed}. "
        f"Thresholds at {FPR:.0%} healthy voxel FPR, min component {MIN_SIZE} voxels, median filter "
        f"{POST['median_size']}, erosion {POST['erode']}.\n\n"
        + markdown(frame) + "\n"
    )
    emit_report(text, args.report)


if __name__ == "__main__":
    main()
