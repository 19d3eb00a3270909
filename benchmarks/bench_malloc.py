"""Does keeping freed memory in the heap speed up PyTorch CPU training? The runner's ``MALLOC_SETTINGS``.

Run on demand (about 2 minutes)::

    .venv/bin/python benchmarks/bench_malloc.py

The workload is ``bench_parallel_threads.workload``: training steps of notebook 06's quick PIF network on one
thread. It runs in fresh processes, alternating between the default glibc malloc and the settings that
:mod:`nbutils.runner` gives every notebook kernel. Each process reports its user time, system time and peak
resident memory; the wall time is measured around it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def child(steps: int) -> None:
    from bench_parallel_threads import workload

    workload(steps)
    use = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"user": use.ru_utime, "sys": use.ru_stime, "peak_mb": use.ru_maxrss / 1024}))


def measure(extra: dict[str, str], steps: int) -> dict:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, "OMP_NUM_THREADS": "1", **extra}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return {"wall": time.perf_counter() - start, **json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    from nbutils.runner import MALLOC_SETTINGS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.steps)
        return
    variants = {"glibc default": {}, "runner's MALLOC_SETTINGS": MALLOC_SETTINGS}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # alternate, so drift in machine speed hits both alike
        for name, extra in variants.items():
            runs[name].append(measure(extra, args.steps))
    print(f"{args.steps} PIF training steps on 1 thread, {args.repeats} fresh processes each (medians)")
    for name, rows in runs.items():
        med = {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in rows[0]}
        print(f"{name:26s} wall {med['wall']:6.2f} s  user {med['user']:6.2f} s  sys {med['sys']:5.2f} s  "
              f"peak {med['peak_mb']:6.0f} MB")


if __name__ == "__main__":
    main()
