"""How visible is each tumour class against healthy controls? Voxel z inside the tumours, no model.

Run on demand after notebook 06 of the quick profile (it needs the cohort and its tumour extension)::

    .venv/bin/python benchmarks/bench_tumour_contrast.py --data data

Each voxel of the 2 mm MNI-space T1 scans is z-scored against the first 30 controls (``CN``) of the cohort:
their voxel-wise mean and SD, with the SD floored at its 10th percentile inside the head. For 20 subjects of
each tumour class the script takes the mean ``|z|`` over the voxels of the true tumour. It compares that with
held-out controls (the next 10 ``CN``, used in turn) over the same voxels: what healthy tissue scores there.
The ratio of the two medians is the class's contrast. A class whose tumours barely beat healthy variation
cannot be typed from a non-contrast T1 by any model, at least not from intensity.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

TUMOURS = ("glioma", "meningioma", "pituitary")


def cohort_table(synthetic: Path) -> pd.DataFrame:
    """Participants of the quick MNI cohort and its extension, with the folder each lives in."""
    folders = [synthetic / "quick-mni", synthetic / "quick-mni-extra"]
    missing = [str(f) for f in folders if not (f / "participants.tsv").is_file()]
    if missing:
        raise FileNotFoundError(f"no participants.tsv in {missing}: run notebooks 00 and 06 (quick) first")
    return pd.concat([pd.read_csv(f / "participants.tsv", sep="\t").assign(root=str(f)) for f in folders])


def t1(row) -> np.ndarray:
    import nibabel as nib

    path = next((Path(row.root) / row.participant_id / "anat").glob("*_T1w.nii.gz"))
    return nib.load(path).get_fdata(dtype=np.float32)


def tumour_mask(row) -> np.ndarray:
    import nibabel as nib

    path = next((Path(row.root) / "derivatives" / "synth" / row.participant_id / "anat").glob("*_desc-tumour_dseg.nii.gz"))
    return np.asarray(nib.load(path).dataobj) > 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data", help="data_dir of a quick run with notebooks 00 and 06 done")
    p.add_argument("--per-class", type=int, default=20)
    args = p.parse_args()
    table = cohort_table(Path(args.data) / "synthetic")
    controls = table[table["diagnosis"] == "CN"]
    reference = np.stack([t1(r) for r in controls.head(30).itertuples()])
    held_out = [t1(r) for r in controls.iloc[30:40].itertuples()]
    mean, sd = reference.mean(0), reference.std(0)
    sd = np.maximum(sd, np.quantile(sd[sd > 0], 0.1))
    print(f"synthetic cohort (quick, MNI 2 mm): voxel z against {len(reference)} controls; "
          f"{len(held_out)} held-out controls as the healthy comparison")
    print(f"{'class':10s}  {'tumour |z|':>10s}  {'healthy |z|':>11s}  contrast")
    for dx in TUMOURS:
        tumour, healthy = [], []
        for i, row in enumerate(table[table["diagnosis"] == dx].head(args.per_class).itertuples()):
            mask = tumour_mask(row)
            tumour.append(float(np.abs((t1(row) - mean) / sd)[mask].mean()))
            healthy.append(float(np.abs((held_out[i % len(held_out)] - mean) / sd)[mask].mean()))
        a, b = np.median(tumour), np.median(healthy)
        print(f"{dx:10s}  {a:10.2f}  {b:11.2f}  {a / b:7.1f}x   (medians over {len(tumour)} subjects)")


if __name__ == "__main__":
    main()
