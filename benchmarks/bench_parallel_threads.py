"""How should two notebooks running at once share the 2 cores? Threads per kernel for ``nbutils run --jobs 2``.

Run on demand (about 3 minutes)::

    .venv/bin/python benchmarks/bench_parallel_threads.py

The workload is one training run of notebook 06's quick PIF network: 4 mm grid 40x48x40, 8-16-32-64 feature
maps, batch 8, forward and backward passes on random volumes. Two such workloads are timed in three ways:

- one after the other, each with 2 threads (a serial ``nbutils run``);
- in two processes at once with 1 thread each (what ``--jobs 2`` sets: ``OMP_NUM_THREADS`` = CPUs // jobs);
- in two processes at once with 2 threads each (oversubscribed).

It prints the wall-clock time of each way and its throughput relative to the serial way.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def workload(steps: int) -> None:
    """``steps`` training steps of the quick PIF tumour network (random data)."""
    import torch

    from nbutils.classify.models import PIFNet

    torch.manual_seed(0)
    net = PIFNet((40, 48, 40), 4, [8, 16, 32, 64], pif_channels=8, patch_size=3, hidden=32, dropout=0.3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(8, 1, 40, 48, 40), torch.randint(0, 4, (8,))
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def run(processes: int, threads: int, steps: int) -> float:
    """Wall-clock seconds for ``processes`` workloads started together, each with ``threads`` threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", "--steps", str(steps)]
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env) for _ in range(processes)]
    if any(p.wait() != 0 for p in procs):
        raise RuntimeError("a worker failed")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="training steps per workload")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        workload(args.steps)
        return
    print(f"{os.cpu_count()} CPUs; 2 workloads of {args.steps} PIF training steps (quick tumour network)")
    serial = run(1, 2, args.steps) + run(1, 2, args.steps)
    print(f"one after the other, 2 threads each:  {serial:6.1f} s  (1.00x)", flush=True)
    for threads in (1, 2):
        wall = run(2, threads, args.steps)
        print(f"two at once, {threads} thread(s) each:     {wall:6.1f} s  ({serial / wall:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
