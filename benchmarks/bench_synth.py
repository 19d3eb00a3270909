"""Benchmark the synthetic cohort generator: seconds per subject and peak memory.

Run on demand (not part of the tests)::

    .venv/bin/python benchmarks/bench_synth.py [--n 6] [--jobs 1]

Targets (one core): <= 2 s/subject at --space mni (2 mm), <= 8 s/subject native.
The one-off base-anatomy build per process is timed separately.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6, help="subjects per space (default 6)")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()

    from nbutils import anatomy
    from nbutils.synth.base import base_anatomy, head_grid, measure_base
    from nbutils.synth.cohort import generate_cohort

    t = time.perf_counter()
    measure_base()
    base_anatomy(anatomy.standard_grid(2.0))
    print(f"base anatomy (mni 2 mm): {time.perf_counter() - t:.2f} s (once per process)")
    t = time.perf_counter()
    base_anatomy(head_grid(1.0))
    base_anatomy(head_grid(2.0))
    print(f"base anatomy (head 1 mm): {time.perf_counter() - t:.2f} s (once per process)")
    n_t = max(args.n // 2, 0)
    for space in ("mni", "native"):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            generate_cohort(tmp, n_healthy=args.n - n_t, n_mci=0, n_ad=0, n_tumour=n_t, space=space,
                            seed=0, jobs=args.jobs, resolution=2.0, progress=False)
            dt = time.perf_counter() - t
        print(f"{space:6s}: {dt / args.n:.2f} s/subject (wall, {args.n} subjects incl. writing, jobs={args.jobs}); "
              f"peak memory {_peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
