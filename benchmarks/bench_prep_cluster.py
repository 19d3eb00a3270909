"""Throughput of ``nbutils prep`` on a local Dask cluster: scans per minute with 1 and 2 workers.

Generates (or reuses) a small synthetic native-space cohort, then pre-processes it twice into
fresh folders through :func:`nbutils.parallel.open_executor` (``--cluster local --workers N``:
single-threaded worker processes), timing :func:`nbutils.prep.run_prep` alone (cluster start-up
is printed separately). The ratio is the speed-up of the second worker; on a shared 2-core
machine other work competes for the cores (the load average is printed).

    .venv/bin/python benchmarks/bench_prep_cluster.py [n_scans] [cohort_dir]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path


def main() -> None:
    from nbutils.datasets import load_bids
    from nbutils.parallel import open_executor
    from nbutils.prep import run_prep
    from nbutils.synth import ensure_cohort

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("data/synthetic/bench-cluster")
    ensure_cohort(root, n_healthy=n - n // 2, n_mci=0, n_ad=0, n_tumour=n // 2, space="native", seed=0)
    table = load_bids(root)
    rates = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="bench-prep-cluster-") as out:
            t0 = time.perf_counter()
            with open_executor(cluster="local", workers=workers) as executor:
                started = time.perf_counter() - t0
                t1 = time.perf_counter()
                prep = run_prep(table, out, progress=False, executor=executor)
                wall = time.perf_counter() - t1
        done = int((prep["status"] == "done").sum())
        rates[workers] = 60.0 * len(prep) / wall
        print(f"{workers} worker(s): {len(prep)} scans ({done} done) in {wall:.1f} s = {rates[workers]:.2f} "
              f"scans/min; mean {prep['seconds_total'].mean():.1f} s per scan in a worker; cluster start "
              f"{started:.1f} s; load average {[round(v, 2) for v in os.getloadavg()]}")
    print(f"{date.today()}: 2 workers / 1 worker = {rates[2] / rates[1]:.2f}x scans per minute "
          f"({rates[1]:.2f} -> {rates[2]:.2f}), synthetic native cohort of {len(table)} scans, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
