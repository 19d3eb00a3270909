"""``nbutils prep``: pre-process an IXI, BIDS or BraTS folder into BIDS derivatives."""

from __future__ import annotations

import argparse
import sys

from nbutils.parallel import add_executor_arguments, executor_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prep`` sub-command."""
    p = subparsers.add_parser(
        "prep",
        help="pre-process T1 scans (N4, deepbet, ANTs to MNI, standardisation, QC)",
        description="Pre-process every T1 scan of a dataset folder into BIDS derivatives with a "
        "prep.tsv QC table. Scans done earlier with the same parameters are skipped; failures "
        "are recorded; scans the input QC rejects (voxels too coarse, brain cut by the field of "
        "view) are listed with the reason, doubtful ones are warned about; the command exits 1 "
        "naming failed and rejected scans. Runs in this process, --jobs local processes or on a "
        "Dask cluster (--scheduler / --cluster local).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--bids", metavar="DIR", help="BIDS dataset (participants.tsv + sub-*/anat/*_T1w)"
    )
    src.add_argument("--ixi", metavar="DIR", help="folder of IXI*-T1.nii.gz files (+ IXI.xls)")
    src.add_argument("--brats", metavar="DIR", help="BraTS release folder of case folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output derivatives folder")
    p.add_argument(
        "--reg", choices=("affine", "syn"), default="affine", help="registration (default affine)"
    )
    p.add_argument("--brain", choices=("deepbet", "registration"), default="deepbet",
                   help="brain extraction (default deepbet, registration fallback)")  # fmt: skip
    p.add_argument("--intensity", choices=("zscore", "whitestripe", "histogram"), default="zscore")
    p.add_argument(
        "--resolution", type=float, default=2.0, help="output grid voxel size in mm (default 2)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_executor_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nbutils.datasets import load_dataset
    from nbutils.prep.pipeline import PrepConfig, run_prep

    kind, root = next((k, getattr(args, k)) for k in ("bids", "ixi", "brats") if getattr(args, k))
    out = Path(args.out).resolve()
    if out == Path(root).resolve():
        print("nbutils prep: --out must not be the raw dataset folder itself", file=sys.stderr)
        return 2
    table = load_dataset(root, kind)
    config = PrepConfig(reg=args.reg, brain=args.brain, intensity=args.intensity,
                        resolution=args.resolution, seed=args.seed)  # fmt: skip
    try:
        with executor_from_args(args) as executor:
            prep = run_prep(table, out, config, progress=not args.no_progress, executor=executor)
    except ValueError as err:  # contradictory --jobs/--scheduler/--cluster/--workers
        print(f"nbutils prep: {err}", file=sys.stderr)
        return 2
    return summarise(prep, out)


def summarise(prep, out) -> int:
    """Print the batch summary (QC warnings and rejections with reasons); the exit code."""
    done = prep[prep["status"] == "done"]
    warned = done[done["qc"] == "warn"]
    print(f"nbutils prep: {len(done)}/{len(prep)} scans done ({int(prep['reused'].sum())} reused, "
          f"{len(warned)} with QC warnings) -> {out / 'prep.tsv'}")  # fmt: skip
    for _, row in warned.iterrows():
        print(f"  QC warning {row['scan_id']}: {row['qc_reasons']}")
    code = 0
    for status, what in (("rejected", "REJECTED by input QC"), ("failed", "FAILED")):
        bad = prep[prep["status"] == status]
        if len(bad):
            code = 1
            print(f"nbutils prep: {len(bad)} scan(s) {what}:", file=sys.stderr)
            for _, row in bad.iterrows():
                print(f"  {row['scan_id']}: {row['error']}", file=sys.stderr)
    return code
