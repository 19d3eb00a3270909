"""Does tumour typing need a CNN? A no-network baseline on notebook 06's quick task. Validation folds only.

Run on demand (a study, not a test; about a minute per threshold; the data folder of a quick run)::

    .venv/bin/python benchmarks/bench_tumour_lesion_baseline.py --data /tmp/demo/data --thresholds 2.5 3 4

The baseline sees what the 3D networks see: each voxel z-scored against the control training subjects of the
fold (the notebook's ``VoxelStandardise``, 4 mm working grid), the training controls themselves leave-one-out
(``bench_tumour_learning_curve.network_input`` with ``loo``, so they look like held-out controls). It then
keeps the connected component (26-neighbourhood) of ``|z| > threshold`` with the largest summed |z| and
describes it by 8 numbers: found or not, centroid (3 coordinates, as a share of the grid), voxels, summed |z|,
mean signed z and the largest |z| of the map. A random forest (300 trees, balanced class weights, seed 0) is
trained on the fold's training subjects and scored on its validation subjects. The test subjects of
``subject_split(test_size=0.2, n_folds=3, seed=0)`` are never used. Chance is 0.25.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def blob_features(z: np.ndarray, threshold: float) -> np.ndarray:
    """Features of the component of ``|z| > threshold`` with the largest summed |z| (zeros if none)."""
    from scipy import ndimage

    from nbutils.evaluation import lesion_components

    a = np.abs(z)
    labels, n = lesion_components(a > threshold)
    if n == 0:
        return np.zeros(8)
    mass = ndimage.sum(a, labels, index=np.arange(1, n + 1))
    comp = labels == int(np.argmax(mass)) + 1
    centre = np.argwhere(comp).mean(0) / np.array(z.shape)
    return np.array([1.0, *centre, comp.sum(), mass.max(), z[comp].mean(), a.max()])


def main() -> None:
    from bench_tumour_learning_curve import network_input
    from bench_tumour_settings import CLASSES, load_quick_task
    from sklearn.ensemble import RandomForestClassifier

    from nbutils.classify.experiment import select
    from nbutils.classify.metrics import classification_metrics, confusion_matrix
    from nbutils.classify.splits import subject_split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="data folder of a quick run (with notebook 06's extension)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[3.0])
    args = p.parse_args()
    task, source = load_quick_task(args.data)
    split = subject_split(task.subjects, task.y, test_size=0.2, n_folds=3, seed=0)
    images = torch.as_tensor(task.images if task.images.ndim == 5 else task.images[:, None])
    print(f"{source}; {len(task.y)} subjects, grid {task.shape}; validation folds only; chance 0.25")
    for threshold in args.thresholds:
        scores, recalls = [], []
        for i in range(split.n_folds):
            train, val = (select(task.subjects, s) for s in split.fold(i))
            z = network_input({"loo": True}, images, train[task.y[train] == 0], None)[:, 0].numpy()
            feats = {j: blob_features(z[j], threshold) for j in np.concatenate([train, val])}
            forest = RandomForestClassifier(n_estimators=300, class_weight="balanced", random_state=0)
            forest.fit(np.stack([feats[j] for j in train]), task.y[train])
            probs = forest.predict_proba(np.stack([feats[j] for j in val]))
            scores.append(classification_metrics(task.y[val], probs)["balanced_accuracy"])
            cm = confusion_matrix(task.y[val], probs.argmax(1), len(CLASSES))
            recalls.append(cm.diagonal() / cm.sum(1))
        rec = np.mean(recalls, 0)
        print(f"|z| > {threshold:g}: validation balanced accuracy {np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f} "
              f"(folds {', '.join(f'{s:.3f}' for s in scores)}); mean recall "
              + ", ".join(f"{c} {r:.2f}" for c, r in zip(CLASSES, rec, strict=True)), flush=True)


if __name__ == "__main__":
    main()
