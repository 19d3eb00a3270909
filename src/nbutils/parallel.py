"""Where a batch of independent tasks runs: in this process, a process pool, or a Dask cluster.

One execution path for every batch command: :func:`open_executor` yields a
``concurrent.futures`` executor (``None`` = run inline), :func:`run_tasks`
submits one function per task, collects the results in input order and
advances one progress bar. The same per-task function therefore runs under
``--jobs N`` (:class:`~concurrent.futures.ProcessPoolExecutor`, spawned
processes) and under Dask (``distributed.Client.get_executor()``), on a local
cluster (``--cluster local --workers N``) or an existing scheduler
(``--scheduler ADDRESS``, e.g. started by ``dask-jobqueue`` on SLURM).

On a cluster the workers must import ``nbutils`` (same environment) and see
the input and output paths (shared file system): they read the scans and
write the derivatives themselves; only the result rows travel back.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, as_completed
from contextlib import contextmanager
from typing import Any

__all__ = ["add_executor_arguments", "executor_from_args", "open_executor", "run_tasks"]


@contextmanager
def open_executor(
    jobs: int = 1, scheduler: str | None = None, cluster: str | None = None, workers: int = 2
) -> Iterator[Executor | None]:
    """An executor for :func:`run_tasks`, closed (with its cluster) on exit.

    Parameters
    ----------
    jobs : int
        Without ``scheduler``/``cluster``: 1 runs inline (``None`` is yielded),
        more runs a pool of that many spawned processes.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    cluster : {"local"}, optional
        Start a local Dask cluster of ``workers`` single-threaded worker processes.
    workers : int
        Workers of the local cluster.

    Raises
    ------
    ValueError
        Contradictory or out-of-range settings.
    """
    if jobs < 1 or workers < 1:
        raise ValueError(f"jobs and workers must be >= 1, got jobs={jobs}, workers={workers}")
    if scheduler and cluster:
        raise ValueError("give a Dask scheduler address or cluster='local', not both")
    if (scheduler or cluster) and jobs != 1:
        raise ValueError("jobs is for the local process pool; on a Dask cluster the workers set the parallelism")
    if cluster not in (None, "local"):
        raise ValueError(f"cluster must be 'local', got {cluster!r}")
    if scheduler or cluster:
        with _dask_client(scheduler, workers) as client:
            # pure=False: two identical task arguments are still two tasks
            yield client.get_executor(pure=False)
    elif jobs == 1:
        yield None
    else:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            yield pool


@contextmanager
def _dask_client(scheduler: str | None, workers: int):
    try:
        from distributed import Client, LocalCluster
    except ModuleNotFoundError as err:  # pragma: no cover - the 'cluster' extra is not installed
        raise ModuleNotFoundError(
            "running on a Dask cluster needs dask.distributed: pip install 'nbutils[cluster]'"
        ) from err
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    # One thread per worker process: ITK/torch thread pools, matplotlib and the temporary
    # folder of a scan are per process, and the pipeline's steps are not thread-safe.
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[tuple],
    executor: Executor | None = None,
    progress: bool = True,
    desc: str = "",
    unit: str = "task",
    on_error: Callable[[tuple, BaseException], Any] | None = None,
) -> list[Any]:
    """``[fn(*task) for task in tasks]``, inline or on ``executor``, with one progress bar.

    Parameters
    ----------
    fn : callable
        Module-level function (it is pickled by reference to reach the workers).
    tasks : sequence of tuple
        Positional arguments of each call.
    executor : concurrent.futures.Executor, optional
        From :func:`open_executor`; ``None`` runs the calls in this process.
    progress : bool
        tqdm bar advanced as results arrive.
    desc, unit : str
        Progress-bar label and unit.
    on_error : callable, optional
        ``on_error(task, exception)`` gives the result of a call that raised
        or whose worker died (a crashed process, a killed Dask worker); without
        it the exception propagates.

    Returns
    -------
    list
        The results, in the order of ``tasks``.
    """
    from tqdm.auto import tqdm

    results: list[Any] = [None] * len(tasks)
    with tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress) as bar:
        if executor is None:
            for i, task in enumerate(tasks):
                results[i] = _call(fn, task, on_error)
                bar.update()
            return results
        futures = {executor.submit(fn, *task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as err:
                if on_error is None:
                    raise
                results[i] = on_error(tasks[i], err)
            bar.update()
    return results


def _call(fn: Callable[..., Any], task: tuple, on_error: Callable | None) -> Any:
    try:
        return fn(*task)
    except Exception as err:
        if on_error is None:
            raise
        return on_error(task, err)


def in_worker_process() -> bool:
    """True in a pool or Dask worker process (a child of another Python process)."""
    from multiprocessing import parent_process

    return parent_process() is not None


def limit_threads() -> None:
    """One ITK and one torch thread in this process: parallelism comes from the workers."""
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    try:
        import torch
    except ModuleNotFoundError:  # pragma: no cover - torch is a core dependency
        return
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- CLI
def add_executor_arguments(parser: argparse.ArgumentParser, unit: str = "scans") -> None:
    """``--jobs``, ``--scheduler``, ``--cluster``, ``--workers`` of a batch command."""
    g = parser.add_argument_group("where to run")
    g.add_argument("--jobs", type=int, default=1, help=f"{unit} in parallel in local processes (default 1)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing Dask cluster, e.g. tcp://head:8786 (workers need nbutils "
                            "and the same file system)")  # fmt: skip
    where.add_argument("--cluster", choices=("local",),
                       help="start a local Dask cluster of --workers processes for this run")  # fmt: skip
    g.add_argument("--workers", type=int, default=2, help="workers of --cluster local (default 2)")


def executor_from_args(args: argparse.Namespace):
    """:func:`open_executor` for the arguments of :func:`add_executor_arguments`."""
    return open_executor(jobs=args.jobs, scheduler=args.scheduler, cluster=args.cluster, workers=args.workers)
