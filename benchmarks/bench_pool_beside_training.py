"""Beside another notebook, should a notebook's own worker pool have one process or two? (``nbutils.runner.POOL_PARAMETER``)

Run on demand (about 4 minutes)::

    .venv/bin/python benchmarks/bench_pool_beside_training.py

It reproduces what a ``nbutils run --jobs 2`` demo does on 2 cores when notebook 06 generates its tumour
subjects while notebook 02 trains: one process trains (``bench_parallel_threads.workload``, notebook 06's PIF
network, one thread) while another generates tumour subjects of the synthetic cohort with 1 or 2 worker
processes, alternating. It prints how long each took. The generated subjects are the same either way (each is
seeded by itself; ``tests/test_synth.py::test_worker_processes_change_speed_not_subjects``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def generate(out: str, jobs: int, n_tumour: int) -> None:
    from nbutils.synth.cohort import generate_cohort

    generate_cohort(out, n_healthy=0, n_mci=0, n_ad=0, n_tumour=n_tumour, space="mni", seed=5, jobs=jobs,
                    progress=False)


def measure(jobs: int, n_tumour: int, steps: int) -> tuple[float, float]:
    """Seconds until the generation and until the training finished, both started together."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    train = [sys.executable, str(HERE / "bench_parallel_threads.py"), "--worker", "--steps", str(steps)]
    with tempfile.TemporaryDirectory() as out:
        gen = [sys.executable, __file__, "--generate", out, "--jobs", str(jobs), "--n-tumour", str(n_tumour)]
        start = time.perf_counter()
        trainer = subprocess.Popen(train, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(gen, env=env, check=True)
        generation = time.perf_counter() - start
        if trainer.wait() != 0:
            raise RuntimeError("the training process failed")
        return generation, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-tumour", type=int, default=12, help="tumour subjects generated per run")
    p.add_argument("--steps", type=int, default=400, help="training steps of the process beside it")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--generate", help=argparse.SUPPRESS)
    p.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.generate:
        generate(args.generate, args.jobs, args.n_tumour)
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs: {args.n_tumour} tumour subjects generated "
          f"beside {args.steps} one-thread PIF training steps")
    for _ in range(args.repeats):
        for jobs in (2, 1):  # alternate, so drift in machine speed hits both alike
            generation, training = measure(jobs, args.n_tumour, args.steps)
            print(f"generation with {jobs} worker process(es): generation {generation:5.1f} s, "
                  f"training beside it {training:5.1f} s", flush=True)


if __name__ == "__main__":
    main()
