"""One execution path for batches: inline, process pool, and the checks of the Dask options."""

from __future__ import annotations

import argparse
import os

import pytest

from nbutils.parallel import add_executor_arguments, open_executor, run_tasks


def test_run_tasks_inline_keeps_order_and_records_errors():
    tasks = [(2, 3), (3, 2), (0, -1)]
    with open_executor(jobs=1) as executor:
        assert executor is None
        with pytest.raises(ZeroDivisionError):
            run_tasks(pow, tasks, executor, progress=False)
        out = run_tasks(pow, tasks, executor, progress=False, on_error=lambda t, e: f"{t}: {type(e).__name__}")
    assert out == [8, 9, "(0, -1): ZeroDivisionError"]


@pytest.mark.timeout(300)
def test_run_tasks_on_a_pool_keeps_order_and_survives_a_dead_worker():
    with open_executor(jobs=2) as pool:
        assert run_tasks(pow, [(2, 5), (3, 3), (5, 2), (7, 1)], pool, progress=False) == [32, 27, 25, 7]
    with open_executor(jobs=2) as pool:  # the task kills its worker process: recorded, not raised
        out = run_tasks(os._exit, [(3,), (4,)], pool, progress=False, on_error=lambda t, e: type(e).__name__)
    assert out == ["BrokenProcessPool", "BrokenProcessPool"]


def test_open_executor_refuses_contradictions():
    for kwargs, phrase in [({"jobs": 0}, "must be >= 1"), ({"scheduler": "tcp://x:1", "cluster": "local"}, "not both"),
                           ({"cluster": "local", "jobs": 2}, "jobs is for the local process pool"),
                           ({"cluster": "slurm"}, "cluster must be 'local'")]:  # fmt: skip
        with pytest.raises(ValueError, match=phrase), open_executor(**kwargs):
            pass


def test_executor_arguments():
    p = argparse.ArgumentParser()
    add_executor_arguments(p)
    args = p.parse_args(["--cluster", "local", "--workers", "3"])
    assert (args.jobs, args.scheduler, args.cluster, args.workers) == (1, None, "local", 3)
    with pytest.raises(SystemExit):
        p.parse_args(["--cluster", "local", "--scheduler", "tcp://x:1"])
