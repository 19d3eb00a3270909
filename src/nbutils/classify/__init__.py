"""3D (and 2D) CNN classifiers for spatially normalised brain MRI.

Modules
-------
pif
    Patch individual filter layer (split → per-patch conv block → reassemble).
models
    Baseline CNN (the review's AD protocol) and the PIF network (Eitel et al.).
lightning
    One Lightning training path (early stopping, CSV logs, seeding).
splits
    Subject-level stratified test set + k folds, and the leakage check.
metrics
    Balanced accuracy and friends, mean ± SD summaries, learning curves.
experiment
    Cross-validation and repeated-subset runs built from the pieces above.
volumes
    Loading cohort volumes as arrays on a (coarser) working grid.
interpret
    Grad-CAM, occlusion sensitivity, MC-dropout uncertainty, saliency mass in regions.
slices2d
    2D slice datasets (folder per class): loader, duplicates, patient-level split.

Submodules import torch; import them explicitly (``from nbutils.classify.models import PIFNet``).
"""
