"""Speed and accuracy of the pre-processing pipeline on synthetic native-space scans.

Generates (or reuses) a small whole-head synthetic cohort with ground truth
(1 mm-ish site voxels, arbitrary pose, bias field), runs every step on each scan
in this process, and prints wall and CPU seconds per step (CPU = this process,
all ANTs/ITK/torch threads: steadier than wall time on a shared machine), peak
resident memory, brain-mask Dice and mean registration error against the truth.
Target (issue 4): <= 15 s per 1 mm whole-head scan on a 2-core machine,
Dice >= 0.95, error <= 2 mm.

    .venv/bin/python benchmarks/bench_prep.py [n_scans] [cohort_dir] [affine|syn]
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    import nibabel as nib

    from nbutils.datasets import load_bids
    from nbutils.prep import PrepConfig, pipeline, steps
    from nbutils.prep.evaluate import evaluate_scan
    from nbutils.synth import ensure_cohort
    from nbutils.synth.cohort import subject_paths

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("data/synthetic/bench-native")
    config = PrepConfig(reg=sys.argv[3] if len(sys.argv) > 3 else "affine")
    print(f"registration: {config.reg}")
    ensure_cohort(
        root, n_healthy=n - n // 2, n_mci=0, n_ad=0, n_tumour=n // 2, space="native", seed=0
    )
    table = load_bids(root)
    steps._deepbet()  # load the CNN once, outside the timings
    rows, cpu_rows = [], []
    for _, row in table.iterrows():
        t0, c0 = time.perf_counter(), time.process_time()
        img = steps.load_and_validate(row["path"])
        load, load_cpu = time.perf_counter() - t0, time.process_time() - c0
        with steps.private_tmpdir() as tmp:
            cpu = {}
            images, seconds, metrics = pipeline.preprocess_image(img, config, tmp, cpu)
            truth = subject_paths(root, row["participant_id"])
            scores = evaluate_scan(img, images["native_mask"], images["registration"],
                                   nib.load(truth["mask"]), nib.load(truth["xfm"]))  # fmt: skip
        rows.append({"scan": row["scan_id"], "shape": "x".join(map(str, img.shape)),
                     "voxel_mm": "x".join(f"{z:.2g}" for z in img.header.get_zooms()[:3]), "load": load,
                     **seconds, "total": load + sum(seconds.values()), **scores})  # fmt: skip
        cpu_rows.append({"load": load_cpu, **cpu, "total": load_cpu + sum(cpu.values())})
    out = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(out.round(3).to_string(index=False))
    step_cols = [*pipeline.STEP_NAMES, "total"]
    print("\nmean wall seconds per step:", out[step_cols].mean().round(2).to_dict())
    print("mean CPU seconds per step: ", pd.DataFrame(cpu_rows)[step_cols].mean().round(2).to_dict())
    print(
        f"mean mask Dice {out['mask_dice'].mean():.4f}, mean registration error {out['reg_error_mm'].mean():.2f} mm"
    )
    print(
        f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    print(
        f"load average during the run: {np.round(__import__('os').getloadavg(), 2).tolist()} (shared machine)"
    )


if __name__ == "__main__":
    main()
