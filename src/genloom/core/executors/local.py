"""The local executor: inline for one worker, a process pool otherwise."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def _init_worker() -> None:
    # One BLAS/OpenMP thread per worker process: parallelism comes from processes (see notes:
    # two threads per process on two cores swing up to 10x slower). Set by environment before any
    # of them loads, not by importing torch here: torch reads OMP_NUM_THREADS when it loads
    # (get_num_threads() is 1 in a worker), and importing it cost each worker of a data stage that
    # never uses it 2.1 s of CPU and 277 MB (measured at load 14).
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


class LocalExecutor:
    """Run shards in this process (workers=1) or a spawn-based process pool."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

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
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=ctx, initializer=_init_worker
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
