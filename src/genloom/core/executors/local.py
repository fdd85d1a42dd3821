"""The local executor: inline for one worker, a process pool otherwise."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

#: one BLAS/OpenMP thread per worker process: parallelism comes from processes
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: imported once by the fork server, so that every worker forked from it starts with them
FORKSERVER_PRELOAD = ["genloom.core.executors._forkserver"]


def _init_worker(env: Mapping[str, str] | None = None) -> None:
    # One BLAS/OpenMP thread per worker process: parallelism comes from processes (see notes:
    # two threads per process on two cores swing up to 10x slower). Set by environment before any
    # of them loads, not by importing torch here: torch reads OMP_NUM_THREADS when it loads
    # (get_num_threads() is 1 in a worker), and importing it cost each worker of a data stage that
    # never uses it 2.1 s of CPU and 277 MB (measured at load 14).
    # A worker forked from the fork server has the environment the server started with: ``env``
    # is the driver's when the pool started, as a spawned worker would have it.
    if env is not None:
        for var in set(os.environ) - set(env):
            del os.environ[var]
        os.environ.update(env)
    for var in THREAD_VARS:
        os.environ.setdefault(var, "1")


def pool_context() -> multiprocessing.context.BaseContext:
    """The pool's start method: ``forkserver`` where the platform has it (workers are forked from
    a clean, single-purpose server process that imported the common modules once), else
    ``spawn``. Never ``fork``: the driver may hold threads, torch or open connections."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)  # no effect once this process's server runs
    return ctx


def start_fork_server() -> None:
    """Start this process's fork server now, without waiting for it (no-op where the pool
    spawns): it imports the preloaded modules while the caller goes on, so the pool's first
    workers fork at once. Starting it before planning a run took 0.3-0.65 s off a 2-worker
    TF-IDF run of 100,000 sentences (three pairs, load 1.3)."""
    ctx = pool_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class LocalExecutor:
    """Run shards in this process (workers=1) or a process pool (forkserver, else spawn)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            start_fork_server()

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        results: list[Any] = [None] * len(items)
        if self.workers <= 1 or len(items) <= 1:
            for i, item in enumerate(items):
                results[i] = fn(item)
                if on_result:
                    on_result(i, results[i])
            return results
        if self._pool is None:
            ctx = pool_context()
            env = dict(os.environ) if ctx.get_start_method() == "forkserver" else None
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=ctx, initializer=_init_worker, initargs=(env,)
            )
        futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if on_result:
                on_result(i, results[i])
        return results

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
