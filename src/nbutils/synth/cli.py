"""``nbutils synth``: write a synthetic cohort (see :func:`nbutils.synth.generate_cohort`)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from .cohort import generate_cohort

    root = generate_cohort(
        args.out, n_healthy=args.n_healthy, n_mci=args.n_mci, n_ad=args.n_ad, n_tumour=args.n_tumour,
        space=args.space, seed=args.seed, jobs=args.jobs, resolution=args.resolution,
        progress=not args.no_progress,
    )
    print(f"synthetic cohort written to {root} (SYNTHETIC data; ground truth in {root}/derivatives/synth)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` command to the ``nbutils`` parser."""
    p = subparsers.add_parser(
        "synth",
        help="generate the synthetic T1 cohort with ground truth (BIDS)",
        description="Generate a synthetic T1 cohort (healthy ageing, MCI/AD-like atrophy, glioma, "
        "meningioma, pituitary adenoma) from MNI152 + Neuromorphometrics priors, as a BIDS dataset "
        "with ground truth under derivatives/synth.",
    )
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--n-healthy", type=int, default=20, help="cognitively normal subjects (default 20)")
    p.add_argument("--n-mci", type=int, default=0, help="MCI subjects (default 0)")
    p.add_argument("--n-ad", type=int, default=0, help="AD subjects (default 0)")
    p.add_argument("--n-tumour", type=int, default=0, help="tumour subjects, split over 3 classes (default 0)")
    p.add_argument("--space", choices=("mni", "native"), default="mni", help="output space (default mni)")
    p.add_argument("--resolution", type=float, default=2.0, help="MNI grid voxel size in mm (default 2)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
