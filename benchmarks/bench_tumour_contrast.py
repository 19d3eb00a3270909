"""How visible is each tumour class against healthy controls? Voxel z inside the tumours, no model.

Run on demand after notebook 06 of the quick profile (it needs the cohort and its tumour extension)::

    .venv/bin/python benchmarks/bench_tumour_contrast.py --data data

Each voxel of the 2 mm MNI-space T1 scans is z-scored against the first 30 controls (``CN``) of notebook 06's
quick dataset: their voxel-wise mean and SD, with the SD floored at its 10th percentile inside the head. For 20
subjects of each tumour class the script takes the mean ``|z|`` over the voxels of the true tumour. It compares
that with held-out controls (the next 10 ``CN``, used in turn) over the same voxels: what healthy tissue scores
there. The ratio of the two medians is the class's contrast. A class whose tumours barely beat healthy variation
cannot be typed from a non-contrast T1 by any model, at least not from intensity. It also prints each class's
mean standardised intensity inside the tumour beside grey matter's, white matter's and CSF's (voxels with
tissue probability > 0.6 in 5 controls).
"""

from __future__ import annotations

import argparse

import numpy as np

TUMOURS = ("glioma", "meningioma", "pituitary")


def tumour_mask(row) -> np.ndarray:
    import nibabel as nib

    from nbutils.classify.volumes import derivative_path

    return np.asarray(nib.load(derivative_path(row.root, row.participant_id, "desc-tumour_dseg.nii.gz")).dataobj) > 0


def tissue_intensities(volumes: np.ndarray, resolution: float) -> dict[str, float]:
    """Mean intensity of grey matter, white matter and CSF (tissue probability > 0.6) over ``volumes``."""
    from nbutils import anatomy

    maps = anatomy.load_tissue_maps(anatomy.standard_grid(resolution))
    return {name: float(np.mean([v[img.get_fdata() > 0.6].mean() for v in volumes])) for name, img in maps.items()}


def main() -> None:
    from bench_tumour_settings import quick_tumour_dataset

    from nbutils.normative.data import load_volume, load_volumes

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data", help="data_dir of a quick run with notebooks 00 and 06 done")
    p.add_argument("--per-class", type=int, default=20)
    args = p.parse_args()
    data = quick_tumour_dataset(args.data)
    controls = data.table[data.table["diagnosis"] == "CN"]
    reference = load_volumes(controls["path"].head(30))
    held_out = load_volumes(controls["path"].iloc[30:40])
    mean, sd = reference.mean(0), reference.std(0)
    sd = np.maximum(sd, np.quantile(sd[sd > 0], 0.1))
    tissue = tissue_intensities(reference[:5], data.resolution)
    print(f"{data.source}: voxel z against {len(reference)} controls; {len(held_out)} held-out controls as the "
          f"healthy comparison; standardised intensity of " + ", ".join(f"{k} {v:+.2f}" for k, v in tissue.items()))
    print(f"{'class':10s}  {'tumour |z|':>10s}  {'healthy |z|':>11s}  contrast  intensity in tumour")
    for dx in TUMOURS:
        tumour, healthy, level = [], [], []
        for i, row in enumerate(data.table[data.table["diagnosis"] == dx].head(args.per_class).itertuples()):
            mask, image = tumour_mask(row), load_volume(row.path)
            tumour.append(float(np.abs((image - mean) / sd)[mask].mean()))
            healthy.append(float(np.abs((held_out[i % len(held_out)] - mean) / sd)[mask].mean()))
            level.append(float(image[mask].mean()))
        a, b = np.median(tumour), np.median(healthy)
        print(f"{dx:10s}  {a:10.2f}  {b:11.2f}  {a / b:7.1f}x  {np.median(level):+.2f}   "
              f"(medians over {len(tumour)} subjects)")


if __name__ == "__main__":
    main()
