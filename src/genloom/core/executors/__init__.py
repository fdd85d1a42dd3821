"""Executors run one function over many shards: ``Executor.map(fn, items)`` is the whole interface.

They know nothing of steps. ``local`` runs inline (workers=1) or in a process pool; ``ray`` runs
the same function as Ray tasks. Results come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``fn`` over ``items``; calls ``on_result(index, result)`` as each one finishes."""

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], on_result: Callable[[int, R], None] | None = None
    ) -> list[R]: ...

    def close(self) -> None: ...


def make_executor(cfg: Any) -> Executor:
    """The executor for an executor config section."""
    if cfg.type == "ray":
        from genloom.core.executors.ray import RayExecutor

        return RayExecutor(address=cfg.address, num_cpus=cfg.num_cpus)
    from genloom.core.executors.local import LocalExecutor

    return LocalExecutor(workers=cfg.workers)
