"""Offline pre-processing of T1 scans: N4, deepbet, ANTs registration to MNI, standardisation, QC.

Steps live in :mod:`nbutils.prep.steps` (each usable on its own), the batch
in :mod:`nbutils.prep.pipeline`, accuracy against synthetic ground truth in
:mod:`nbutils.prep.evaluate`, the ``nbutils prep`` command in
:mod:`nbutils.prep.cli`. Heavy libraries (ANTsPy, torch/deepbet) load lazily.
"""

from nbutils.prep.pipeline import PrepConfig, output_paths, preprocess_image, process_scan, run_prep
from nbutils.prep.steps import PrepError

__all__ = [
    "PrepConfig",
    "PrepError",
    "output_paths",
    "preprocess_image",
    "process_scan",
    "run_prep",
]
